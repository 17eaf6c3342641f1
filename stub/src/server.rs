//! The HTTP side: axum routes under `/api/v2`, fault responses, and the [`StubHandle`] tests
//! use to start, inspect, reconfigure and stop a stub in-process.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::header::{
    CONTENT_LENGTH, CONTENT_TYPE, ETAG, HOST, IF_NONE_MATCH, LAST_MODIFIED as LAST_MODIFIED_HEADER,
    RETRY_AFTER,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use futures_util::{StreamExt, stream};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::StubConfig;
use crate::counters::Counters;
use crate::dataset::{Dataset, Payload};
use crate::faults::{self, FaultKind, FaultRule, FaultTable, ListFault};
use crate::listing;
use crate::resource::Resource;

/// How long [`StubHandle::shutdown`] waits for open connections before aborting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Pause between the partial body and the abort of DropMidBody, so the part gets flushed.
const DROP_PAUSE: Duration = Duration::from_millis(20);

struct AppState {
    dataset: Arc<Dataset>,
    faults: FaultTable,
    /// Per-id faults of pokemon list entries (rare, and list pages are few: a plain lock will
    /// do).
    list_faults: Mutex<HashMap<i32, ListFault>>,
    counters: Counters,
    latency: Duration,
    fault_rate: f64,
    flaky_share: f64,
    flaky_times: u32,
    seed: u64,
    /// Used in list URLs when a request has no usable Host header.
    fallback_host: String,
}

impl AppState {
    async fn delay(&self) {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
    }
}

/// A running stub. Dropping it stops the server too (gracefully, in the background).
pub struct StubHandle {
    addr: SocketAddr,
    state: Arc<AppState>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<io::Result<()>>,
}

/// Builds the dataset, binds `addr` (port 0 picks a free port) and serves in a tokio task.
pub async fn spawn(config: StubConfig, addr: SocketAddr) -> anyhow::Result<StubHandle> {
    if !(0.0..=1.0).contains(&config.fault_rate) {
        bail!("fault_rate {} is not between 0 and 1", config.fault_rate);
    }
    // Generation takes a moment (and samples mode reads files): keep it off the async workers.
    let for_build = config.clone();
    let dataset = tokio::task::spawn_blocking(move || Dataset::from_config(&for_build))
        .await
        .context("dataset construction panicked")??;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let faults = config
        .faults
        .into_iter()
        .map(|(id, rule)| ((Resource::Pokemon, id), rule))
        .chain(config.resource_faults);
    let state = Arc::new(AppState {
        counters: Counters::new(|resource| dataset.resource_ids(resource).len()),
        dataset: Arc::new(dataset),
        faults: FaultTable::new(faults),
        list_faults: Mutex::default(),
        latency: config.latency,
        fault_rate: config.fault_rate,
        flaky_share: config.flaky_share,
        flaky_times: config.flaky_times,
        seed: config.seed,
        fallback_host: reachable(addr).to_string(),
    });
    let (stop, stopped) = oneshot::channel::<()>();
    let app = router(state.clone());
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                // Either an explicit shutdown or the handle being dropped.
                let _ = stopped.await;
            })
            .await
    });
    tracing::info!(%addr, count = state.dataset.len(), "pokeapi-stub serving");
    Ok(StubHandle {
        addr,
        state,
        stop,
        task,
    })
}

/// Serves until `shutdown` completes, then stops gracefully. For callers that do not need the
/// handle (the binary uses [`spawn`] so it can print the bound address first).
pub async fn run(
    config: StubConfig,
    addr: SocketAddr,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let handle = spawn(config, addr).await?;
    shutdown.await;
    handle.shutdown().await;
    Ok(())
}

/// An address clients can connect to: the unspecified address becomes loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(a) if a.ip().is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), a.port())
        }
        SocketAddr::V6(a) if a.ip().is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), a.port())
        }
        other => other,
    }
}

impl StubHandle {
    /// The bound address (with the real port when bound to port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>/api/v2`, usable as `POKEAPI_URL`.
    pub fn base_url(&self) -> String {
        format!("http://{}/api/v2", reachable(self.addr))
    }

    pub fn dataset(&self) -> &Dataset {
        &self.state.dataset
    }

    /// A shared handle to the dataset that outlives this handle.
    pub fn dataset_arc(&self) -> Arc<Dataset> {
        self.state.dataset.clone()
    }

    /// Detail requests received for pokemon `id` (including faulted ones); 0 for unknown ids.
    pub fn detail_requests(&self, id: i32) -> u32 {
        self.resource_detail_requests(Resource::Pokemon, id)
    }

    /// Detail requests received for `id` of `resource` (including faulted ones); 0 for ids it
    /// does not serve.
    pub fn resource_detail_requests(&self, resource: Resource, id: i32) -> u32 {
        self.state
            .dataset
            .resource_position(resource, id)
            .map_or(0, |pos| self.state.counters.hits(resource, pos))
    }

    /// All pokemon detail requests received, including those for unknown ids.
    pub fn total_detail_requests(&self) -> u64 {
        self.resource_total_detail_requests(Resource::Pokemon)
    }

    /// All detail requests of `resource` received, including those for unknown ids.
    pub fn resource_total_detail_requests(&self, resource: Resource) -> u64 {
        self.state.counters.total_detail(resource)
    }

    /// Pokemon detail requests answered `304 Not Modified` (conditional requests for unchanged
    /// data).
    pub fn not_modified_responses(&self) -> u64 {
        self.state.counters.not_modified_total(Resource::Pokemon)
    }

    /// Pokemon list requests received.
    pub fn list_requests(&self) -> u64 {
        self.resource_list_requests(Resource::Pokemon)
    }

    /// List requests of `resource` received.
    pub fn resource_list_requests(&self, resource: Resource) -> u64 {
        self.state.counters.lists(resource)
    }

    /// Installs a fault rule for pokemon `id`, replacing any previous one; `None` removes it.
    pub fn set_fault(&self, id: i32, rule: Option<FaultRule>) {
        self.set_resource_fault(Resource::Pokemon, id, rule);
    }

    /// Installs a fault rule for `id` of `resource`, replacing any previous one; `None` removes
    /// it.
    pub fn set_resource_fault(&self, resource: Resource, id: i32, rule: Option<FaultRule>) {
        self.state.faults.set(resource, id, rule);
    }

    /// Installs a fault for the list entry of pokemon `id`, replacing any previous one; `None`
    /// removes it.
    pub fn set_list_fault(&self, id: i32, fault: Option<ListFault>) {
        let mut faults = self
            .state
            .list_faults
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match fault {
            Some(fault) => faults.insert(id, fault),
            None => faults.remove(&id),
        };
    }

    /// Stops accepting, lets open responses finish (up to a grace period), then returns.
    pub async fn shutdown(self) {
        let StubHandle { stop, mut task, .. } = self;
        let _ = stop.send(());
        match tokio::time::timeout(SHUTDOWN_GRACE, &mut task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "stub server ended with an error"),
            Ok(Err(e)) => tracing::warn!(error = %e, "stub server task failed"),
            Err(_) => {
                tracing::warn!("stub connections still open after the grace period; aborting");
                task.abort();
            }
        }
    }
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/api/v2/{resource}", get(list))
        .route("/api/v2/{resource}/", get(list))
        .route("/api/v2/{resource}/{id}", get(detail))
        .route("/api/v2/{resource}/{id}/", get(detail))
        .fallback(|| async { not_found() })
        .with_state(state)
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "Not Found").into_response()
}

async fn list(
    State(state): State<Arc<AppState>>,
    Path(resource): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    // An unknown resource is a path the stub does not serve, like any other.
    let Some(resource) = Resource::from_name(&resource) else {
        return not_found();
    };
    state.counters.list(resource);
    state.delay().await;
    let (offset, limit) = match listing::parse_query(query.as_deref()) {
        Ok(page) => page,
        Err(message) => return (StatusCode::BAD_REQUEST, message).into_response(),
    };
    let host = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && !h.contains(['/', ' ', '"', '\\']))
        .unwrap_or(&state.fallback_host);
    let list_faults = match resource {
        Resource::Pokemon => state
            .list_faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
        _ => HashMap::new(),
    };
    let page = listing::render_page(&state.dataset, resource, host, offset, limit, &list_faults);
    match page {
        Ok(body) => json(StatusCode::OK, body.len(), Body::from(body)),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Validators of a detail document: its bytes depend only on the seed, the resource and the id,
/// like a real API's ETag depends on the content. `Last-Modified` is the dataset's fixed date.
fn etag(seed: u64, resource: Resource, id: i32) -> String {
    match resource {
        Resource::Pokemon => format!("\"pokeapi-stub-{seed:x}-{id}\""),
        other => format!("\"pokeapi-stub-{seed:x}-{other}-{id}\""),
    }
}
const LAST_MODIFIED: &str = "Sat, 08 Aug 2026 00:00:00 GMT";

async fn detail(
    State(state): State<Arc<AppState>>,
    Path((resource, raw_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let Some(resource) = Resource::from_name(&resource) else {
        return not_found();
    };
    state.counters.detail(resource);
    let known = raw_id
        .parse::<i32>()
        .ok()
        .and_then(|id| Some((id, state.dataset.resource_position(resource, id)?)));
    let Some((id, pos)) = known else {
        state.delay().await;
        return not_found();
    };
    let number = state.counters.hit(resource, pos);
    state.delay().await;
    let seed = state.seed ^ resource.salt();
    let fault = state
        .faults
        .take(resource, id)
        .or_else(|| faults::rate_fault(seed, id, number, state.fault_rate))
        .or_else(|| faults::flaky_fault(seed, id, number, state.flaky_share, state.flaky_times));
    let Some(kind) = fault else {
        let tag = etag(state.seed, resource, id);
        // A conditional request for what the client already has: 304, no body.
        let unchanged = headers
            .get(IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
        if unchanged {
            state.counters.not_modified(resource);
            return StatusCode::NOT_MODIFIED.into_response();
        }
        let mut response = match resource {
            Resource::Pokemon => match state.dataset.body(id) {
                Some(payload) => payload_response(payload),
                None => return not_found(),
            },
            _ => match state.dataset.document(resource, id) {
                Some(body) => json(StatusCode::OK, body.len(), Body::from(body)),
                None => return not_found(),
            },
        };
        if let Ok(value) = HeaderValue::from_str(&tag) {
            response.headers_mut().insert(ETAG, value);
        }
        response.headers_mut().insert(
            LAST_MODIFIED_HEADER,
            HeaderValue::from_static(LAST_MODIFIED),
        );
        return response;
    };
    tracing::debug!(%resource, id, number, fault = ?kind, "injecting fault");
    fault_response(&state, resource, id, pos, kind)
}

fn json(status: StatusCode, len: usize, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    response
}

/// Streams the payload's pieces without copying them; hyper takes the length from the header.
fn payload_response(payload: Payload) -> Response {
    let len = payload.len();
    let chunks = payload
        .into_chunks()
        .into_iter()
        .map(Ok::<Bytes, io::Error>);
    json(StatusCode::OK, len, Body::from_stream(stream::iter(chunks)))
}

fn fault_response(
    state: &AppState,
    resource: Resource,
    id: i32,
    pos: usize,
    kind: FaultKind,
) -> Response {
    let dataset = &state.dataset;
    match kind {
        FaultKind::NotFound => not_found(),
        FaultKind::TooManyRequests { retry_after_secs } => {
            let mut response = (StatusCode::TOO_MANY_REQUESTS, "Too Many Requests").into_response();
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(retry_after_secs));
            response
        }
        FaultKind::ServerError(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, status.canonical_reason().unwrap_or("Server Error")).into_response()
        }
        FaultKind::MalformedJson => {
            let full = dataset.document(resource, id).unwrap_or_default();
            let cut = full.slice(..full.len() / 2);
            json(StatusCode::OK, cut.len(), Body::from(cut))
        }
        FaultKind::DropMidBody => {
            let full = dataset.document(resource, id).unwrap_or_default();
            let len = full.len();
            let part = full.slice(..len / 2);
            let abort = stream::once(async {
                tokio::time::sleep(DROP_PAUSE).await;
                Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "injected DropMidBody fault",
                ))
            });
            let body = stream::iter([Ok::<Bytes, io::Error>(part)]).chain(abort);
            json(StatusCode::OK, len, Body::from_stream(body))
        }
        FaultKind::SlowBody(delay) => {
            let full = dataset.document(resource, id).unwrap_or_default();
            let len = full.len();
            let body = stream::once(async move {
                tokio::time::sleep(delay).await;
                Ok::<Bytes, io::Error>(full)
            });
            json(StatusCode::OK, len, Body::from_stream(body))
        }
        FaultKind::NulInString => match dataset
            .document(resource, id)
            .and_then(|body| with_nul(&body))
        {
            Some(body) => json(StatusCode::OK, body.len(), Body::from(body)),
            None => not_found(),
        },
        FaultKind::WrongId => {
            let ids = dataset.resource_ids(resource);
            let other = if ids.len() > 1 {
                ids[(pos + 1) % ids.len()]
            } else {
                id.wrapping_add(1)
            };
            match resource {
                Resource::Pokemon => match dataset.body_with_id(id, other) {
                    Some(payload) => payload_response(payload),
                    None => not_found(),
                },
                _ => match dataset.document_with_id(resource, id, other) {
                    Some(body) => json(StatusCode::OK, body.len(), Body::from(body)),
                    None => not_found(),
                },
            }
        }
    }
}

/// `body` with U+0000 appended to its `species.name` (or, lacking one, its `name`; an
/// evolution chain, its root's `chain.species.name`).
fn with_nul(body: &[u8]) -> Option<Vec<u8>> {
    let mut document: serde_json::Value = serde_json::from_slice(body).ok()?;
    let path = ["/species/name", "/name", "/chain/species/name"]
        .into_iter()
        .find(|path| document.pointer(path).is_some_and(|v| v.is_string()))?;
    let name = document.pointer_mut(path)?;
    let text = format!("{}\u{0}", name.as_str()?);
    *name = serde_json::Value::String(text);
    serde_json::to_vec(&document).ok()
}
