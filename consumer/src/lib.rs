//! The consumer: a delivery loop around [`handler::Handler`].
//!
//! The loop alone talks to the broker. It takes deliveries with a prefetch that bounds the work
//! in flight, runs each through the handler inside its own span, and settles the message only
//! after the handler's Postgres commit: ack when done; publish to the retry or dead-letter
//! exchange (confirmed) and then ack; or hand the message back when pokeq's own infrastructure
//! failed. Delivery is at least once; `done` makes the effect exactly once.

pub mod handler;

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, Connection};
use pokeq_shared::broker;
use pokeq_shared::config::{Common, CommonArgs, ConfigError, parse_duration};
use pokeq_shared::job::{self, ErrorKind, Job};
use pokeq_shared::pokeapi::{ClientOptions, PokeApi};
use pokeq_shared::shutdown::CancellationToken;
use pokeq_shared::store::Store;
use pokeq_shared::topology::{RetryDelays, Topology};
use tracing::Instrument;

use crate::handler::{Handler, Outcome};

/// Command line of `consumer`; every flag also reads an environment variable.
#[derive(Debug, Parser)]
#[command(
    name = "consumer",
    version,
    about = "Fetch, transform and store one pokemon per job"
)]
pub struct Cli {
    #[command(flatten)]
    pub common: CommonArgs,

    /// Unacknowledged deliveries held at once; also the number of jobs worked on concurrently.
    #[arg(long, env = "POKEQ_PREFETCH", default_value_t = 64,
          value_parser = clap::value_parser!(u16).range(1..=4096))]
    pub prefetch: u16,

    /// Tries of a job that keeps failing transiently before it is dead-lettered as `exhausted`.
    #[arg(long, env = "POKEQ_MAX_ATTEMPTS", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_attempts: u32,

    /// Waits before the 1st, 2nd, ... retry (the last one repeats); one wait queue per delay.
    #[arg(long, env = "POKEQ_RETRY_DELAYS", default_value = "1s,5s,30s,2m,10m",
          value_parser = RetryDelays::parse)]
    pub retry_delays: RetryDelays,

    /// Whole-request timeout of one detail request.
    #[arg(long, env = "POKEQ_HTTP_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub http_timeout: Duration,

    /// On SIGTERM, how long in-flight jobs may take to finish before they are handed back.
    #[arg(long, env = "POKEQ_SHUTDOWN_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
}

/// The consumer's validated settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub common: Common,
    pub prefetch: u16,
    pub max_attempts: u32,
    pub retry_delays: RetryDelays,
    pub http: ClientOptions,
    pub shutdown_grace: Duration,
}

impl Cli {
    pub fn validate(&self) -> Result<Config, ConfigError> {
        Ok(Config {
            common: self.common.validate()?,
            prefetch: self.prefetch,
            max_attempts: self.max_attempts,
            retry_delays: self.retry_delays.clone(),
            http: ClientOptions {
                timeout: self.http_timeout,
                pool_per_host: usize::from(self.prefetch),
                ..ClientOptions::default()
            },
            shutdown_grace: self.shutdown_grace,
        })
    }
}

/// Consumes until `shutdown` is cancelled, then stops taking deliveries, lets in-flight jobs
/// finish within the grace period, and returns. Unfinished deliveries go back to the queue when
/// the connection closes.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let store = Store::open(
        &config.common.database,
        &config.common.database_url,
        usize::from(config.prefetch).clamp(4, 32),
    )
    .await?;
    let api = PokeApi::new(&config.common.pokeapi_url, &config.http)
        .context("cannot build the HTTP client")?;
    let connection = broker::connect(&config.common.amqp_url, "pokeq-consumer").await?;
    let topology = Topology::new(
        &config.common.prefix,
        config.common.queue_type,
        config.retry_delays.clone(),
    );
    let publish = broker::confirm_channel(&connection).await?;
    topology
        .declare(&publish)
        .await
        .context("cannot declare the RabbitMQ topology")?;

    let worker = Worker {
        handler: Handler {
            api,
            store,
            max_attempts: config.max_attempts,
            delays: config.retry_delays.clone(),
        },
        publish,
        topology,
    };
    let result = consume(&connection, &worker, &config, &shutdown).await;
    let _ = connection.close(200, ShortString::from("shutdown")).await;
    result
}

async fn consume(
    connection: &Connection,
    worker: &Worker,
    config: &Config,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let channel = connection.create_channel().await?;
    channel
        .basic_qos(config.prefetch, BasicQosOptions::default())
        .await?;
    let deliveries = channel
        .basic_consume(
            ShortString::from(worker.topology.jobs()),
            ShortString::from(""),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    tracing::info!(queue = %worker.topology.jobs(), prefetch = config.prefetch, "consuming");

    let mut broken = None;
    let work = deliveries
        .take_until(shutdown.cancelled())
        .take_while(|delivery| {
            let keep = match delivery {
                Ok(_) => true,
                Err(error) => {
                    broken = Some(error.to_string());
                    false
                }
            };
            std::future::ready(keep)
        })
        .filter_map(|delivery| std::future::ready(delivery.ok()))
        .for_each_concurrent(usize::from(config.prefetch), |delivery| {
            worker.process(delivery)
        });
    let grace = async {
        shutdown.cancelled().await;
        tokio::time::sleep(config.shutdown_grace).await;
    };
    tokio::select! {
        () = work => {}
        () = grace => {
            tracing::warn!(grace = ?config.shutdown_grace, "grace period over; unfinished jobs go back to the queue");
        }
    }
    if let Some(error) = broken {
        anyhow::bail!("lost the broker: {error}");
    }
    tracing::info!("stopped");
    Ok(())
}

struct Worker {
    handler: Handler,
    /// Confirm channel for retries and dead letters.
    publish: Channel,
    topology: Topology,
}

impl Worker {
    async fn process(&self, delivery: Delivery) {
        let failures = job::attempts(&delivery.properties);
        let message_id = delivery
            .properties
            .message_id()
            .as_ref()
            .map_or_else(String::new, |id| id.to_string());
        let span = tracing::info_span!("delivery", job = %message_id, attempt = failures + 1);
        async {
            let deferred = self.handler.defer(job::not_before(&delivery.properties));
            let outcome = match (Job::decode(&delivery.data), deferred) {
                (Err(error), _) => Outcome::Dead {
                    kind: ErrorKind::InvalidMessage,
                    reason: error.0,
                    failures,
                },
                (Ok(_), Some(deferred)) => deferred,
                (Ok(job), None) => self.handler.handle(&job, failures).await,
            };
            if let Err(error) = self.settle(&delivery, &outcome).await {
                tracing::warn!(%error, "cannot settle the delivery; handing it back");
                let _ = delivery.nack(requeue()).await;
            }
        }
        .instrument(span)
        .await
    }

    async fn settle(&self, delivery: &Delivery, outcome: &Outcome) -> anyhow::Result<()> {
        match outcome {
            Outcome::Done { written } => {
                tracing::debug!(written, "done");
            }
            Outcome::Retry {
                delay,
                failures,
                error,
                not_before,
            } => {
                tracing::warn!(%error, delay = %delay.label, failures, "transient failure; retrying later");
                let mut headers =
                    vec![(job::ATTEMPTS_HEADER, AMQPValue::LongInt(*failures as i32))];
                if let Some(at) = not_before {
                    headers.push((job::NOT_BEFORE_HEADER, AMQPValue::LongLongInt(*at)));
                }
                let properties = job::with_headers(&delivery.properties, &headers);
                broker::publish(
                    &self.publish,
                    &self.topology.retry(),
                    &delay.label,
                    &delivery.data,
                    properties,
                )
                .await?;
            }
            Outcome::Defer { delay } => {
                tracing::debug!(delay = %delay.label, "not due yet; waiting again");
                broker::publish(
                    &self.publish,
                    &self.topology.retry(),
                    &delay.label,
                    &delivery.data,
                    delivery.properties.clone(),
                )
                .await?;
            }
            Outcome::Dead {
                kind,
                reason,
                failures,
            } => {
                tracing::warn!(kind = kind.as_str(), %reason, "dead-lettered");
                let properties = job::with_headers(
                    &delivery.properties,
                    &[
                        (job::ATTEMPTS_HEADER, AMQPValue::LongInt(*failures as i32)),
                        (
                            job::ERROR_KIND_HEADER,
                            AMQPValue::LongString(LongString::from(kind.as_str())),
                        ),
                        (
                            job::ERROR_HEADER,
                            AMQPValue::LongString(LongString::from(truncate(reason, 1000))),
                        ),
                    ],
                );
                broker::publish(
                    &self.publish,
                    &self.topology.dead(),
                    delivery.routing_key.as_str(),
                    &delivery.data,
                    properties,
                )
                .await?;
            }
            Outcome::Unavailable { error } => {
                tracing::warn!(%error, "store unavailable; handing the job back");
                tokio::time::sleep(Duration::from_secs(1)).await;
                delivery.nack(requeue()).await?;
                return Ok(());
            }
        }
        delivery.ack(BasicAckOptions::default()).await?;
        Ok(())
    }
}

fn requeue() -> BasicNackOptions {
    BasicNackOptions {
        requeue: true,
        ..BasicNackOptions::default()
    }
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
