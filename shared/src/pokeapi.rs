//! HTTP client for PokeAPI's list and detail endpoints.
//!
//! Every request has a connect timeout and a whole-request timeout, every body a size cap, and
//! every failure a class: [`FetchError::Transient`] may cure itself (timeouts, dropped
//! connections, 5xx, 429), the others never will. Callers branch on that class.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, IF_MODIFIED_SINCE, IF_NONE_MATCH, RETRY_AFTER};
use serde::Deserialize;

use crate::circuit::Circuit;
use crate::rate::Gate;
use crate::shutdown::CancellationToken;
/// Re-exported: the client's answers ([`Fetched::Document`]) and conditional requests carry
/// them, and callers of the client name them here.
pub use crate::validators::Validators;

/// Default body cap: the largest real detail document is 1.3 MB pretty-printed.
pub const DEFAULT_MAX_BODY: usize = 8 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// Worth trying again later; `retry_after` is the server's own request, if it made one.
    #[error("{reason}")]
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// The resource does not exist.
    #[error("not found (HTTP 404)")]
    NotFound,
    /// The answer will not change by asking again: an oversized or unreadable body.
    #[error("{0}")]
    Permanent(String),
    /// Shutdown came while the request waited for the API to come back (circuit open): the job
    /// was not tried and goes back as it came.
    #[error("interrupted while the API is unavailable")]
    Interrupted,
}

impl FetchError {
    fn transient(reason: impl Into<String>) -> Self {
        FetchError::Transient {
            reason: reason.into(),
            retry_after: None,
        }
    }

    pub fn is_transient(&self) -> bool {
        matches!(self, FetchError::Transient { .. })
    }
}

/// One page of `/pokemon?offset=&limit=`; only what the producer needs is decoded.
#[derive(Debug, Clone, Deserialize)]
pub struct ListPage {
    pub count: u64,
    pub results: Vec<ListEntry>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ListEntry {
    /// Absent from the entries of resources without names (evolution-chain).
    #[serde(default)]
    pub name: Option<String>,
    pub url: String,
}

impl ListEntry {
    /// The resource id, from the last path segment of its `url` (ids are not positions).
    pub fn id(&self) -> Option<i32> {
        id_from_url(&self.url)
    }
}

pub fn id_from_url(url: &str) -> Option<i32> {
    let path = url.split(['?', '#']).next()?;
    let segment = path.trim_end_matches('/').rsplit('/').next()?;
    segment.parse::<i32>().ok().filter(|id| *id > 0)
}

#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Whole-request timeout, body included.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub max_body: usize,
    /// Idle keep-alive connections kept per host: enough for the process's concurrency.
    pub pool_per_host: usize,
    /// Times a request that failed the way a flaky backend fails (a 5xx without `Retry-After`,
    /// a timeout, a dropped connection) is sent again at once, after a pause of tens of
    /// milliseconds (see [`crate::retry::flaky_answer`]), before its failure is returned. 0:
    /// never.
    pub quick_retries: u32,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            max_body: DEFAULT_MAX_BODY,
            pool_per_host: 64,
            quick_retries: 0,
        }
    }
}

#[derive(Clone)]
pub struct PokeApi {
    http: reqwest::Client,
    base: String,
    max_body: usize,
    gate: Arc<Gate>,
    /// With a circuit, requests wait out an API outage instead of failing (see
    /// [`PokeApi::with_circuit`]).
    circuit: Option<(Arc<Circuit>, CancellationToken)>,
    /// The last document the API served, the URL a probe asks for.
    last_good: Arc<std::sync::Mutex<Option<String>>>,
    quick_retries: u32,
}

/// What an answer (or its absence) says about the API, for the gate and the circuit.
enum Signal {
    /// The API is up and answered (whatever it said about this resource).
    Answered,
    /// The API asked every client to wait this long (429/503 with `Retry-After`).
    AskedToWait(Duration),
    /// Up but overloaded, without saying for how long (429 without `Retry-After`).
    Overloaded,
    /// No answer, a timeout or a 5xx: what an outage looks like.
    Failing,
}

impl PokeApi {
    /// `base` is the API root without a trailing slash, e.g. `https://pokeapi.co/api/v2`. Every
    /// request passes `gate` first (shared rate, concurrency cap, overload pause).
    pub fn new(
        base: &str,
        options: &ClientOptions,
        gate: Arc<Gate>,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(options.connect_timeout)
            .pool_max_idle_per_host(options.pool_per_host)
            .user_agent(concat!("pokeq/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            max_body: options.max_body,
            gate,
            circuit: None,
            last_good: Arc::default(),
            quick_retries: options.quick_retries,
        })
    }

    /// Requests through this client wait out an outage of the API: while `circuit` is open
    /// they are held (a probe a second goes through) and sent again once it closes, so an
    /// outage costs no job an attempt. Until `shutdown`, when a held request gives up with
    /// [`FetchError::Interrupted`].
    pub fn with_circuit(mut self, circuit: Arc<Circuit>, shutdown: CancellationToken) -> Self {
        self.circuit = Some((circuit, shutdown));
        self
    }

    pub async fn list(&self, offset: u64, limit: u64) -> Result<ListPage, FetchError> {
        self.list_of(crate::resources::POKEMON, offset, limit).await
    }

    /// One page of the list of `resource` (one of [`crate::resources::names`]).
    pub async fn list_of(
        &self,
        resource: &str,
        offset: u64,
        limit: u64,
    ) -> Result<ListPage, FetchError> {
        let url = format!("{}/{resource}/?offset={offset}&limit={limit}", self.base);
        let body = match self.get(&url, None).await? {
            Fetched::Document { body, .. } => body,
            Fetched::NotModified => {
                return Err(FetchError::transient("unexpected 304 for a list page"));
            }
        };
        serde_json::from_slice(&body)
            .map_err(|e| FetchError::Permanent(format!("list page is not what PokeAPI sends: {e}")))
    }

    /// The detail document of one pokemon; with `known` validators of a copy already stored, a
    /// conditional request that may answer [`Fetched::NotModified`]. The URL is built here from
    /// a validated id, never taken from a message or a payload.
    pub async fn pokemon(
        &self,
        id: i32,
        known: Option<&Validators>,
    ) -> Result<Fetched, FetchError> {
        if id <= 0 {
            return Err(FetchError::Permanent(format!("id {id} is not positive")));
        }
        self.get(&format!("{}/pokemon/{id}/", self.base), known)
            .await
    }

    /// The detail document of one item of a Pokédex resource other than pokemon, as
    /// [`PokeApi::pokemon`]: the same gate, circuit, quick retries, validators and body cap.
    pub async fn document(
        &self,
        resource: &dyn crate::resources::Resource,
        id: i32,
        known: Option<&Validators>,
    ) -> Result<Fetched, FetchError> {
        if id <= 0 {
            return Err(FetchError::Permanent(format!("id {id} is not positive")));
        }
        self.get(
            &format!("{}/{}", self.base, resource.detail_path(id)),
            known,
        )
        .await
    }

    /// The resource a request URL of this client asks for (its first path segment after the
    /// base), for the `resource` label of the request metrics.
    fn resource_of(&self, url: &str) -> String {
        let path = url.strip_prefix(&self.base).unwrap_or(url);
        let segment = path.trim_start_matches('/').split(['/', '?']).next();
        match segment {
            Some(name) if crate::resources::is_known(name) => name.to_owned(),
            _ => "other".to_owned(),
        }
    }

    /// One document, asked again at once (within [`ClientOptions::quick_retries`]) when it
    /// failed the way a flaky backend fails. Such a failure is usually gone a few tens of
    /// milliseconds later; handing it to the caller instead costs a job a trip through a retry
    /// queue and seconds of delay. While the circuit is open the request is held, not retried.
    async fn get(&self, url: &str, known: Option<&Validators>) -> Result<Fetched, FetchError> {
        let mut pauses = crate::retry::flaky_answer(self.quick_retries).waits();
        loop {
            let (signal, result) = self.through_circuit(url, known).await;
            match result {
                Err(error) if matches!(signal, Signal::Failing) && error.is_transient() => {
                    let Some(pause) = pauses.next() else {
                        return Err(error);
                    };
                    tracing::debug!(url, %error, ?pause, "flaky answer; asking again");
                    tokio::time::sleep(pause).await;
                }
                result => return result,
            }
        }
    }

    /// One request, held while the circuit (if any) is open, with what its answer says about
    /// the API.
    async fn through_circuit(
        &self,
        url: &str,
        known: Option<&Validators>,
    ) -> (Signal, Result<Fetched, FetchError>) {
        let Some((circuit, shutdown)) = &self.circuit else {
            let (signal, result) = self.attempt(url, known).await;
            return (signal, result.map(|(_, f)| f).map_err(|(_, e)| e));
        };
        loop {
            let ticket = tokio::select! {
                biased;
                ticket = circuit.admit() => ticket,
                () = shutdown.cancelled(), if circuit.is_open() => {
                    return (Signal::Answered, Err(FetchError::Interrupted));
                }
            };
            if ticket.is_probe()
                && let Some(good) = self.known_good(url)
            {
                // Whether the API is up, asked with what it answered before: the resources
                // held may be ones it fails on their own (a flaky backend for some ids), and
                // probing with them would keep the circuit open while the API is fine.
                let (signal, result) = self.attempt(&good, None).await;
                match (signal, result) {
                    (Signal::Failing, Err((_, error))) => {
                        circuit.failed(ticket, &error.to_string());
                    }
                    _ => circuit.succeeded(ticket),
                }
                continue;
            }
            let (signal, result) = self.attempt(url, known).await;
            match (&signal, &result) {
                (Signal::Failing, Err((_, error))) => {
                    if circuit.failed(ticket, &error.to_string()) {
                        // The API is down, not this resource: wait and ask again.
                        continue;
                    }
                }
                _ => circuit.succeeded(ticket),
            }
            if let Ok((_, Fetched::Document { .. })) = &result
                && let Ok(mut good) = self.last_good.lock()
            {
                url.clone_into(good.get_or_insert_with(String::new));
            }
            return (signal, result.map(|(_, f)| f).map_err(|(_, e)| e));
        }
    }

    /// A URL the API answered lately, other than `url`: what a probe asks for.
    fn known_good(&self, url: &str) -> Option<String> {
        let good = self.last_good.lock().ok()?.clone()?;
        (good != url).then_some(good)
    }

    /// One request through the gate, counted and timed, with what its answer says about the API.
    async fn attempt(
        &self,
        url: &str,
        known: Option<&Validators>,
    ) -> (
        Signal,
        Result<(StatusCode, Fetched), (Option<StatusCode>, FetchError)>,
    ) {
        let permit = self.gate.enter().await;
        let started = std::time::Instant::now();
        let sending = InFlight::new();
        let result = self.exchange(url, known).await;
        drop(sending);
        let signal = signal(&result);
        match signal {
            Signal::Answered => self.gate.answered(),
            Signal::AskedToWait(wait) => self.gate.asked_to_wait(wait),
            Signal::Overloaded | Signal::Failing => self.gate.overloaded(&permit),
        }
        drop(permit);
        let status = match &result {
            Ok((status, _)) => status.as_str().to_owned(),
            Err((Some(status), FetchError::Transient { .. })) if status.is_success() => {
                // The headers came, the body did not: not a 200 for whoever counts.
                "body_error".to_owned()
            }
            Err((Some(status), _)) => status.as_str().to_owned(),
            Err((None, _)) => "error".to_owned(),
        };
        metrics::counter!(crate::metrics::API_REQUESTS, "status" => status, "resource" => self.resource_of(url))
            .increment(1);
        metrics::histogram!(crate::metrics::API_SECONDS).record(started.elapsed().as_secs_f64());
        (signal, result)
    }

    /// One request and its answer, with the status when a response came.
    async fn exchange(
        &self,
        url: &str,
        known: Option<&Validators>,
    ) -> Result<(StatusCode, Fetched), (Option<StatusCode>, FetchError)> {
        let mut request = self.http.get(url);
        if let Some(known) = known {
            if let Some(etag) = &known.etag {
                request = request.header(IF_NONE_MATCH, etag);
            }
            if let Some(modified) = &known.last_modified {
                request = request.header(IF_MODIFIED_SINCE, modified);
            }
        }
        let mut response = request.send().await.map_err(|e| (None, request_error(e)))?;
        let status = response.status();
        if status == StatusCode::NOT_MODIFIED && known.is_some() {
            return Ok((status, Fetched::NotModified));
        }
        let validators = Validators::of(response.headers());
        self.read(&mut response, status)
            .await
            .map(|body| (status, Fetched::Document { body, validators }))
            .map_err(|error| (Some(status), error))
    }

    async fn read(
        &self,
        response: &mut reqwest::Response,
        status: StatusCode,
    ) -> Result<Bytes, FetchError> {
        if status == StatusCode::NOT_FOUND || status == StatusCode::GONE {
            return Err(FetchError::NotFound);
        }
        if !status.is_success() {
            return Err(FetchError::Transient {
                reason: format!("HTTP {status}"),
                retry_after: retry_after(response.headers()),
            });
        }
        if let Some(length) = response.content_length()
            && length > self.max_body as u64
        {
            return Err(too_large(self.max_body));
        }
        let mut body = BytesMut::with_capacity(
            response
                .content_length()
                .map_or(64 * 1024, |n| n as usize)
                .min(self.max_body),
        );
        while let Some(chunk) = response.chunk().await.map_err(request_error)? {
            if body.len() + chunk.len() > self.max_body {
                return Err(too_large(self.max_body));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }
}

/// What a GET brought back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    Document {
        body: Bytes,
        validators: Validators,
    },
    /// The copy already stored is current (HTTP 304).
    NotModified,
}

fn signal(result: &Result<(StatusCode, Fetched), (Option<StatusCode>, FetchError)>) -> Signal {
    match result {
        Ok(_) => Signal::Answered,
        Err((None, _)) => Signal::Failing,
        Err((Some(status), error)) => {
            let retry_after = match error {
                FetchError::Transient { retry_after, .. } => *retry_after,
                _ => None,
            };
            if status.is_server_error() || status.is_success() {
                // A 5xx, or a 200 whose body never came whole.
                match retry_after {
                    Some(wait) if *status == StatusCode::SERVICE_UNAVAILABLE => {
                        Signal::AskedToWait(wait)
                    }
                    _ if status.is_success() && !error.is_transient() => Signal::Answered,
                    _ => Signal::Failing,
                }
            } else if *status == StatusCode::TOO_MANY_REQUESTS {
                retry_after.map_or(Signal::Overloaded, Signal::AskedToWait)
            } else {
                Signal::Answered
            }
        }
    }
}

/// One request counted in `pokeq_api_requests_in_flight` until dropped, so a request whose
/// future is cancelled (shutdown, a lost race) is not counted forever.
struct InFlight(metrics::Gauge);

impl InFlight {
    fn new() -> Self {
        let gauge = metrics::gauge!(crate::metrics::API_IN_FLIGHT);
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

fn too_large(max: usize) -> FetchError {
    FetchError::Permanent(format!("response body is over the {max}-byte limit"))
}

/// Every error reqwest raises after the request left is about the transport (timeout, refused
/// or dropped connection, body cut short): all may cure themselves. The reason is stored
/// (`last_error`, dead-letter headers) and logged, so it leaves out the request's URL, whose
/// base (`POKEAPI_URL`) may carry credentials or a token ([`crate::secret::http_error`]).
fn request_error(error: reqwest::Error) -> FetchError {
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else if error.is_body() || error.is_decode() {
        "body cut short"
    } else {
        "request failed"
    };
    FetchError::transient(format!("{what}: {}", crate::secret::http_error(error)))
}

/// `Retry-After` in seconds (the HTTP-date form is rare for APIs and is ignored).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds.min(24 * 3600)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_come_from_urls() {
        assert_eq!(
            id_from_url("https://pokeapi.co/api/v2/pokemon/25/"),
            Some(25)
        );
        assert_eq!(
            id_from_url("http://127.0.0.1:1/api/v2/pokemon/10001"),
            Some(10001)
        );
        assert_eq!(id_from_url("/api/v2/pokemon/7/?x=1"), Some(7));
        assert_eq!(
            id_from_url("https://pokeapi.co/api/v2/pokemon/pikachu/"),
            None
        );
        assert_eq!(id_from_url("https://pokeapi.co/api/v2/pokemon/-1/"), None);
        assert_eq!(id_from_url(""), None);
    }

    #[tokio::test]
    async fn a_failed_request_is_told_without_the_credentials_or_query_of_the_api_url() {
        // Bound but not listening: connections are refused, and no one else takes the port.
        let closed = tokio::net::TcpSocket::new_v4().unwrap();
        closed.bind(([127, 0, 0, 1], 0).into()).unwrap();
        let port = closed.local_addr().unwrap().port();
        let base = format!("http://apiuser:ApiS3cret@127.0.0.1:{port}/api/v2?token=QueryS3cret");
        let gate = Gate::new(
            &crate::rate::Politeness {
                rate: None,
                concurrency: 1,
            },
            None,
        );
        let api = PokeApi::new(&base, &ClientOptions::default(), gate).unwrap();
        for error in [
            api.list(0, 20).await.unwrap_err(),
            api.pokemon(25, None).await.unwrap_err(),
        ] {
            let text = error.to_string();
            assert!(error.is_transient(), "{text}");
            assert!(text.starts_with("connection failed: "), "{text}");
            assert!(!text.contains("S3cret"), "{text}");
            assert!(!text.contains("apiuser"), "{text}");
        }
    }

    #[test]
    fn retry_after_reads_seconds() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&headers), None);
    }
}
