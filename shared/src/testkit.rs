//! Test support shared by the crates' end-to-end tests (feature `testkit`, dev-dependencies
//! only): the real RabbitMQ and Postgres of the machine, with a fresh database and a fresh
//! queue prefix per test, removed again when the test's [`Fresh`] drops, also when the test
//! fails (see [`guard`]).
//!
//! `TEST_AMQP_URL`, `TEST_PG_URL` (a server URL without a database name) and
//! `TEST_MANAGEMENT_URL` point the tests at other services; the defaults are the local ones.

pub mod guard;
pub mod refusing;

use std::future::Future;
use std::time::{Duration, Instant};

use lapin::options::QueueDeclareOptions;
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Connection};
use rand::Rng;

use crate::config::QueueType;
use crate::store::Store;
use crate::topology::{RetryDelays, Topology};
use crate::{broker, store};

pub fn amqp_url() -> String {
    std::env::var("TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

pub fn pg_server_url() -> String {
    std::env::var("TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432".into())
}

pub fn management_url() -> String {
    std::env::var("TEST_MANAGEMENT_URL")
        .unwrap_or_else(|_| "http://guest:guest@127.0.0.1:15672".into())
}

pub use guard::{TestDatabase, TestQueues};

/// One test's own database and queue prefix, with a store and a confirm channel on them. Both
/// are removed when this drops, also when the test panics: the tests have nothing to clean up.
pub struct Fresh {
    pub prefix: String,
    pub db_name: String,
    pub database_url: String,
    pub amqp_url: String,
    pub store: Store,
    pub connection: Connection,
    pub channel: Channel,
    // Last, so that they drop after the store's and the broker's connections above.
    _database: TestDatabase,
    _queues: TestQueues,
}

impl Fresh {
    /// Names start with `pokeq-<label>-` / `pokeq_<label>_` and end with a random tag, so
    /// anything a test leaves behind for all that is recognisable.
    pub async fn start(label: &str) -> Self {
        let tag: u64 = rand::rng().random();
        let prefix = format!("pokeq-{label}-{tag:016x}");
        let db_name = format!("pokeq_{label}_{tag:016x}");
        // Before anything is created: a start that fails halfway leaves nothing either.
        let queues = TestQueues::new(&prefix);
        let database = TestDatabase::new(&db_name);
        let database_url = format!("{}/{db_name}", pg_server_url());
        let amqp_url = amqp_url();
        let config = store::parse_url(&database_url).expect("database url");
        let store = Store::open(&config, &database_url, 4, None)
            .await
            .expect("Postgres reachable (start it: see README)");
        let connection = broker::connect_once(&amqp_url, &format!("pokeq-{label}"), None)
            .await
            .expect("RabbitMQ reachable (start it: see README)");
        let channel = broker::confirm_channel(&connection).await.expect("channel");
        Self {
            prefix,
            db_name,
            database_url,
            amqp_url,
            store,
            connection,
            channel,
            _database: database,
            _queues: queues,
        }
    }

    /// The topology the binaries declare by default for this prefix.
    pub fn topology(&self) -> Topology {
        Topology::new(&self.prefix, QueueType::Quorum, RetryDelays::default())
    }

    /// Messages ready in `queue` (a passive declare, as the management UI would show).
    pub async fn ready(&self, queue: &str) -> u32 {
        let channel = self.connection.create_channel().await.expect("channel");
        let declared = channel
            .queue_declare(
                ShortString::from(queue),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("queue exists");
        let _ = channel.close(200, ShortString::from("ok")).await;
        declared.message_count()
    }

    pub async fn client(&self) -> deadpool_postgres::Object {
        self.store.pool().get().await.expect("pooled client")
    }
}

/// Stores `documents` in one group commit, as a consumer does, following no links: whether each
/// was written (false: its item was done already, or an earlier document held it).
pub async fn save<D: Into<crate::commit::Document>>(
    store: &Store,
    documents: impl IntoIterator<Item = D>,
) -> Result<Vec<bool>, crate::store::StoreError> {
    let jobs: Vec<crate::commit::Finished> = documents
        .into_iter()
        .map(|document| crate::commit::Finished::alone(document.into()))
        .collect();
    let committed = crate::commit::commit(store, &jobs).await?;
    Ok(committed.iter().map(|job| job.written).collect())
}

/// Polls `check` every 50 ms until it holds or `timeout` passes; true if it held.
pub async fn wait_until<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A port that was free a moment ago, for a server in another process (a private Postgres
/// cluster, a consumer binary serving its metrics): such a process must bind the port itself,
/// so this closes its probe and another process could take the port before the server binds it
/// (the server then fails to start and the test fails loudly, rarely). Where the code under
/// test runs in this process, hand it a listener bound to port 0 instead ([`metrics_listener`]),
/// and where a port must refuse connections, hold a [`ClosedPort`].
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port()
}

/// The metrics endpoint of a binary run in this process, on a listener bound here to port 0 and
/// handed over: the test knows the address up front, and nothing can take it in between.
pub fn metrics_listener() -> (crate::metrics::Listen, std::net::SocketAddr) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a metrics port");
    let addr = listener.local_addr().expect("bound address");
    let listen = crate::metrics::Listen::on(listener).expect("listener handed over");
    (listen, addr)
}

/// A port of 127.0.0.1 that refuses every connection while this lives, as a service that is
/// down does: its socket is bound but never listens, so the kernel answers a connect with a
/// reset, and no other process can bind the port meanwhile.
pub struct ClosedPort {
    _socket: tokio::net::TcpSocket,
    pub port: u16,
}

impl ClosedPort {
    pub fn bind() -> Self {
        let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
        socket
            .bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("bind a port");
        let port = socket.local_addr().expect("bound address").port();
        Self {
            _socket: socket,
            port,
        }
    }
}

/// The folder of real PokeAPI payloads in `POKEAPI_SAMPLES`, if set. Under CI (`CI` set and not
/// `false` or `0`, as `.ci/run` and hosted CI set it) a missing one fails the calling test, so
/// that CI never passes without having checked the real payloads; elsewhere the test is
/// skipped with a note naming `what` it would have checked.
#[track_caller]
pub fn samples_dir(what: &str) -> Option<std::path::PathBuf> {
    if let Some(dir) = std::env::var_os("POKEAPI_SAMPLES") {
        return Some(dir.into());
    }
    let on_ci = std::env::var("CI").is_ok_and(|ci| !matches!(ci.as_str(), "" | "false" | "0"));
    assert!(
        !on_ci,
        "POKEAPI_SAMPLES is not set, so {what} cannot be checked, and under CI it must be: set it \
         to the absolute path of a folder of real PokeAPI payloads (`.ci/run` uses \
         ../shared/pokeapi-samples)"
    );
    eprintln!("POKEAPI_SAMPLES not set: {what} not checked");
    None
}
