//! What every `pokeq` test needs: the real RabbitMQ (AMQP and management API) and Postgres of
//! this machine, a fresh database and queue prefix per test, the topology declared, and a way to
//! run a command in-process and read what it printed.
//!
//! `TEST_AMQP_URL`, `TEST_PG_URL` (a server URL without a database name) and
//! `TEST_MANAGEMENT_URL` point the tests at other services; the defaults are the local ones.

#![allow(dead_code)]

use std::future::Future;
use std::io::{BufRead, Cursor};
use std::time::{Duration, Instant};

use clap::Parser;
use lapin::options::{
    BasicGetOptions, BasicNackOptions, ExchangeDeleteOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection};
use pokeq_ctl::{Cli, Console};
use pokeq_shared::broker;
use pokeq_shared::config::QueueType;
use pokeq_shared::job::{self, Job};
use pokeq_shared::shutdown::CancellationToken;
use pokeq_shared::store::Store;
use pokeq_shared::topology::{RetryDelays, Topology};
use rand::Rng;
use serde_json::Value;

pub struct TestEnv {
    pub prefix: String,
    pub db_name: String,
    pub database_url: String,
    pub amqp_url: String,
    pub management_url: String,
    pub store: Store,
    pub connection: Connection,
    pub channel: Channel,
}

/// What a command printed and how it ended.
pub struct Outcome {
    pub out: String,
    pub result: anyhow::Result<()>,
}

impl Outcome {
    /// The exit status `pokeq` would have ended with.
    pub fn code(&self) -> u8 {
        match &self.result {
            Ok(()) => 0,
            Err(error) => pokeq_ctl::exit_code(error),
        }
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.out).unwrap_or_else(|e| panic!("{e}: {}", self.out))
    }

    pub fn last_line(&self) -> &str {
        self.out.lines().last().unwrap_or_default()
    }
}

/// A message read back from a queue.
#[derive(Debug, Clone)]
pub struct Message {
    pub body: Vec<u8>,
    pub properties: BasicProperties,
}

impl Message {
    pub fn id(&self) -> Option<i32> {
        Job::decode(&self.body).ok().map(|job| job.id)
    }

    pub fn header_names(&self) -> Vec<String> {
        self.properties
            .headers()
            .as_ref()
            .map(|h| h.inner().keys().map(|k| k.to_string()).collect())
            .unwrap_or_default()
    }
}

fn amqp_url() -> String {
    std::env::var("TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn pg_server_url() -> String {
    std::env::var("TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432".into())
}

fn management_url() -> String {
    std::env::var("TEST_MANAGEMENT_URL")
        .unwrap_or_else(|_| "http://guest:guest@127.0.0.1:15672".into())
}

impl TestEnv {
    pub async fn start() -> Self {
        let tag: u64 = rand::rng().random();
        let tag = format!("{tag:016x}");
        let prefix = format!("pokeq-ctltest-{tag}");
        let db_name = format!("pokeq_ctltest_{tag}");
        let database_url = format!("{}/{db_name}", pg_server_url());
        let amqp_url = amqp_url();
        let config = pokeq_shared::store::parse_url(&database_url).expect("database url");
        let store = Store::open(&config, &database_url, 2, None)
            .await
            .expect("Postgres reachable");
        let connection = broker::connect_once(&amqp_url, "pokeq-ctl-tests", None)
            .await
            .expect("RabbitMQ reachable");
        let channel = broker::confirm_channel(&connection).await.expect("channel");
        let env = Self {
            prefix,
            db_name,
            database_url,
            amqp_url,
            management_url: management_url(),
            store,
            connection,
            channel,
        };
        env.topology()
            .declare(&env.channel)
            .await
            .expect("declare topology");
        env
    }

    pub fn topology(&self) -> Topology {
        Topology::new(&self.prefix, QueueType::Quorum, RetryDelays::default())
    }

    /// The command line of `pokeq` for this test's services, then `extra`.
    pub fn args(&self, extra: &[&str]) -> Vec<String> {
        let mut args = vec![
            "pokeq".to_owned(),
            "--amqp-url".into(),
            self.amqp_url.clone(),
            "--database-url".into(),
            self.database_url.clone(),
            "--prefix".into(),
            self.prefix.clone(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    /// Runs `pokeq <extra>` in-process; `answers` is what a person types at the terminal,
    /// `None` for a stdin that is not a terminal.
    pub async fn pokeq(&self, extra: &[&str], answers: Option<&str>) -> Outcome {
        let mut args = self.args(&[]);
        let (first, rest) = extra.split_first().expect("a subcommand");
        args.push(first.to_string());
        if *first == "status" {
            args.push("--management-url".into());
            args.push(self.management_url.clone());
        }
        args.extend(rest.iter().map(|s| s.to_string()));
        let config = Cli::try_parse_from(&args)
            .expect("flags parse")
            .validate()
            .expect("config valid");
        let mut out = Vec::new();
        let mut input = answers.map(|text| Cursor::new(text.as_bytes().to_vec()));
        let console = Console {
            out: &mut out,
            input: input.as_mut().map(|i| i as &mut (dyn BufRead + Send)),
            terminal: false,
        };
        let result = pokeq_ctl::run_with(config, CancellationToken::new(), console).await;
        Outcome {
            out: String::from_utf8(out).expect("UTF-8 output"),
            result,
        }
    }

    /// Publishes a job to the jobs queue, as the producer does.
    pub async fn publish_job(&self, id: i32, name: &str) {
        let job = Job::new(id, name);
        broker::publish(
            &self.channel,
            &self.topology().jobs(),
            job::RESOURCE,
            &job.encode(),
            job.properties(),
        )
        .await
        .expect("publish job");
    }

    /// Publishes a dead letter the way the consumer does: the job's body and properties with
    /// the reason in `x-pokeq-*` headers.
    pub async fn publish_dead(&self, body: &[u8], kind: &str, error: &str, attempts: i32) {
        let base = Job::decode(body)
            .map(|job| job.properties())
            .unwrap_or_else(|_| BasicProperties::default().with_delivery_mode(2));
        let properties = job::with_headers(
            &base,
            &[
                (job::ATTEMPTS_HEADER, AMQPValue::LongInt(attempts)),
                (
                    job::ERROR_KIND_HEADER,
                    AMQPValue::LongString(LongString::from(kind)),
                ),
                (
                    job::ERROR_HEADER,
                    AMQPValue::LongString(LongString::from(error)),
                ),
            ],
        );
        broker::publish(
            &self.channel,
            &self.topology().dead(),
            job::RESOURCE,
            body,
            properties,
        )
        .await
        .expect("publish dead letter");
    }

    pub async fn publish_dead_job(&self, id: i32, name: &str, kind: &str) {
        let body = Job::new(id, name).encode();
        self.publish_dead(&body, kind, &format!("{kind} for {name}"), 2)
            .await;
    }

    /// Makes the broker itself dead-letter a job: handed back more often than the quorum
    /// jobs queue's delivery limit allows.
    pub async fn broker_dead_letter(&self, id: i32, name: &str) {
        let dead_before = self.ready(&self.topology().dead()).await;
        self.publish_job(id, name).await;
        let jobs = self.topology().jobs();
        let channel = self.connection.create_channel().await.expect("channel");
        for _ in 0..60 {
            let got = channel
                .basic_get(
                    ShortString::from(jobs.as_str()),
                    BasicGetOptions { no_ack: false },
                )
                .await
                .expect("basic_get");
            let Some(message) = got else { break };
            message
                .delivery
                .acker
                .nack(BasicNackOptions {
                    requeue: true,
                    multiple: false,
                })
                .await
                .expect("nack");
        }
        let _ = channel.close(200, ShortString::from("ok")).await;
        let arrived = wait_until(Duration::from_secs(10), || async {
            self.ready(&self.topology().dead()).await > dead_before
        })
        .await;
        assert!(arrived, "the broker did not dead-letter job {id}");
    }

    /// Messages ready in `queue` (a passive declare).
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

    /// Takes every message out of `queue`, in order.
    pub async fn drain(&self, queue: &str) -> Vec<Message> {
        let mut messages = Vec::new();
        while let Some(message) = self
            .channel
            .basic_get(ShortString::from(queue), BasicGetOptions { no_ack: true })
            .await
            .expect("basic_get")
        {
            messages.push(Message {
                body: message.delivery.data.clone(),
                properties: message.delivery.properties.clone(),
            });
        }
        messages
    }

    /// Inserts items: (id, status, error_kind, last_error).
    pub async fn seed_items(&self, items: &[(i32, &str, Option<&str>, Option<&str>)]) {
        let client = self.store.pool().get().await.expect("client");
        for (id, status, kind, error) in items {
            client
                .execute(
                    "insert into ingest_items (resource, id, name, status, attempts, error_kind, last_error)
                     values ('pokemon', $1, $5, $2, 2, $3, $4)",
                    &[id, status, kind, error, &format!("mon{id}")],
                )
                .await
                .expect("seed item");
        }
    }

    /// (status, attempts, last_error) of an item.
    pub async fn item(&self, id: i32) -> (String, i32, Option<String>) {
        let client = self.store.pool().get().await.expect("client");
        let row = client
            .query_one(
                "select status, attempts, last_error from ingest_items
                 where resource = 'pokemon' and id = $1",
                &[&id],
            )
            .await
            .expect("item row");
        (row.get(0), row.get(1), row.get(2))
    }

    /// Deletes this test's queues, exchanges and database.
    pub async fn cleanup(self) {
        let topology = self.topology();
        for queue in topology.queues() {
            let _ = self
                .channel
                .queue_delete(ShortString::from(queue), QueueDeleteOptions::default())
                .await;
        }
        for exchange in [topology.jobs(), topology.retry(), topology.dead()] {
            let _ = self
                .channel
                .exchange_delete(
                    ShortString::from(exchange),
                    ExchangeDeleteOptions::default(),
                )
                .await;
        }
        let _ = self.connection.close(200, ShortString::from("bye")).await;
        drop(self.store);
        let config = pokeq_shared::store::parse_url(&format!("{}/postgres", pg_server_url()))
            .expect("maintenance url");
        if let Ok((client, connection)) = config.connect(tokio_postgres::NoTls).await {
            tokio::spawn(connection);
            let _ = client
                .batch_execute(&format!(
                    "drop database if exists \"{}\" with (force)",
                    self.db_name
                ))
                .await;
        }
    }
}

/// Polls `check` every 100 ms until it holds or `timeout` passes; true if it held.
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
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
