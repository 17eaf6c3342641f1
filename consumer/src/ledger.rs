//! The dead-letter ledger: what becomes of the jobs the broker dead-letters itself.
//!
//! A consumer marks an item `failed` before it publishes the item's dead letter. RabbitMQ can
//! also dead-letter a job on its own: the quorum jobs queue after `x-delivery-limit`
//! deliveries that were never settled (a job that crashes or stalls every consumer), or a
//! rejection, TTL or length limit someone set up. No pokeq process sees those letters, so
//! their items would stay `queued`, and producer reruns skip `queued` items. The dead-letter
//! exchange therefore copies every letter into `<prefix>.dead.ledger` too, which every consumer
//! reads with a small prefetch:
//!
//! - a letter carrying `x-pokeq-error-kind` was dead-lettered by a consumer, whose item is
//!   already `failed`: acknowledged, nothing else;
//! - a letter the broker dead-lettered (its `x-death` says why) marks its item `failed` with
//!   the broker's reason as `error_kind` (`delivery_limit`, ...), unless the item is `done`,
//!   so that `pokeq status` counts it and `producer --retry-failed` publishes it again;
//! - anything else (a body that is not a job, a message published to the dead-letter exchange
//!   by hand) is acknowledged and logged.
//!
//! The operator's copy stays in `<prefix>.dead`, for `pokeq dead list`, `replay` and `purge`.
//! As everywhere in the consumer, an unavailable database is waited out with the letter
//! unacknowledged.

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection};
use pokeq_shared::exit;
use pokeq_shared::job::{self, ErrorKind, Job};
use pokeq_shared::metrics::{self, Health};
use pokeq_shared::retry;
use pokeq_shared::shutdown::CancellationToken;
use pokeq_shared::store::Store;
use pokeq_shared::topology::{DELIVERY_LIMIT, Topology};

/// Letters held at once: they are rare and cost one statement each.
pub const PREFETCH: u16 = 16;

/// What a ledger letter asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A consumer dead-lettered it and marked its item already.
    Recorded,
    /// The broker dead-lettered this item's job: mark the item failed.
    Failed {
        resource: String,
        id: i32,
        kind: ErrorKind,
        attempts: u32,
        reason: String,
    },
    /// Not a letter pokeq can act on, for the reason given.
    Ignored(String),
}

impl Entry {
    /// Reads a letter: its headers say who dead-lettered it and why, its body which item.
    pub fn of(properties: &BasicProperties, body: &[u8]) -> Self {
        if job::header_text(properties, job::ERROR_KIND_HEADER).is_some() {
            return Entry::Recorded;
        }
        let Some(death) = job::broker_death(properties) else {
            return Entry::Ignored("neither pokeq nor the broker dead-lettered it".into());
        };
        let Some(kind) = ErrorKind::from_broker_reason(&death.reason) else {
            return Entry::Ignored(format!("unknown dead-lettering reason {:?}", death.reason));
        };
        let job = match Job::decode(body) {
            Ok(job) => job,
            Err(error) => return Entry::Ignored(format!("not a job: {error}")),
        };
        let queue = death.queue.as_deref().unwrap_or("the jobs queue");
        let reason = match kind {
            // The broker does not say how often; it gives up on the delivery after the limit
            // pokeq declares on the jobs queue.
            ErrorKind::DeliveryLimit => format!(
                "delivered {} times without being settled (RabbitMQ delivery limit of {queue})",
                DELIVERY_LIMIT + 1
            ),
            _ => format!("dead-lettered by RabbitMQ from {queue}: {}", death.reason),
        };
        Entry::Failed {
            resource: job.resource,
            id: job.id,
            kind,
            attempts: job::attempts(properties),
            reason,
        }
    }
}

/// Reads the ledger for as long as `connection` lives: declares the topology, consumes the
/// ledger queue on a channel of its own, and when that ends otherwise than by `shutdown` (the
/// queue's cluster node went down and the broker cancelled the consumer, someone deleted the
/// queue), declares and consumes again after a wait ([`retry::LEDGER_RESUBSCRIBE`]). A ledger
/// that cannot be read does not stop the jobs: its letters wait in the queue. Returns an error
/// only when the connection is gone or the broker refuses a declaration.
pub async fn keep_consuming(
    connection: &Connection,
    topology: &Topology,
    store: &Store,
    health: &Health,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let mut waits = retry::LEDGER_RESUBSCRIBE.waits();
    // The session declared the topology just before: declaring it again at once would recreate
    // a queue someone deleted since (an operator, or a test replacing a wait queue), so only
    // a second try declares.
    let mut declared = true;
    loop {
        let attempt = async {
            if !declared {
                let skipped = topology.declare_on(connection).await?;
                if skipped.contains(&topology.ledger()) {
                    anyhow::bail!("the ledger queue's node is down");
                }
            }
            let channel = connection.create_channel().await?;
            let consumed = consume(&channel, &topology.ledger(), store, health, shutdown).await;
            pokeq_shared::broker::close_channel(&channel).await;
            consumed
        };
        let error = match attempt.await {
            Ok(()) => return Ok(()),
            Err(error) => error,
        };
        declared = false;
        if shutdown.is_cancelled() {
            return Ok(());
        }
        if !connection.status().connected() || exit::misconfiguration(&error).is_some() {
            return Err(error);
        }
        let wait = waits.next().unwrap_or(retry::LEDGER_RESUBSCRIBE.longest);
        tracing::warn!(
            error = exit::describe(&error),
            ?wait,
            "cannot read the dead-letter ledger; the jobs go on, the ledger is tried again"
        );
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Reads the ledger queue on `channel` until `shutdown`; an error when the delivery stream
/// ends otherwise (the channel or connection closed, the queue was deleted), so that the
/// session reconnects and declares the queue again.
pub async fn consume(
    channel: &Channel,
    queue: &str,
    store: &Store,
    health: &Health,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    channel
        .basic_qos(PREFETCH, BasicQosOptions::default())
        .await?;
    let deliveries = channel
        .basic_consume(
            ShortString::from(queue),
            ShortString::from(""),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut broken = None;
    deliveries
        .take_until(shutdown.cancelled())
        .take_while(|delivery| {
            if let Err(error) = delivery {
                broken = Some(error.to_string());
            }
            std::future::ready(delivery.is_ok())
        })
        .filter_map(|delivery| std::future::ready(delivery.ok()))
        .for_each_concurrent(usize::from(PREFETCH), |delivery| {
            record(delivery, store, health, shutdown)
        })
        .await;
    if shutdown.is_cancelled() {
        return Ok(());
    }
    anyhow::bail!(
        "the ledger's delivery stream ended: {}",
        broken.unwrap_or_else(|| "consumer cancelled or channel closed".into())
    )
}

async fn record(delivery: Delivery, store: &Store, health: &Health, shutdown: &CancellationToken) {
    match Entry::of(&delivery.properties, &delivery.data) {
        Entry::Recorded => {}
        Entry::Ignored(why) => {
            let message_id = delivery
                .properties
                .message_id()
                .as_ref()
                .map(|id| id.to_string());
            tracing::warn!(?message_id, %why, "dead letter ignored by the ledger");
        }
        Entry::Failed {
            resource,
            id,
            kind,
            attempts,
            reason,
        } => {
            let marked = mark_failed(
                store,
                health,
                shutdown,
                (&resource, id),
                kind,
                attempts,
                &reason,
            )
            .await;
            if !marked {
                // Shutdown while the database was away: the next consumer records it.
                let _ = delivery
                    .nack(BasicNackOptions {
                        requeue: true,
                        multiple: false,
                    })
                    .await;
                return;
            }
            tracing::warn!(%resource, id, kind = kind.as_str(), %reason, "the broker dead-lettered a job; item failed");
            metrics::counter!(metrics::DEAD_LETTERS, "kind" => kind.as_str(), "resource" => resource)
                .increment(1);
        }
    }
    // A lost channel loses no letter: the broker redelivers it, and recording it twice is
    // harmless.
    let _ = delivery.ack(BasicAckOptions::default()).await;
}

/// Marks the item failed, waiting out an unavailable database; false if shutdown came first.
async fn mark_failed(
    store: &Store,
    health: &Health,
    shutdown: &CancellationToken,
    (resource, id): (&str, i32),
    kind: ErrorKind,
    attempts: u32,
    reason: &str,
) -> bool {
    let mut backoff = retry::CONSUMER_DATABASE.waits();
    let attempts = i32::try_from(attempts).unwrap_or(i32::MAX);
    loop {
        match store
            .mark_failed(resource, id, kind, attempts, reason)
            .await
        {
            Ok(()) => {
                health.set_database(true);
                return true;
            }
            Err(error) => {
                health.set_database(false);
                let wait = backoff.next().unwrap_or(retry::CONSUMER_DATABASE.longest);
                tracing::warn!(%error, ?wait, id, "database unavailable; the dead letter waits");
                metrics::counter!(metrics::RECONNECTS, "target" => "database").increment(1);
                tokio::select! {
                    () = shutdown.cancelled() => return false,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use lapin::types::{AMQPValue, FieldArray, LongString};

    use super::*;

    fn text(value: &str) -> AMQPValue {
        AMQPValue::LongString(LongString::from(value))
    }

    fn death(queue: &str, reason: &str) -> AMQPValue {
        let mut table = FieldTable::default();
        table.insert("queue".into(), text(queue));
        table.insert("reason".into(), text(reason));
        table.insert("count".into(), AMQPValue::LongLongInt(1));
        AMQPValue::FieldTable(table)
    }

    /// A job as the broker dead-letters it: after a wait in a retry queue (which leaves an
    /// `expired` entry) and then from the jobs queue for `reason`, newest entry first.
    fn broker_dead(reason: &str) -> BasicProperties {
        let headers = [
            (job::ATTEMPTS_HEADER, AMQPValue::LongInt(2)),
            (
                job::DEATH_HEADER,
                AMQPValue::FieldArray(FieldArray::from(vec![
                    death("p.jobs", reason),
                    death("p.retry.1s", "expired"),
                ])),
            ),
        ];
        job::with_headers(&Job::new(7, "squirtle").properties(), &headers)
    }

    #[test]
    fn a_delivery_limit_letter_fails_its_item_with_that_kind() {
        let body = Job::new(7, "squirtle").encode();
        assert_eq!(
            Entry::of(&broker_dead("delivery_limit"), &body),
            Entry::Failed {
                resource: "pokemon".into(),
                id: 7,
                kind: ErrorKind::DeliveryLimit,
                attempts: 2,
                reason: "delivered 21 times without being settled (RabbitMQ delivery limit of \
                         p.jobs)"
                    .into(),
            }
        );
        let Entry::Failed { kind, reason, .. } = Entry::of(&broker_dead("rejected"), &body) else {
            panic!("a rejected job fails its item");
        };
        assert_eq!(kind, ErrorKind::Rejected);
        assert_eq!(reason, "dead-lettered by RabbitMQ from p.jobs: rejected");
    }

    #[test]
    fn letters_pokeq_dead_lettered_are_only_acknowledged() {
        let properties = job::with_headers(
            &broker_dead("expired"),
            &[(job::ERROR_KIND_HEADER, text("exhausted"))],
        );
        let body = Job::new(7, "squirtle").encode();
        assert_eq!(Entry::of(&properties, &body), Entry::Recorded);
    }

    #[test]
    fn what_is_not_a_broker_dead_letter_of_a_job_is_ignored() {
        let body = Job::new(7, "squirtle").encode();
        let plain = Job::new(7, "squirtle").properties();
        assert!(matches!(Entry::of(&plain, &body), Entry::Ignored(_)));
        let garbage = Entry::of(&broker_dead("delivery_limit"), b"not a job");
        assert!(matches!(garbage, Entry::Ignored(why) if why.contains("not a job")));
        let odd = Entry::of(&broker_dead("shovelled"), &body);
        assert!(matches!(odd, Entry::Ignored(why) if why.contains("shovelled")));
    }
}
