//! The RabbitMQ names and arguments of the contract, described once as data.
//!
//! The producer and the consumers declare these [`Declaration`]s at start (declaring is
//! idempotent as long as the arguments are identical; the producer leaves out the retry part,
//! which only consumers use), and the deployment's `definitions.json` is checked against the
//! same list, so code and broker configuration cannot drift apart. The CLI declares nothing:
//! it reads with passive declares and the management API.

use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, Connection};
use serde_json::{Value, json};

use crate::broker::{BrokerError, Refusal, refusal};
use crate::config::{Misconfigured, QueueType, format_duration, parse_duration};

/// Deliveries of one message before a quorum jobs queue dead-letters it: the guard against a
/// message that crashes every consumer that takes it. Matches RabbitMQ 4's default.
pub const DELIVERY_LIMIT: i64 = 20;

/// Most letters the dead-letter ledger holds before it drops its oldest. Consumers empty it as
/// letters come, so it only fills while none runs that reads it (a rolling upgrade from a
/// version without it): the bound keeps that from growing without limit, and a letter dropped
/// costs no item, which stays `queued` until a producer run republishes it (`--requeue-after`).
pub const LEDGER_MAX_LENGTH: i64 = 100_000;

/// One wait queue's delay, with the label that names its queue (`5s` → `<prefix>.retry.5s`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delay {
    pub duration: Duration,
    pub label: String,
}

impl Delay {
    pub fn new(duration: Duration) -> Self {
        Self {
            duration,
            label: format_duration(duration),
        }
    }
}

/// The retry schedule: the n-th transient failure of a job waits `delays[n-1]` (the last delay
/// repeats), and never less than the API's `Retry-After`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryDelays(Vec<Delay>);

impl RetryDelays {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut delays = Vec::new();
        for part in text.split(',') {
            let duration = parse_duration(part)?;
            if duration.is_zero() {
                return Err(format!("{part:?}: a retry delay must be longer than zero"));
            }
            if duration > Duration::from_secs(24 * 3600) {
                return Err(format!("{part:?}: a retry delay is at most 24h"));
            }
            delays.push(Delay::new(duration));
        }
        delays.sort_by_key(|d| d.duration);
        delays.dedup();
        if delays.is_empty() {
            return Err("at least one retry delay is needed".into());
        }
        Ok(Self(delays))
    }

    pub fn all(&self) -> &[Delay] {
        &self.0
    }

    /// Delay before try number `failures + 1`, given `failures` transient failures so far (≥ 1)
    /// and the wait the API asked for: the scheduled delay, or the shortest one that covers
    /// `retry_after` (the longest there is if none does).
    pub fn next(&self, failures: u32, retry_after: Option<Duration>) -> &Delay {
        let index = (failures.max(1) as usize - 1).min(self.0.len() - 1);
        let scheduled = &self.0[index];
        match retry_after {
            Some(wanted) if wanted > scheduled.duration => self.covering(wanted),
            _ => scheduled,
        }
    }

    /// The shortest delay of at least `wait`, or the longest there is. A wait longer than every
    /// delay is served in several hops (see `NOT_BEFORE_HEADER` in [`crate::job`]).
    pub fn covering(&self, wait: Duration) -> &Delay {
        self.0
            .iter()
            .find(|d| d.duration >= wait)
            .unwrap_or(&self.0[self.0.len() - 1])
    }
}

impl Default for RetryDelays {
    fn default() -> Self {
        // The contract's default `--retry-delays 1s,5s,30s,2m,10m`.
        Self(
            [1, 5, 30, 120, 600]
                .into_iter()
                .map(|s| Delay::new(Duration::from_secs(s)))
                .collect(),
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeKind {
    Direct,
    Fanout,
}

impl ExchangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeKind::Direct => "direct",
            ExchangeKind::Fanout => "fanout",
        }
    }
}

/// One thing to declare, with its arguments as JSON so the same value can be compared with a
/// RabbitMQ definitions file. Every exchange and queue is durable and never auto-deleted.
#[derive(Debug, Clone, PartialEq)]
pub enum Declaration {
    Exchange {
        name: String,
        kind: ExchangeKind,
    },
    Queue {
        name: String,
        arguments: serde_json::Map<String, Value>,
    },
    Binding {
        exchange: String,
        queue: String,
        routing_key: String,
    },
}

/// The names and arguments for one prefix, queue type and retry schedule.
#[derive(Debug, Clone)]
pub struct Topology {
    pub prefix: String,
    pub queue_type: QueueType,
    /// The wait queues to declare; `None` for a publisher, which never sends to them.
    pub delays: Option<RetryDelays>,
}

impl Topology {
    /// What a consumer declares: the work, the dead letters and the wait queues of its delays.
    pub fn new(prefix: &str, queue_type: QueueType, delays: RetryDelays) -> Self {
        Self {
            prefix: prefix.to_owned(),
            queue_type,
            delays: Some(delays),
        }
    }

    /// What a publisher of jobs declares: the jobs exchange and queue, and the dead letters the
    /// jobs queue's dead-letter exchange needs, but neither the retry exchange nor any wait
    /// queue. Wait queues belong to the consumers whose `--retry-delays` name them; a producer
    /// declaring the default ones would leave five durable queues nobody uses whenever the
    /// consumers run with other delays.
    pub fn without_retries(prefix: &str, queue_type: QueueType) -> Self {
        Self {
            prefix: prefix.to_owned(),
            queue_type,
            delays: None,
        }
    }

    /// Exchange and queue of the work; jobs are routed by resource kind.
    pub fn jobs(&self) -> String {
        format!("{}.jobs", self.prefix)
    }

    /// Exchange that routes a retried job to the wait queue of its delay.
    pub fn retry(&self) -> String {
        format!("{}.retry", self.prefix)
    }

    pub fn retry_queue(&self, delay: &Delay) -> String {
        format!("{}.retry.{}", self.prefix, delay.label)
    }

    /// The delay label of a wait queue's name (`<prefix>.retry.5s` → `5s`); `None` for any
    /// other name.
    pub fn retry_label<'a>(&self, queue: &'a str) -> Option<&'a str> {
        queue
            .strip_prefix(&self.prefix)?
            .strip_prefix(".retry.")
            .filter(|label| !label.is_empty())
    }

    /// Fanout exchange and queue of dead letters.
    pub fn dead(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    /// Queue that gets a copy of every dead letter, for consumers to record the letters the
    /// broker dead-lettered itself (pokeq never sees those otherwise). Operators work on
    /// [`Topology::dead`] alone; this one is pokeq's bookkeeping.
    pub fn ledger(&self) -> String {
        format!("{}.dead.ledger", self.prefix)
    }

    pub fn declarations(&self) -> Vec<Declaration> {
        let mut jobs_args = serde_json::Map::new();
        jobs_args.insert("x-queue-type".into(), json!(self.queue_type.as_str()));
        jobs_args.insert("x-dead-letter-exchange".into(), json!(self.dead()));
        if self.queue_type == QueueType::Quorum {
            jobs_args.insert("x-delivery-limit".into(), json!(DELIVERY_LIMIT));
        }
        // The dead queue is classic whatever the jobs queue is: an operator lists and replays
        // dead letters by taking and returning them, and RabbitMQ 4 gives every quorum queue a
        // delivery limit that would silently drop a dead letter after enough listings.
        let mut dead_args = serde_json::Map::new();
        dead_args.insert("x-queue-type".into(), json!("classic"));
        // Classic for the same reason; bounded, dropping its oldest letter when full (a full
        // queue that refused publishes would make the dead letters themselves fail).
        let mut ledger_args = dead_args.clone();
        ledger_args.insert("x-max-length".into(), json!(LEDGER_MAX_LENGTH));
        ledger_args.insert("x-overflow".into(), json!("drop-head"));

        let mut list = vec![
            Declaration::Exchange {
                name: self.dead(),
                kind: ExchangeKind::Fanout,
            },
            Declaration::Queue {
                name: self.dead(),
                arguments: dead_args,
            },
            Declaration::Binding {
                exchange: self.dead(),
                queue: self.dead(),
                routing_key: String::new(),
            },
            Declaration::Queue {
                name: self.ledger(),
                arguments: ledger_args,
            },
            Declaration::Binding {
                exchange: self.dead(),
                queue: self.ledger(),
                routing_key: String::new(),
            },
            Declaration::Exchange {
                name: self.jobs(),
                kind: ExchangeKind::Direct,
            },
            Declaration::Queue {
                name: self.jobs(),
                arguments: jobs_args,
            },
        ];
        // One jobs queue for every resource, bound once per resource key: one prefetch and one
        // pool of consumers share the work whatever its mix, which changes over a crawl (pokemon
        // first, then the documents they link to).
        list.extend(
            crate::resources::names().map(|resource| Declaration::Binding {
                exchange: self.jobs(),
                queue: self.jobs(),
                routing_key: resource.to_owned(),
            }),
        );
        let Some(delays) = &self.delays else {
            return list;
        };
        list.push(Declaration::Exchange {
            name: self.retry(),
            kind: ExchangeKind::Direct,
        });
        for delay in delays.all() {
            // Wait queues are classic: a message only sits out its TTL there, and classic queues
            // take per-queue TTL with dead-lettering on every RabbitMQ version pokeq supports.
            let mut args = serde_json::Map::new();
            args.insert("x-queue-type".into(), json!("classic"));
            args.insert(
                "x-message-ttl".into(),
                json!(delay.duration.as_millis() as u64),
            );
            // No `x-dead-letter-routing-key`: an expired job goes back with the keys it was
            // published with, its delay label (bound to nothing in the jobs exchange) and, in its
            // `CC` header, its resource (see [`retry_cc`]), so every resource comes back to the
            // jobs queue by its own key.
            args.insert("x-dead-letter-exchange".into(), json!(self.jobs()));
            list.push(Declaration::Queue {
                name: self.retry_queue(delay),
                arguments: args,
            });
            list.push(Declaration::Binding {
                exchange: self.retry(),
                queue: self.retry_queue(delay),
                routing_key: delay.label.clone(),
            });
        }
        list
    }

    /// Declares everything, in an order where each binding's ends already exist. A declaration
    /// the broker refuses (one that differs from what exists, or one the user has no right to)
    /// is [`BrokerError::Misconfigured`], naming the setting to change.
    pub async fn declare(&self, channel: &Channel) -> Result<(), BrokerError> {
        for declaration in self.declarations() {
            declare_one(channel, &declaration).await.map_err(|error| {
                match self.refused(&declaration, &error) {
                    Some(refused) => BrokerError::Misconfigured(refused),
                    None => BrokerError::Amqp(error),
                }
            })?;
        }
        Ok(())
    }

    /// Declares everything, as [`Topology::declare`] does, on channels of its own over
    /// `connection`, but goes on past a classic queue that lives on a cluster node which is
    /// down: RabbitMQ then answers the declare with `NOT_FOUND` ("home node ... of durable
    /// queue ... is down or inaccessible") and closes the channel. Such a queue (the dead
    /// letters, the ledger, a wait queue) is not replicated, so it comes back with its node;
    /// meanwhile jobs flow through the quorum jobs queue, which the other nodes serve. The
    /// jobs queue itself is never skipped. Returns the names of the queues skipped (their
    /// bindings are skipped too), each also logged.
    pub async fn declare_on(&self, connection: &Connection) -> Result<Vec<String>, BrokerError> {
        let mut channel = connection.create_channel().await?;
        let mut skipped: Vec<String> = Vec::new();
        for declaration in self.declarations() {
            if let Declaration::Binding { queue, .. } = &declaration
                && skipped.contains(queue)
            {
                continue;
            }
            let Err(error) = declare_one(&channel, &declaration).await else {
                continue;
            };
            match &declaration {
                Declaration::Queue { name, .. } if *name != self.jobs() && node_down(&error) => {
                    tracing::warn!(queue = %name, %error, "queue unavailable (its RabbitMQ node is down); going on without it");
                    skipped.push(name.clone());
                    channel = connection.create_channel().await?;
                }
                _ => {
                    return Err(match self.refused(&declaration, &error) {
                        Some(refused) => BrokerError::Misconfigured(refused),
                        None => BrokerError::Amqp(error),
                    });
                }
            }
        }
        crate::broker::close_channel(&channel).await;
        Ok(skipped)
    }

    /// What a refused `declaration` means for the settings, or `None` if `error` is no refusal.
    fn refused(&self, declaration: &Declaration, error: &lapin::Error) -> Option<Misconfigured> {
        let (refusal, message) = refusal(error)?;
        let (what, name) = match declaration {
            Declaration::Exchange { name, .. } => ("exchange", name),
            Declaration::Queue { name, .. } => ("queue", name),
            Declaration::Binding { queue, .. } => ("binding of queue", queue),
        };
        Some(match refusal {
            // Only the jobs queue's type is a setting. RabbitMQ names one argument that differs,
            // not necessarily the type, so the advice covers both.
            Refusal::PreconditionFailed if *name == self.jobs() => Misconfigured::new(
                "POKEQ_QUEUE_TYPE",
                self.queue_type.as_str(),
                format!(
                    "{what} {name} exists with other arguments than pokeq's {} jobs queue \
                     ({message}); if it is of the other type, set POKEQ_QUEUE_TYPE to match it, \
                     else use another POKEQ_PREFIX or delete the queue (with its messages)",
                    self.queue_type.as_str()
                ),
            ),
            Refusal::PreconditionFailed => Misconfigured::new(
                "POKEQ_PREFIX",
                &self.prefix,
                format!(
                    "{what} {name} exists with other arguments than pokeq declares ({message}); \
                     use another POKEQ_PREFIX, or delete it (with its messages) if it is left \
                     from another version or application"
                ),
            ),
            Refusal::AccessRefused | Refusal::NotAllowed => Misconfigured::of(
                "AMQP_URL",
                format!(
                    "the broker's user may not declare {what} {name} ({message}); grant it \
                     configure, write and read rights on names starting with {}.",
                    self.prefix
                ),
            ),
        })
    }

    /// Every queue of this topology, for tools that report depths or clean up.
    pub fn queues(&self) -> Vec<String> {
        self.declarations()
            .into_iter()
            .filter_map(|d| match d {
                Declaration::Queue { name, .. } => Some(name),
                _ => None,
            })
            .collect()
    }
}

/// Whether `error` answers a queue declare for a queue whose node is down: `NOT_FOUND`, the
/// only refusal a non-passive declare gets for a queue that exists on a node it cannot reach.
fn node_down(error: &lapin::Error) -> bool {
    matches!(
        error.kind(),
        lapin::ErrorKind::ProtocolError(amqp)
            if matches!(amqp.kind(), AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND))
    )
}

async fn declare_one(channel: &Channel, declaration: &Declaration) -> Result<(), lapin::Error> {
    match declaration {
        Declaration::Exchange { name, kind } => {
            let kind = match kind {
                ExchangeKind::Direct => lapin::ExchangeKind::Direct,
                ExchangeKind::Fanout => lapin::ExchangeKind::Fanout,
            };
            channel
                .exchange_declare(
                    ShortString::from(name.as_str()),
                    kind,
                    ExchangeDeclareOptions {
                        durable: true,
                        ..ExchangeDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await
        }
        Declaration::Queue { name, arguments } => channel
            .queue_declare(
                ShortString::from(name.as_str()),
                QueueDeclareOptions::durable(),
                field_table(arguments),
            )
            .await
            .map(drop),
        Declaration::Binding {
            exchange,
            queue,
            routing_key,
        } => {
            channel
                .queue_bind(
                    ShortString::from(queue.as_str()),
                    ShortString::from(exchange.as_str()),
                    ShortString::from(routing_key.as_str()),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
        }
    }
}

/// The `CC` header a retried job is published with: its resource, as an extra routing key. The
/// retry exchange routes by the delay label (the resource key is bound to nothing there); when
/// the wait queue expires the job, RabbitMQ dead-letters it with all its routing keys, CC
/// included, and the jobs exchange routes it by the resource.
pub fn retry_cc(resource: &str) -> (&'static str, AMQPValue) {
    (
        "CC",
        AMQPValue::FieldArray(vec![AMQPValue::LongString(LongString::from(resource))].into()),
    )
}

fn field_table(arguments: &serde_json::Map<String, Value>) -> FieldTable {
    let mut table = FieldTable::default();
    for (key, value) in arguments {
        let value = match value {
            Value::String(text) => AMQPValue::LongString(LongString::from(text.as_str())),
            Value::Number(n) => AMQPValue::LongLongInt(n.as_i64().unwrap_or_default()),
            Value::Bool(b) => AMQPValue::Boolean(*b),
            _ => continue,
        };
        table.insert(ShortString::from(key.as_str()), value);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_parse_sort_and_label() {
        let delays = RetryDelays::parse("30s,1s,2m,5s,10m").unwrap();
        let labels: Vec<_> = delays.all().iter().map(|d| d.label.as_str()).collect();
        assert_eq!(labels, ["1s", "5s", "30s", "2m", "10m"]);
        assert_eq!(delays, RetryDelays::default());
        assert!(RetryDelays::parse("0s").is_err());
        assert!(RetryDelays::parse("1s,,2s").is_err());
    }

    #[test]
    fn next_delay_follows_schedule_and_honours_retry_after() {
        let delays = RetryDelays::default();
        assert_eq!(delays.next(1, None).label, "1s");
        assert_eq!(delays.next(3, None).label, "30s");
        assert_eq!(delays.next(99, None).label, "10m");
        assert_eq!(delays.next(1, Some(Duration::from_secs(3))).label, "5s");
        assert_eq!(delays.next(4, Some(Duration::from_secs(3))).label, "2m");
        assert_eq!(delays.next(1, Some(Duration::from_secs(7200))).label, "10m");
    }

    #[test]
    fn names_start_with_the_prefix() {
        let topology = Topology::new("acme", QueueType::Quorum, RetryDelays::default());
        assert_eq!(topology.jobs(), "acme.jobs");
        assert_eq!(topology.dead(), "acme.dead");
        assert_eq!(topology.ledger(), "acme.dead.ledger");
        let queues = topology.queues();
        assert!(queues.contains(&"acme.retry.5s".to_owned()));
        assert!(
            topology.declarations().contains(&Declaration::Binding {
                exchange: "acme.dead".into(),
                queue: "acme.dead.ledger".into(),
                routing_key: String::new(),
            }),
            "every dead letter is copied to the ledger"
        );
        assert!(queues.iter().all(|q| q.starts_with("acme.")));
        assert_eq!(topology.retry_label("acme.retry.5s"), Some("5s"));
        assert_eq!(topology.retry_label("acme.retry."), None);
        assert_eq!(topology.retry_label("acme.jobs"), None);
        assert_eq!(topology.retry_label("acmex.retry.5s"), None);
    }

    #[test]
    fn a_publisher_declares_no_retry_exchange_or_wait_queue() {
        let topology = Topology::without_retries("acme", QueueType::Quorum);
        assert_eq!(
            topology.queues(),
            ["acme.dead", "acme.dead.ledger", "acme.jobs"]
        );
        let retry = topology.retry();
        assert!(
            !topology
                .declarations()
                .iter()
                .any(|d| matches!(d, Declaration::Exchange { name, .. } if *name == retry)),
            "{:?}",
            topology.declarations()
        );
    }
}
