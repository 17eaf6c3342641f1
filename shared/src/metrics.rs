//! Prometheus metrics and health endpoints, served on `METRICS_ADDR`.
//!
//! `/healthz` answers while the process is alive; `/readyz` only while it is connected to both
//! the broker and the database (Kubernetes stops routing to, and KEDA keeps counting, a
//! consumer that is waiting for either), saying `degraded` while the API circuit is open; `/metrics` is the Prometheus text format rendered by
//! `metrics-exporter-prometheus`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

// The recording macros, so binaries record through this module alone.
pub use ::metrics::{counter, gauge, histogram};

/// Jobs by how they ended: `done`, `skipped` (already done), `retry`, `deferred`, `dead`; and by
/// `resource` (`invalid` for a body that is no job).
pub const JOBS: &str = "pokeq_jobs_total";
/// Jobs a consumer published for the links of followed documents, by resource linked.
pub const LINKS_ENQUEUED: &str = "pokeq_links_enqueued_total";
/// Jobs sent to a wait queue, by delay label.
pub const RETRIES: &str = "pokeq_retries_total";
/// Dead letters by kind and resource: those a consumer publishes, and those the broker dead-lettered itself
/// (`delivery_limit`, ...) as the consumer reading the ledger records them.
pub const DEAD_LETTERS: &str = "pokeq_dead_letters_total";
/// Publishes of a retry or dead letter that failed (nacked, returned, unconfirmed), by target
/// (`retry`, `dead`); each is retried with backoff, the delivery held meanwhile.
pub const SETTLE_FAILURES: &str = "pokeq_settle_failures_total";
/// API requests by status (`200`, `404`, `429`, ... or `error` when no response came) and
/// resource (`pokemon`, `type`, ...).
pub const API_REQUESTS: &str = "pokeq_api_requests_total";
/// Latency of API requests, body included.
pub const API_SECONDS: &str = "pokeq_api_request_duration_seconds";
/// 1 while this process's API circuit is open (the API fails for everything; jobs wait).
pub const API_CIRCUIT_OPEN: &str = "pokeq_api_circuit_open";
/// API requests this process allows in flight now (lowered while the API is overloaded).
pub const API_CONCURRENCY_LIMIT: &str = "pokeq_api_concurrency_limit";
/// API requests sent and not yet answered (body included) now.
pub const API_IN_FLIGHT: &str = "pokeq_api_requests_in_flight";
/// Deliveries being worked on now.
pub const IN_FLIGHT: &str = "pokeq_jobs_in_flight";
/// Unix time (seconds) this consumer last settled a job: done, or handed to a retry or dead
/// queue; 0 before the first. `pokeq workers` shows it to tell a stuck consumer from an idle
/// one.
pub const LAST_JOB_FINISHED: &str = "pokeq_last_job_finished_timestamp_seconds";
/// Latency of the statement that stores a row and marks it done.
pub const DB_SECONDS: &str = "pokeq_db_transaction_duration_seconds";
/// Rows per group commit.
pub const COMMIT_ROWS: &str = "pokeq_db_commit_rows";
/// Reconnections, by target (`broker`, `database`).
pub const RECONNECTS: &str = "pokeq_reconnects_total";
/// Jobs the producer published and the broker confirmed.
pub const PUBLISHED: &str = "pokeq_producer_published_total";
/// List pages the producer finished.
pub const PAGES: &str = "pokeq_producer_pages_total";
/// List entries the producer skipped because the database refused them (a name it cannot
/// store).
pub const REFUSED_ENTRIES: &str = "pokeq_producer_refused_entries_total";

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

const ROW_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// What `/readyz` reports: set by the code that owns each connection.
#[derive(Debug, Default)]
pub struct Health {
    broker: AtomicBool,
    database: AtomicBool,
    /// The API circuit is open: the process is up and connected but waiting for the API.
    api_down: AtomicBool,
}

impl Health {
    pub fn set_broker(&self, up: bool) {
        self.broker.store(up, Ordering::Relaxed);
    }

    pub fn set_database(&self, up: bool) {
        self.database.store(up, Ordering::Relaxed);
    }

    pub fn set_api_down(&self, down: bool) {
        self.api_down.store(down, Ordering::Relaxed);
    }

    /// Ready, but waiting for the API (see `readyz`).
    pub fn degraded(&self) -> bool {
        self.api_down.load(Ordering::Relaxed)
    }

    pub fn ready(&self) -> bool {
        self.broker.load(Ordering::Relaxed) && self.database.load(Ordering::Relaxed)
    }
}

/// The process-wide recorder, installed on first use. Every `metrics::counter!` and friends in
/// the process lands here; before installation they are no-ops.
pub fn recorder() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full(COMMIT_ROWS.into()), ROW_BUCKETS))
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder was installed first, in which case ours stays empty
        // but the endpoint still answers.
        let _ = metrics::set_global_recorder(recorder);
        describe();
        handle
    })
}

/// `# HELP` lines for every metric pokeq records.
fn describe() {
    use ::metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        JOBS,
        "Jobs by how they ended: done, skipped (already done), retry, deferred, dead."
    );
    describe_counter!(
        LINKS_ENQUEUED,
        "Jobs published for the links of followed documents, by resource linked."
    );
    describe_counter!(RETRIES, "Jobs sent to a retry wait queue, by delay.");
    describe_counter!(
        DEAD_LETTERS,
        "Dead letters by kind, including those the broker dead-lettered itself."
    );
    describe_counter!(
        SETTLE_FAILURES,
        "Failed publishes of a retry or dead letter, retried with backoff, by target."
    );
    describe_counter!(
        API_REQUESTS,
        "API requests by HTTP status; error when no response came, body_error when the body did not."
    );
    describe_histogram!(
        API_SECONDS,
        ::metrics::Unit::Seconds,
        "Latency of API requests, body included."
    );
    describe_gauge!(
        API_CIRCUIT_OPEN,
        "1 while the API fails for everything and jobs wait for it (circuit open)."
    );
    describe_gauge!(
        API_CONCURRENCY_LIMIT,
        "API requests this process allows in flight now (lowered while the API is overloaded)."
    );
    describe_gauge!(
        API_IN_FLIGHT,
        "API requests sent and not yet answered (body included) now."
    );
    describe_gauge!(IN_FLIGHT, "Deliveries being worked on now.");
    describe_gauge!(
        LAST_JOB_FINISHED,
        "Unix time this consumer last settled a job (0 before the first)."
    );
    describe_histogram!(
        DB_SECONDS,
        ::metrics::Unit::Seconds,
        "Latency of the statement that stores rows and marks them done."
    );
    describe_histogram!(COMMIT_ROWS, "Rows per group commit.");
    describe_counter!(RECONNECTS, "Reconnections, by target (broker, database).");
    describe_counter!(
        PUBLISHED,
        "Jobs the producer published and the broker confirmed."
    );
    describe_counter!(PAGES, "List pages the producer finished.");
    describe_counter!(
        REFUSED_ENTRIES,
        "List entries the producer skipped because the database refused them."
    );
}

/// Which binary's series to show from the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binary {
    Consumer,
    Producer,
}

/// Records every series `binary` has at zero, so dashboards and alerts see them before their
/// first event (a `rate()` over a series that appears late misses its first increase).
pub fn preregister(binary: Binary) {
    match binary {
        Binary::Consumer => {
            for resource in crate::resources::names() {
                for outcome in ["done", "skipped", "retry", "deferred", "dead"] {
                    counter!(JOBS, "outcome" => outcome, "resource" => resource).increment(0);
                }
                for kind in crate::job::ErrorKind::ALL {
                    counter!(DEAD_LETTERS, "kind" => kind.as_str(), "resource" => resource)
                        .increment(0);
                }
            }
            for target in ["retry", "dead", "jobs"] {
                counter!(SETTLE_FAILURES, "target" => target).increment(0);
            }
            for target in ["broker", "database"] {
                counter!(RECONNECTS, "target" => target).increment(0);
            }
            gauge!(IN_FLIGHT).set(0.0);
            // Increments by zero: present from the start without resetting what another
            // consumer of the same (test) process counted.
            gauge!(API_IN_FLIGHT).increment(0.0);
            gauge!(LAST_JOB_FINISHED).increment(0.0);
        }
        Binary::Producer => {
            counter!(PUBLISHED).increment(0);
            counter!(PAGES).increment(0);
            counter!(REFUSED_ENTRIES).increment(0);
            counter!(RECONNECTS, "target" => "broker").increment(0);
        }
    }
}

/// A `METRICS_ADDR` value: where to serve the endpoints, if anywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint(pub Option<SocketAddr>);

/// Parses a `METRICS_ADDR` value: `host:port` (a name such as `localhost:9999` is resolved
/// once, now), or `off` for no endpoint.
pub fn parse_addr(text: &str) -> Result<Endpoint, String> {
    if text.eq_ignore_ascii_case("off") || text.is_empty() {
        return Ok(Endpoint(None));
    }
    if let Ok(addr) = text.parse() {
        return Ok(Endpoint(Some(addr)));
    }
    use std::net::ToSocketAddrs;
    match text.to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .map(|addr| Endpoint(Some(addr)))
            .ok_or_else(|| format!("{text:?} resolves to no address")),
        Err(e) => Err(format!("{text:?} is not host:port or `off`: {e}")),
    }
}

/// Where a binary serves its endpoints: an address the user chose, which must be bound or the
/// start fails (exit 2), or the default, which yields to another process on the same host by
/// taking a free port instead (so `consumer & consumer &` works).
#[derive(Debug, Clone)]
pub struct Listen {
    pub addr: Option<SocketAddr>,
    /// The address is the default: when it is taken, serve on a free port of the same IP.
    pub fallback: bool,
    /// A socket bound before the binary started, served instead of binding `addr`.
    handed: Option<Arc<std::net::TcpListener>>,
}

impl Listen {
    /// `chosen` if the user set `METRICS_ADDR`/`--metrics-addr`, else `default`. A chosen
    /// address that cannot be bound now is a configuration error.
    pub fn resolve(
        chosen: Option<Endpoint>,
        default: Option<SocketAddr>,
    ) -> Result<Self, crate::config::ConfigError> {
        let Some(Endpoint(addr)) = chosen else {
            return Ok(Self {
                addr: default,
                fallback: true,
                handed: None,
            });
        };
        if let Some(addr) = addr
            && addr.port() != 0
            && let Err(error) = std::net::TcpListener::bind(addr)
        {
            return Err(crate::config::ConfigError::new(
                "METRICS_ADDR",
                &addr.to_string(),
                format!("cannot listen there: {error}"),
            ));
        }
        Ok(Self {
            addr,
            fallback: false,
            handed: None,
        })
    }

    /// Serves on `listener`, bound by the caller: its address is known before the binary runs
    /// and no other process can take the port in between, as it could between a probe that
    /// closes a port and the binary binding it (tests hand one over this way).
    pub fn on(listener: std::net::TcpListener) -> std::io::Result<Self> {
        Ok(Self {
            addr: Some(listener.local_addr()?),
            fallback: false,
            handed: Some(Arc::new(listener)),
        })
    }
}

/// A binary's health, its endpoint served as `listen` says unless that is off; with the bound
/// address, if any.
pub async fn serve_health(
    listen: &Listen,
    shutdown: &CancellationToken,
) -> anyhow::Result<(Arc<Health>, Option<SocketAddr>)> {
    let health = Arc::new(Health::default());
    if let Some(handed) = &listen.handed {
        let listener = handed
            .try_clone()
            .and_then(|listener| {
                listener.set_nonblocking(true)?;
                tokio::net::TcpListener::from_std(listener)
            })
            .context("cannot serve metrics on the listener handed over")?;
        let bound = serve_on(listener, Arc::clone(&health), shutdown.child_token())?;
        return Ok((health, Some(bound)));
    }
    let Some(addr) = listen.addr else {
        return Ok((health, None));
    };
    let bound = match serve(addr, Arc::clone(&health), shutdown.child_token()).await {
        Err(error) if listen.fallback && error.kind() == std::io::ErrorKind::AddrInUse => {
            let free = SocketAddr::new(addr.ip(), 0);
            let bound = serve(free, Arc::clone(&health), shutdown.child_token())
                .await
                .with_context(|| format!("cannot serve metrics on {free}"))?;
            tracing::warn!(
                taken = %addr,
                %bound,
                "the default metrics address is taken (another process on this host); serving \
                 /metrics, /healthz and /readyz on a free port instead"
            );
            bound
        }
        result => result.with_context(|| format!("cannot serve metrics on {addr}"))?,
    };
    Ok((health, Some(bound)))
}

/// Binds `addr` and serves the three endpoints until `shutdown`; returns the bound address
/// (useful with port 0).
pub async fn serve(
    addr: SocketAddr,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    serve_on(listener, health, shutdown)
}

/// Serves the three endpoints on `listener` until `shutdown`; returns its address.
fn serve_on(
    listener: tokio::net::TcpListener,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let handle = recorder().clone();
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route(
            "/metrics",
            get(move || {
                let handle = handle.clone();
                async move { handle.render() }
            }),
        )
        .with_state(health);
    let upkeep = recorder().clone();
    let upkeep_shutdown = shutdown.clone();
    tokio::spawn(async move {
        // Histograms keep raw samples until upkeep folds them in; without it they grow.
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tokio::select! {
                () = upkeep_shutdown.cancelled() => break,
                _ = tick.tick() => upkeep.run_upkeep(),
            }
        }
    });
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(error) = served {
            tracing::warn!(%error, "metrics endpoint stopped");
        }
    });
    tracing::info!(addr = %bound, "serving /metrics, /healthz and /readyz");
    Ok(bound)
}

/// 503 while the broker or the database is away: this process cannot work. An API outage is
/// not this process's fault and every replica sees it alike, so it stays 200 with a body of
/// `degraded`: a Kubernetes readiness probe that turned it into 503 would only stall rollouts
/// and restarts, and nothing routes traffic to a consumer. Alert on `pokeq_api_circuit_open`.
async fn readyz(State(health): State<Arc<Health>>) -> (StatusCode, &'static str) {
    if health.ready() && health.degraded() {
        (StatusCode::OK, "degraded: the API circuit is open\n")
    } else if health.ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_may_be_names_numbers_or_off() {
        assert_eq!(parse_addr("off"), Ok(Endpoint(None)));
        assert_eq!(
            parse_addr("127.0.0.1:9999"),
            Ok(Endpoint(Some("127.0.0.1:9999".parse().unwrap())))
        );
        let named = parse_addr("localhost:9999").expect("a host name is accepted");
        assert!(
            named
                .0
                .is_some_and(|a| a.port() == 9999 && a.ip().is_loopback())
        );
        assert!(parse_addr("9999").is_err());
        assert!(parse_addr("no-such-host.invalid:1").is_err());
    }

    #[test]
    fn a_chosen_address_must_be_free_the_default_may_fall_back() {
        let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = holder.local_addr().unwrap();
        let error = Listen::resolve(Some(Endpoint(Some(taken))), None).unwrap_err();
        assert_eq!(error.setting, "METRICS_ADDR");
        let default = Listen::resolve(None, Some(taken)).unwrap();
        assert!(default.fallback);
    }

    #[tokio::test]
    async fn the_default_address_taken_gives_a_free_port() {
        let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = holder.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let listen = Listen::resolve(None, Some(taken)).unwrap();
        let (_, bound) = serve_health(&listen, &shutdown).await.unwrap();
        let bound = bound.unwrap();
        assert_ne!(bound.port(), taken.port());
        assert_eq!(bound.ip(), taken.ip());
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_listener_handed_over_is_served() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let listen = Listen::on(listener).unwrap();
        let (_, bound) = serve_health(&listen, &shutdown).await.unwrap();
        assert_eq!(bound, Some(addr));
        let body = reqwest::get(format!("http://{addr}/healthz"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(body, "ok\n");
        shutdown.cancel();
    }
}
