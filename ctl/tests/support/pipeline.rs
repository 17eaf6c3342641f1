//! The rest of a pipeline next to `pokeq`: the PokeAPI stub, in-process consumers and the
//! producer on a test's database and prefix, `pokeq` run with any command line, and the
//! management API read back, for the commands that report on what is running and declared.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use pokeapi_stub::{FaultRule, StubConfig, StubHandle};
use pokeq_shared::shutdown::CancellationToken;
use pokeq_shared::testkit::{Fresh, management_url};
use serde_json::Value;
use tokio::task::JoinHandle;

use super::Outcome;

/// The stub API serving `count` pokemon, with `faults` for some ids.
pub async fn stub(count: u32, faults: HashMap<i32, FaultRule>) -> StubHandle {
    let config = StubConfig {
        count,
        faults,
        ..StubConfig::default()
    };
    pokeapi_stub::spawn(config, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("stub starts")
}

/// Flags of a producer or consumer (`binary`) on `fresh`'s services and the stub.
fn common(binary: &str, fresh: &Fresh, stub: &StubHandle) -> Vec<String> {
    vec![
        binary.to_owned(),
        "--amqp-url".into(),
        fresh.amqp_url.clone(),
        "--database-url".into(),
        fresh.database_url.clone(),
        "--pokeapi-url".into(),
        stub.base_url(),
        "--prefix".into(),
        fresh.prefix.clone(),
        "--rate".into(),
        "0".into(),
    ]
}

pub struct RunningConsumer {
    pub shutdown: CancellationToken,
    pub task: JoinHandle<anyhow::Result<()>>,
}

impl RunningConsumer {
    /// SIGTERM, in-process: cancel and wait for `run` to return.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .expect("consumer stops within 60 s")
            .expect("consumer task did not panic")
            .expect("consumer ends cleanly");
    }
}

/// A consumer in this process, its endpoints on a free port, with `extra` flags.
pub fn spawn_consumer(fresh: &Fresh, stub: &StubHandle, extra: &[&str]) -> RunningConsumer {
    let mut args = common("consumer", fresh, stub);
    args.extend(["--metrics-addr".to_owned(), "127.0.0.1:0".to_owned()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let config = pokeq_consumer::Cli::try_parse_from(args)
        .expect("consumer flags")
        .validate()
        .expect("consumer config");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(pokeq_consumer::run(config, shutdown.clone()));
    RunningConsumer { shutdown, task }
}

/// Runs the producer to the end.
pub async fn run_producer(fresh: &Fresh, stub: &StubHandle) -> pokeq_producer::Summary {
    let config = pokeq_producer::Cli::try_parse_from(common("producer", fresh, stub))
        .expect("producer flags")
        .validate()
        .expect("producer config");
    pokeq_producer::run(config, CancellationToken::new())
        .await
        .expect("producer run succeeds")
}

/// `pokeq <common flags for fresh> <extra>`, the management API of the tests appended for the
/// commands that read it.
pub async fn pokeq(fresh: &Fresh, extra: &[&str], answers: Option<&str>) -> Outcome {
    pokeq_as(
        &fresh.amqp_url,
        &fresh.database_url,
        &fresh.prefix,
        extra,
        answers,
    )
    .await
}

/// `pokeq` with these services and prefix (a mistyped one, say), then `extra`.
pub async fn pokeq_as(
    amqp_url: &str,
    database_url: &str,
    prefix: &str,
    extra: &[&str],
    answers: Option<&str>,
) -> Outcome {
    let mut args: Vec<String> = [
        "pokeq",
        "--amqp-url",
        amqp_url,
        "--database-url",
        database_url,
        "--prefix",
        prefix,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    if matches!(extra.first(), Some(&"status" | &"workers" | &"topology")) {
        args.extend(["--management-url".to_owned(), management_url()]);
    }
    super::run(&args, answers).await
}

/// GETs a management API path (`api/queues/%2f`...) as JSON.
pub async fn management(path: &str) -> Value {
    let url = url::Url::parse(&management_url()).expect("management url");
    let base = format!(
        "{}://{}:{}",
        url.scheme(),
        url.host_str().unwrap_or("127.0.0.1"),
        url.port().unwrap_or(15672)
    );
    let body = reqwest::Client::new()
        .get(format!("{base}/{path}"))
        .basic_auth(url.username(), url.password())
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("management API answers")
        .bytes()
        .await
        .expect("management API body");
    serde_json::from_slice(&body).expect("management API JSON")
}

/// Names of the queues and exchanges of the default vhost that start with `<prefix>.`.
pub async fn declared(prefix: &str) -> (Vec<String>, Vec<String>) {
    let names = |value: Value| -> Vec<String> {
        let wanted = format!("{prefix}.");
        let mut names: Vec<String> = value
            .as_array()
            .expect("a list")
            .iter()
            .filter_map(|item| item["name"].as_str())
            .filter(|name| name.starts_with(&wanted))
            .map(str::to_owned)
            .collect();
        names.sort();
        names
    };
    (
        names(management("api/queues/%2f?columns=name").await),
        names(management("api/exchanges/%2f?columns=name").await),
    )
}

/// Whether Postgres has a database of that name.
pub async fn database_exists(name: &str) -> bool {
    let client = maintenance().await;
    client
        .query_one(
            "select exists (select 1 from pg_database where datname = $1)",
            &[&name],
        )
        .await
        .expect("pg_database")
        .get(0)
}

/// A connection to the server's `postgres` database.
pub async fn maintenance() -> tokio_postgres::Client {
    let url = format!("{}/postgres", pokeq_shared::testkit::pg_server_url());
    let config = pokeq_shared::store::parse_url(&url).expect("maintenance url");
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .expect("Postgres reachable");
    tokio::spawn(connection);
    client
}
