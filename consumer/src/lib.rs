//! The consumer: a delivery loop around [`handler::Handler`].
//!
//! The loop alone talks to the broker. It takes deliveries with a prefetch that bounds the work
//! in flight, runs each through the handler inside its own span, and settles the message only
//! after the handler's Postgres commit: ack when done; publish to the retry or dead-letter
//! exchange (confirmed) and then ack. Delivery is at least once; `done` makes the effect exactly
//! once.
//!
//! Infrastructure faults are waited out, never charged to a job: a lost broker connection is
//! re-established with capped backoff (unacked deliveries return to the queue on their own); an
//! unavailable database holds the delivery unacked and retries it with backoff, so no item ends
//! `failed` because Postgres was down; a retry or dead letter the broker does not take is
//! published again with bounded backoff ([`settle`]), not by running the job again.
//!
//! Beside the jobs, each session reads the dead-letter [`ledger`], so that jobs the broker
//! dead-letters itself fail their items too.

pub mod acks;
pub mod circuit;
pub mod commit;
pub mod handler;
pub mod ledger;
pub mod settle;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection};
use pokeq_shared::broker;
use pokeq_shared::circuit::Circuit;
use pokeq_shared::config::{Common, CommonArgs, ConfigError, parse_byte_size, parse_duration};
use pokeq_shared::exit;
use pokeq_shared::job::{self, ErrorKind, Job};
use pokeq_shared::metrics::{self, Health};
use pokeq_shared::pokeapi::{ClientOptions, PokeApi};
use pokeq_shared::rate::{Gate, Politeness, PolitenessArgs};
use pokeq_shared::retry;
use pokeq_shared::shutdown::CancellationToken;
use pokeq_shared::store::Store;
use pokeq_shared::topology::{self, RetryDelays, Topology};
use pokeq_shared::worker;
use tracing::Instrument;

use crate::acks::Acker;
use crate::commit::{Committer, StateReader};
use crate::handler::{Handler, Outcome};
use crate::settle::{Target, Unsettled};

/// Command line of `consumer`; every flag also reads an environment variable.
#[derive(Debug, Parser)]
#[command(
    name = "consumer",
    version,
    about = "Fetch, transform and store one pokemon per job",
    after_help = pokeq_shared::config::ENVIRONMENT_HELP
)]
pub struct Cli {
    #[command(flatten)]
    pub common: CommonArgs,

    #[command(flatten)]
    pub politeness: PolitenessArgs,

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

    /// Times a detail request that failed as a flaky backend fails (a 5xx without
    /// `Retry-After`, a timeout, a dropped connection) is sent again within the same attempt,
    /// 25–50 ms, then 50–100 ms later, before the job goes to a retry queue. 0: every such
    /// failure goes there.
    #[arg(long, env = "POKEQ_API_RETRIES", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(0..=5))]
    pub api_retries: u32,

    /// Whole-request timeout of one detail request.
    #[arg(long, env = "POKEQ_HTTP_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub http_timeout: Duration,

    /// Largest detail response accepted; a larger one is a permanent `malformed_payload`.
    #[arg(long, env = "POKEQ_MAX_BODY", default_value = "8MB", value_parser = parse_byte_size)]
    pub max_body: usize,

    /// On SIGTERM, how long in-flight jobs may take to finish before they are handed back.
    #[arg(long, env = "POKEQ_SHUTDOWN_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// How long to keep trying to reach RabbitMQ or Postgres while they are away (at start, or
    /// RabbitMQ after losing it) before exiting 1. A database lost mid-run is waited for
    /// without limit, the jobs in hand held unacknowledged. A refused login, vhost, right or
    /// queue declaration is not waited for: it exits 2 at once.
    #[arg(long, env = "POKEQ_PATIENCE", default_value = "5m", value_parser = parse_duration)]
    pub patience: Duration,

    /// Address of /metrics, /healthz and /readyz (host:port), or `off` [default: 0.0.0.0:9000,
    /// or a free port when another process on the host has it; an address set here must be
    /// free].
    #[arg(long, env = "METRICS_ADDR", value_parser = metrics::parse_addr)]
    pub metrics_addr: Option<metrics::Endpoint>,
}

/// The consumer's validated settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub common: Common,
    pub prefetch: u16,
    pub max_attempts: u32,
    pub retry_delays: RetryDelays,
    pub http: ClientOptions,
    pub politeness: Politeness,
    pub shutdown_grace: Duration,
    pub patience: Duration,
    pub metrics_addr: metrics::Listen,
}

/// Where a consumer serves its endpoints unless told otherwise.
pub const DEFAULT_METRICS_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 9000);

impl Cli {
    pub fn validate(&self) -> Result<Config, ConfigError> {
        Ok(Config {
            common: self.common.validate()?,
            prefetch: self.prefetch,
            max_attempts: self.max_attempts,
            retry_delays: self.retry_delays.clone(),
            politeness: self.politeness.politeness(),
            http: ClientOptions {
                timeout: self.http_timeout,
                max_body: self.max_body,
                pool_per_host: usize::from(self.politeness.api_concurrency),
                quick_retries: self.api_retries,
                ..ClientOptions::default()
            },
            shutdown_grace: self.shutdown_grace,
            patience: self.patience,
            metrics_addr: metrics::Listen::resolve(self.metrics_addr, Some(DEFAULT_METRICS_ADDR))?,
        })
    }
}

/// Consumes until `shutdown` is cancelled, then stops taking deliveries, lets in-flight jobs
/// finish within the grace period, and returns. A lost broker is reconnected; only a broker
/// unreachable for longer than `patience`, or one that refuses a setting, ends the run with an
/// error.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let (health, metrics_at) = metrics::serve_health(&config.metrics_addr, &shutdown).await?;
    metrics::preregister(metrics::Binary::Consumer);
    let advertised = Arc::new(advertised(&config, metrics_at));
    tracing::info!(
        process = %process_name(),
        metrics = %metrics_at.map_or_else(|| "off".to_owned(), |a| a.to_string()),
        version = env!("CARGO_PKG_VERSION"),
        "consumer starting"
    );
    let opening = Store::open_patiently(
        &config.common.database,
        config.common.database_url.expose(),
        // Handlers only read item states (the committer writes); a few connections serve many.
        (usize::from(config.prefetch) / 4).clamp(4, 16),
        config.common.extra_ca.as_deref(),
        config.patience,
    );
    let store = tokio::select! {
        () = shutdown.cancelled() => return Ok(()),
        store = opening => store?,
    };
    health.set_database(true);
    let gate = Gate::new(&config.politeness, Some(store.clone()));
    let circuit = Arc::new(Circuit::new());
    let api = PokeApi::new(config.common.pokeapi_url.expose(), &config.http, gate)
        .context("cannot build the HTTP client")?
        .with_circuit(Arc::clone(&circuit), shutdown.clone());
    circuit::report(
        &circuit,
        store.clone(),
        Arc::clone(&health),
        process_name(),
        shutdown.clone(),
    );
    let committer = Committer::spawn(store.clone(), usize::from(config.prefetch));
    let states = StateReader::spawn(store.clone(), usize::from(config.prefetch));
    let handler = Arc::new(Handler {
        api,
        store,
        committer,
        states,
        health: Arc::clone(&health),
        shutdown: shutdown.clone(),
        max_attempts: config.max_attempts,
        delays: config.retry_delays.clone(),
    });
    let topology = Topology::new(
        &config.common.prefix,
        config.common.queue_type,
        config.retry_delays.clone(),
    );

    let mut backoff = retry::BROKER_RECONNECT.waits();
    let mut unreachable_since: Option<Instant> = None;
    loop {
        let session = Session {
            handler: Arc::clone(&handler),
            topology: topology.clone(),
            health: Arc::clone(&health),
            advertised: Arc::clone(&advertised),
        };
        let started = Instant::now();
        let error = match session.run(&config, &shutdown).await {
            Ok(()) => return Ok(()),
            Err(error) => error,
        };
        health.set_broker(false);
        if shutdown.is_cancelled() {
            return Ok(());
        }
        if exit::misconfiguration(&error).is_some() {
            // A refused login, vhost or declaration stays refused however long we wait.
            return Err(error);
        }
        if started.elapsed() > Duration::from_secs(30) {
            // The session was healthy for a while: this is a new outage, start over.
            backoff = retry::BROKER_RECONNECT.waits();
            unreachable_since = None;
        }
        let since = *unreachable_since.get_or_insert_with(Instant::now);
        if since.elapsed() > config.patience {
            return Err(error.context(format!(
                "RabbitMQ unreachable for over {:?}",
                config.patience
            )));
        }
        let wait = backoff.next().unwrap_or(retry::BROKER_RECONNECT.longest);
        metrics::counter!(metrics::RECONNECTS, "target" => "broker").increment(1);
        tracing::warn!(
            error = pokeq_shared::exit::describe(&error),
            ?wait,
            "lost RabbitMQ; reconnecting"
        );
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// How this process is known to operators: `pokeq-consumer@<host>:<pid>`, the name of its
/// broker connection and of its `api_circuit` row.
pub fn process_name() -> String {
    format!(
        "{}{}:{}",
        worker::NAME_PREFIX,
        host_name(),
        std::process::id()
    )
}

fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// What this consumer tells the broker about itself (see [`worker`]).
fn advertised(config: &Config, metrics_addr: Option<SocketAddr>) -> worker::Advertised {
    worker::Advertised {
        host: host_name(),
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        prefix: config.common.prefix.clone(),
        prefetch: config.prefetch,
        retry_delays: config
            .retry_delays
            .all()
            .iter()
            .map(|delay| delay.label.clone())
            .collect(),
        started_at: job::unix_seconds(),
        metrics_addr,
    }
}

/// One broker connection's worth of consuming.
struct Session {
    handler: Arc<Handler>,
    topology: Topology,
    health: Arc<Health>,
    advertised: Arc<worker::Advertised>,
}

impl Session {
    /// Connects, declares and consumes. `Ok` when `shutdown` ended it; `Err` when the broker
    /// could not be reached or went away.
    async fn run(self, config: &Config, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let connection = broker::connect_once_with(
            config.common.amqp_url.expose(),
            &process_name(),
            &self.advertised.client_properties(),
            config.common.extra_ca.as_deref(),
        )
        .await?;
        let result = self.consume(&connection, config, shutdown).await;
        broker::close(&connection).await;
        result
    }

    async fn consume(
        self,
        connection: &Connection,
        config: &Config,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        // On a cluster, a dead-letter or wait queue on a node that is down is skipped: the
        // jobs do not wait for it (the ledger below tries it again on its own).
        self.topology
            .declare_on(connection)
            .await
            .context("cannot declare the RabbitMQ topology")?;
        let publish = broker::confirm_channel(connection).await?;
        let channel = connection.create_channel().await?;
        channel
            .basic_qos(config.prefetch, BasicQosOptions::default())
            .await?;
        let deliveries = channel
            .basic_consume(
                ShortString::from(self.topology.jobs()),
                ShortString::from(""),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        self.health.set_broker(true);
        tracing::info!(queue = %self.topology.jobs(), prefetch = config.prefetch, "consuming");

        let ledger = ledger::keep_consuming(
            connection,
            &self.topology,
            &self.handler.store,
            &self.health,
            shutdown,
        );
        let (acker, acking) = Acker::spawn(channel.clone());
        let worker = Worker {
            handler: Arc::clone(&self.handler),
            connection,
            publish: publish.clone(),
            topology: self.topology.clone(),
            acker,
        };
        let mut broken = None;
        let work = deliveries
            .take_until(shutdown.cancelled())
            .take_while(|delivery| {
                if let Err(error) = delivery {
                    broken = Some(error.to_string());
                }
                std::future::ready(delivery.is_ok())
            })
            .filter_map(|delivery| std::future::ready(delivery.ok()))
            .for_each_concurrent(usize::from(config.prefetch), |delivery| {
                worker.process(delivery)
            });
        let grace = async {
            shutdown.cancelled().await;
            tokio::time::sleep(config.shutdown_grace).await;
        };
        // The delivery stream does not always end when the socket dies; the connection's own
        // state does change, so watch it too. Jobs still in flight then are redelivered by the
        // broker to whoever consumes next, and `done` makes that harmless.
        let lost = async {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                if !(connection.status().connected()
                    && channel.status().connected()
                    && publish.status().connected())
                {
                    break;
                }
            }
        };
        tokio::select! {
            () = work => {}
            () = grace => {
                tracing::warn!(grace = ?config.shutdown_grace, "grace period over; unfinished jobs go back to the queue");
            }
            () = lost, if !shutdown.is_cancelled() => {
                broken.get_or_insert_with(|| "connection lost".to_owned());
            }
            Err(error) = ledger => {
                broken.get_or_insert_with(|| pokeq_shared::exit::describe(&error));
            }
        }
        // The acknowledgements still held go out, then the channels close, before the
        // connection does.
        drop(worker);
        let _ = tokio::time::timeout(Duration::from_secs(5), acking).await;
        broker::close_channel(&channel).await;
        broker::close_channel(&publish).await;
        if shutdown.is_cancelled() {
            tracing::info!("stopped");
            return Ok(());
        }
        anyhow::bail!(
            "the delivery stream ended: {}",
            broken.unwrap_or_else(|| "connection or channel closed".into())
        )
    }
}

struct Worker<'a> {
    handler: Arc<Handler>,
    /// For a channel of its own to declare the topology again on: a declare the broker refuses
    /// closes its channel.
    connection: &'a Connection,
    /// Confirm channel for retries and dead letters.
    publish: Channel,
    topology: Topology,
    /// Acknowledges the deliveries of the consuming channel.
    acker: Acker,
}

impl Worker<'_> {
    async fn process(&self, delivery: Delivery) {
        let failures = job::attempts(&delivery.properties);
        let message_id = delivery
            .properties
            .message_id()
            .as_ref()
            .map_or_else(String::new, |id| id.to_string());
        let trace_id = job::trace_id(&delivery.properties).unwrap_or_default();
        let span = tracing::info_span!(
            "delivery",
            job = %message_id,
            attempt = failures.saturating_add(1),
            trace_id = %trace_id
        );
        let in_flight = metrics::gauge!(metrics::IN_FLIGHT);
        in_flight.increment(1.0);
        async {
            let Some(outcome) = self.outcome(&delivery, failures).await else {
                tracing::info!("stopping while the database is away; handing the job back");
                let _ = delivery.nack(requeue()).await;
                self.acker.forget(delivery.delivery_tag);
                return;
            };
            match self.settle(&delivery, &outcome).await {
                Ok(()) => {
                    self.acker.ack(delivery.delivery_tag);
                    metrics::gauge!(metrics::LAST_JOB_FINISHED).set(job::unix_seconds() as f64);
                }
                Err(error @ Unsettled::ChannelLost(_)) => {
                    // Nothing to hand it back on: the broker requeues it when the session's
                    // channels close, which losing this one makes happen.
                    tracing::warn!(%error, "cannot settle the delivery");
                    self.acker.forget(delivery.delivery_tag);
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot settle the delivery; handing it back");
                    let _ = delivery.nack(requeue()).await;
                    self.acker.forget(delivery.delivery_tag);
                }
            }
        }
        .instrument(span)
        .await;
        in_flight.decrement(1.0);
    }

    /// The handler's outcome (it waits out database outages itself, the delivery unacked, so
    /// the prefetch keeps this consumer from taking more work meanwhile). `None` if shutdown
    /// came first.
    async fn outcome(&self, delivery: &Delivery, failures: u32) -> Option<Outcome> {
        let job = match Job::decode(&delivery.data) {
            Ok(job) => job,
            Err(error) => {
                return Some(Outcome::Dead {
                    kind: ErrorKind::InvalidMessage,
                    reason: error.0,
                    failures,
                });
            }
        };
        if let Some(deferred) = self.handler.defer(job::not_before(&delivery.properties)) {
            return Some(deferred);
        }
        self.handler.handle(&job, failures).await
    }

    /// Does what `outcome` asks of the broker before the delivery can be acknowledged: a retry
    /// or dead letter is published and confirmed ([`settle`]).
    async fn settle(&self, delivery: &Delivery, outcome: &Outcome) -> Result<(), Unsettled> {
        // The job's resource, for the metrics' label and the routing keys; decoding again is
        // cheap next to the job's fetch.
        let resource = Job::decode(&delivery.data)
            .map_or_else(|_| UNKNOWN_RESOURCE.to_owned(), |job| job.resource);
        match outcome {
            Outcome::Done { written, links } => {
                // The linked jobs go out, confirmed, before the ack: a crash in between loses
                // none (the parent is redelivered, its links stay `queued` for the producer's
                // `--requeue-after`). All at once, so that the broker confirms them together.
                let bodies: Vec<Vec<u8>> = links.iter().map(Job::encode).collect();
                futures_util::future::try_join_all(links.iter().zip(&bodies).map(
                    |(link, body)| {
                        self.publish(Target::Jobs, &link.resource, body, link.properties())
                    },
                ))
                .await?;
                if !links.is_empty() {
                    metrics::counter!(metrics::LINKS_ENQUEUED, "resource" => resource.clone())
                        .increment(links.len() as u64);
                    tracing::debug!(links = links.len(), "linked documents enqueued");
                }
                let label = if *written { "done" } else { "skipped" };
                metrics::counter!(metrics::JOBS, "outcome" => label, "resource" => resource)
                    .increment(1);
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
                headers.push(topology::retry_cc(&resource));
                let properties = job::with_headers(&delivery.properties, &headers);
                self.publish(Target::Retry, &delay.label, &delivery.data, properties)
                    .await?;
                metrics::counter!(metrics::JOBS, "outcome" => "retry", "resource" => resource)
                    .increment(1);
                metrics::counter!(metrics::RETRIES, "delay" => delay.label.clone()).increment(1);
            }
            Outcome::Defer { delay } => {
                tracing::debug!(delay = %delay.label, "not due yet; waiting again");
                let properties =
                    job::with_headers(&delivery.properties, &[topology::retry_cc(&resource)]);
                self.publish(Target::Retry, &delay.label, &delivery.data, properties)
                    .await?;
                metrics::counter!(metrics::JOBS, "outcome" => "deferred", "resource" => resource)
                    .increment(1);
            }
            Outcome::Dead {
                kind,
                reason,
                failures,
            } => {
                tracing::warn!(kind = kind.as_str(), %reason, "dead-lettered");
                // The timestamp becomes the time of death, so operators see a dead letter's age.
                let dead_at = delivery
                    .properties
                    .clone()
                    .with_timestamp(job::unix_seconds());
                let properties = job::with_headers(
                    &dead_at,
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
                // Routed by the job's resource when the body names one (a retried delivery's
                // own key is its delay label), so a dead letter's routing key is its resource.
                let routing_key = if resource == UNKNOWN_RESOURCE {
                    delivery.routing_key.as_str()
                } else {
                    resource.as_str()
                };
                self.publish(Target::Dead, routing_key, &delivery.data, properties)
                    .await?;
                metrics::counter!(metrics::JOBS, "outcome" => "dead", "resource" => resource.clone())
                    .increment(1);
                metrics::counter!(metrics::DEAD_LETTERS, "kind" => kind.as_str(), "resource" => resource)
                    .increment(1);
            }
        }
        Ok(())
    }

    /// Publishes to the exchange of `target` until confirmed, within [`settle`]'s bound.
    async fn publish(
        &self,
        target: Target,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), Unsettled> {
        let exchange = match target {
            Target::Retry => self.topology.retry(),
            Target::Dead => self.topology.dead(),
            Target::Jobs => self.topology.jobs(),
        };
        settle::until_confirmed(
            target,
            || {
                broker::publish(
                    &self.publish,
                    &exchange,
                    routing_key,
                    body,
                    properties.clone(),
                )
            },
            || self.redeclare(),
            || self.connection.status().connected() && self.publish.status().connected(),
            &self.handler.shutdown,
            settle::schedule(),
        )
        .await
    }

    /// Declares the topology on a channel of its own, closed afterwards.
    async fn redeclare(&self) -> anyhow::Result<()> {
        let channel = self.connection.create_channel().await?;
        let declared = tokio::time::timeout(DECLARE_TIMEOUT, self.topology.declare(&channel)).await;
        broker::close_channel(&channel).await;
        declared
            .map_err(|_| anyhow::anyhow!("no answer within {DECLARE_TIMEOUT:?}"))?
            .map_err(anyhow::Error::from)
    }
}

/// The `resource` label of a delivery whose body is no job.
const UNKNOWN_RESOURCE: &str = "invalid";

/// Longest wait for the broker to declare the whole topology again.
const DECLARE_TIMEOUT: Duration = Duration::from_secs(10);

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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
