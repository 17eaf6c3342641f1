//! What every `pokeq` test needs: the real RabbitMQ (AMQP and management API) and Postgres of
//! this machine, a fresh database and queue prefix per test, the topology declared, and a way to
//! run a command in-process and read what it printed.
//!
//! `TEST_AMQP_URL`, `TEST_PG_URL` (a server URL without a database name) and
//! `TEST_MANAGEMENT_URL` point the tests at other services; the defaults are the local ones.

#![allow(dead_code)]

// The producer, consumers and stub for the commands that report on them.
pub mod pipeline;

use std::io::{BufRead, Cursor};
use std::ops::Deref;
use std::time::Duration;

use clap::Parser;
use lapin::BasicProperties;
use lapin::options::{BasicGetOptions, BasicNackOptions};
use lapin::types::{AMQPValue, LongString, ShortString};
use pokeq_ctl::{Cli, Console};
use pokeq_shared::broker;
use pokeq_shared::job::{self, Job};
use pokeq_shared::shutdown::CancellationToken;
#[allow(unused_imports)]
pub use pokeq_shared::testkit::wait_until;
use pokeq_shared::testkit::{Fresh, management_url};
use serde_json::Value;

/// A fresh database and queue prefix (see [`Fresh`], which this derefs to), topology declared.
/// Dropping it removes the database and queues, also when the test fails.
pub struct TestEnv {
    pub fresh: Fresh,
    pub management_url: String,
}

impl Deref for TestEnv {
    type Target = Fresh;

    fn deref(&self) -> &Fresh {
        &self.fresh
    }
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

impl TestEnv {
    pub async fn start() -> Self {
        let env = Self {
            fresh: Fresh::start("ctltest").await,
            management_url: management_url(),
        };
        env.topology()
            .declare(&env.channel)
            .await
            .expect("declare topology");
        env
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
        run(&args, answers).await
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
}

/// Runs the `pokeq` command line `args` in-process; `answers` is what a person types at the
/// terminal, `None` for a stdin that is not a terminal.
pub async fn run(args: &[String], answers: Option<&str>) -> Outcome {
    let config = Cli::try_parse_from(args)
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
