//! What every end-to-end test needs: the real RabbitMQ and Postgres of this machine, a fresh
//! database and a fresh queue prefix per test, and the PokeAPI stub on a free port.
//!
//! `TEST_AMQP_URL` and `TEST_PG_URL` (a server URL without a database name) point the tests at
//! other services; the defaults are the local ones.

#![allow(dead_code)]

pub mod harness;
pub mod proxy;

use std::net::SocketAddr;
use std::ops::Deref;
use std::time::{Duration, Instant};

use clap::Parser;
use lapin::BasicProperties;
use lapin::options::{BasicGetOptions, BasicPublishOptions};
use lapin::types::ShortString;
use pokeapi_stub::{StubConfig, StubHandle};
use pokeq_shared::job;
use pokeq_shared::shutdown::CancellationToken;
use pokeq_shared::store::StatusCounts;
use pokeq_shared::testkit::Fresh;
// Not every test binary uses both.
#[allow(unused_imports)]
pub use pokeq_shared::testkit::{free_port, wait_until};
use tokio::task::JoinHandle;

/// A fresh database and queue prefix (see [`Fresh`], which this derefs to) and the stub API.
/// Dropping it removes the database and queues, also when the test fails.
pub struct TestEnv {
    pub fresh: Fresh,
    pub stub: StubHandle,
}

impl Deref for TestEnv {
    type Target = Fresh;

    fn deref(&self) -> &Fresh {
        &self.fresh
    }
}

/// A dead letter as an operator would read it.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub body: Vec<u8>,
    pub kind: Option<String>,
    pub error: Option<String>,
    pub attempts: u32,
}

impl DeadLetter {
    pub fn job_id(&self) -> Option<i32> {
        job::Job::decode(&self.body).ok().map(|job| job.id)
    }
}

pub struct RunningConsumer {
    pub shutdown: CancellationToken,
    pub task: JoinHandle<anyhow::Result<()>>,
}

impl RunningConsumer {
    /// SIGTERM, in-process: cancel and wait for `run` to return.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .expect("consumer did not stop within 60 s")
            .expect("consumer task panicked")
    }
}

impl TestEnv {
    pub async fn start(stub: StubConfig) -> Self {
        let stub = pokeapi_stub::spawn(stub, SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("stub starts");
        Self {
            fresh: Fresh::start("test").await,
            stub,
        }
    }

    /// Flags every binary gets: this test's services and names.
    fn common_args(&self, binary: &str) -> Vec<String> {
        self.args_via(binary, &self.amqp_url, &self.database_url)
    }

    fn args_via(&self, binary: &str, amqp_url: &str, database_url: &str) -> Vec<String> {
        self.args_with_api(binary, amqp_url, database_url, &self.stub.base_url())
    }

    fn args_with_api(
        &self,
        binary: &str,
        amqp_url: &str,
        database_url: &str,
        api_url: &str,
    ) -> Vec<String> {
        vec![
            binary.to_owned(),
            "--amqp-url".into(),
            amqp_url.to_owned(),
            "--database-url".into(),
            database_url.to_owned(),
            "--pokeapi-url".into(),
            api_url.to_owned(),
            "--prefix".into(),
            self.prefix.clone(),
        ]
    }

    pub fn producer_config(&self, extra: &[&str]) -> pokeq_producer::Config {
        self.producer_config_via(&self.amqp_url, &self.database_url, extra)
    }

    /// A producer configuration whose broker and database URLs are `amqp_url` and
    /// `database_url` (e.g. through a [`proxy::Proxy`]).
    pub fn producer_config_via(
        &self,
        amqp_url: &str,
        database_url: &str,
        extra: &[&str],
    ) -> pokeq_producer::Config {
        let mut args = self.args_via("producer", amqp_url, database_url);
        args.extend(test_defaults(extra));
        args.extend(extra.iter().map(|s| s.to_string()));
        pokeq_producer::Cli::try_parse_from(args)
            .expect("producer flags")
            .validate()
            .expect("producer config")
    }

    pub fn consumer_config(&self, extra: &[&str]) -> pokeq_consumer::Config {
        self.consumer_config_via(&self.amqp_url, &self.database_url, extra)
    }

    /// A consumer configuration whose broker and database URLs are `amqp_url` and
    /// `database_url` (e.g. through a [`proxy::Proxy`]).
    pub fn consumer_config_via(
        &self,
        amqp_url: &str,
        database_url: &str,
        extra: &[&str],
    ) -> pokeq_consumer::Config {
        self.consumer_config_with_api(amqp_url, database_url, &self.stub.base_url(), extra)
    }

    /// A consumer configuration that reaches the API at `api_url` (e.g. through a
    /// [`proxy::Proxy`] in front of the stub).
    pub fn consumer_config_with_api(
        &self,
        amqp_url: &str,
        database_url: &str,
        api_url: &str,
        extra: &[&str],
    ) -> pokeq_consumer::Config {
        let mut args = self.args_with_api("consumer", amqp_url, database_url, api_url);
        args.extend(test_defaults(extra));
        // Several consumers share the test process: each gets its own free port.
        if !extra.contains(&"--metrics-addr") {
            args.extend(["--metrics-addr".to_owned(), "127.0.0.1:0".to_owned()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        pokeq_consumer::Cli::try_parse_from(args)
            .expect("consumer flags")
            .validate()
            .expect("consumer config")
    }

    /// `pokeq <args>` in-process on this test's services; its standard output.
    pub async fn pokeq(&self, args: &[&str]) -> String {
        let mut argv = vec![
            "pokeq",
            "--amqp-url",
            &self.amqp_url,
            "--database-url",
            &self.database_url,
            "--prefix",
            &self.prefix,
        ];
        argv.extend_from_slice(args);
        let config = pokeq_ctl::Cli::try_parse_from(argv)
            .expect("pokeq flags")
            .validate()
            .expect("pokeq config");
        let mut out = Vec::new();
        pokeq_ctl::run_with(
            config,
            CancellationToken::new(),
            pokeq_ctl::Console {
                out: &mut out,
                input: None,
                terminal: false,
            },
        )
        .await
        .expect("pokeq succeeds");
        String::from_utf8(out).expect("UTF-8 output")
    }

    pub async fn run_producer(&self, extra: &[&str]) -> pokeq_producer::Summary {
        pokeq_producer::run(self.producer_config(extra), CancellationToken::new())
            .await
            .expect("producer run succeeds")
    }

    pub fn spawn_consumer(&self, extra: &[&str]) -> RunningConsumer {
        spawn_consumer(self.consumer_config(extra))
    }
}

pub fn spawn_consumer(config: pokeq_consumer::Config) -> RunningConsumer {
    {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(pokeq_consumer::run(config, shutdown.clone()));
        RunningConsumer { shutdown, task }
    }
}

impl TestEnv {
    pub async fn counts(&self) -> StatusCounts {
        self.store.status_counts().await.expect("status counts")
    }

    /// Waits until every one of `n` items is `done` or `failed`, panicking with the counts if
    /// that takes longer than `timeout`.
    pub async fn wait_settled(&self, n: i64, timeout: Duration) -> StatusCounts {
        let deadline = Instant::now() + timeout;
        loop {
            let counts = self.counts().await;
            if counts.done + counts.failed >= n {
                return counts;
            }
            assert!(
                Instant::now() < deadline,
                "items not settled within {timeout:?}: {counts:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Takes every dead letter out of the dead queue.
    pub async fn drain_dead(&self) -> Vec<DeadLetter> {
        let mut letters = Vec::new();
        let dead = self.topology().dead();
        while let Some(message) = self
            .channel
            .basic_get(
                ShortString::from(dead.as_str()),
                BasicGetOptions { no_ack: true },
            )
            .await
            .expect("basic_get")
        {
            let properties = &message.delivery.properties;
            letters.push(DeadLetter {
                body: message.delivery.data.clone(),
                kind: job::header_text(properties, job::ERROR_KIND_HEADER),
                error: job::header_text(properties, job::ERROR_HEADER),
                attempts: job::attempts(properties),
            });
        }
        letters
    }

    /// Publishes a raw body to the jobs exchange, as anyone with queue access could.
    pub async fn publish_raw(&self, body: &[u8], properties: BasicProperties) {
        let confirm = self
            .channel
            .basic_publish(
                ShortString::from(self.topology().jobs()),
                ShortString::from(job::RESOURCE),
                BasicPublishOptions::default(),
                body,
                properties,
            )
            .await
            .expect("publish");
        assert!(confirm.await.expect("confirm").is_ack());
    }

    /// Counts every write to `pokemon` (a trigger), so a test can prove each row was written
    /// exactly once however often its job was delivered.
    pub async fn count_writes(&self) {
        self.client()
            .await
            .batch_execute(
                "create table pokemon_writes (id integer);
                 create function count_pokemon_write() returns trigger language plpgsql as $$
                 begin insert into pokemon_writes (id) values (new.id); return new; end $$;
                 create trigger count_writes after insert or update on pokemon
                 for each row execute function count_pokemon_write();",
            )
            .await
            .expect("write counter installed");
    }

    /// With [`TestEnv::count_writes`] installed: `n` rows, each written exactly once.
    pub async fn assert_each_row_written_once(&self, n: i64) {
        let row = self
            .client()
            .await
            .query_one(
                "select count(*), count(distinct id) from pokemon_writes",
                &[],
            )
            .await
            .expect("write counts");
        let (writes, ids): (i64, i64) = (row.get(0), row.get(1));
        assert_eq!(
            (writes, ids),
            (n, n),
            "each of {n} rows written exactly once"
        );
    }
}

/// The status of a GET of `url` (a health endpoint), or `None` without an answer.
pub async fn http_status(url: &str) -> Option<u16> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .ok()?;
    let response = client.get(url).send().await.ok()?;
    Some(response.status().as_u16())
}

/// Flags tests use unless they set their own: the stub needs no politeness.
fn test_defaults(extra: &[&str]) -> Vec<String> {
    let mut args = Vec::new();
    for (flag, value) in [("--rate", "0"), ("--api-concurrency", "64")] {
        if !extra.contains(&flag) {
            args.extend([flag.to_owned(), value.to_owned()]);
        }
    }
    args
}
