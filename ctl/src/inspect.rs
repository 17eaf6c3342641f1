//! Queues a command needs, checked without declaring anything (a passive declare, see
//! [`crate::probe`]): a missing one is [`MissingQueue`], exit 1.
//!
//! The CLI never declares: a command run with a mistyped `POKEQ_PREFIX` must say that nothing
//! is there, not create an empty pipeline that reads as "all quiet". The producer and the
//! consumers declare what they use.

use lapin::Connection;
use pokeq_shared::broker::{self, BrokerError};

use crate::probe::{self, Counts, ProbeError};

/// A queue the command needs and the broker does not have.
#[derive(Debug, thiserror::Error)]
#[error(
    "queue {queue} does not exist on vhost {vhost} (no producer or consumer has run with \
     POKEQ_PREFIX={prefix} there; check the prefix and AMQP_URL)"
)]
pub struct MissingQueue {
    pub queue: String,
    pub vhost: String,
    pub prefix: String,
}

/// `queue`'s counts now, or `None` if it does not exist. Each call uses a channel of its own,
/// since the broker closes the channel of a passive declare that finds nothing.
pub async fn queue(connection: &Connection, queue: &str) -> Result<Option<Counts>, ProbeError> {
    let channel = connection
        .create_channel()
        .await
        .map_err(BrokerError::from)?;
    match probe::passive_declare(&channel, queue).await {
        Ok(counts) => {
            broker::close_channel(&channel).await;
            Ok(Some(counts))
        }
        Err(ProbeError::NotFound) => Ok(None),
        Err(error) => {
            broker::close_channel(&channel).await;
            Err(error)
        }
    }
}

/// `queue` must exist: [`MissingQueue`] (naming `prefix`) if it does not.
pub async fn require(
    connection: &Connection,
    queue_name: &str,
    prefix: &str,
    vhost: &str,
) -> anyhow::Result<Counts> {
    match queue(connection, queue_name).await? {
        Some(now) => Ok(now),
        None => Err(MissingQueue {
            queue: queue_name.to_owned(),
            vhost: vhost.to_owned(),
            prefix: prefix.to_owned(),
        }
        .into()),
    }
}

/// The vhost an AMQP URL names (`/` when none; the first node's of a list), for messages.
pub fn vhost(amqp_url: &str) -> String {
    let vhost = pokeq_shared::broker::first_address(amqp_url)
        .parse::<lapin::uri::AMQPUri>()
        .map(|uri| uri.vhost)
        .unwrap_or_default();
    if vhost.is_empty() {
        "/".to_owned()
    } else {
        vhost
    }
}
