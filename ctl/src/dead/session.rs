//! One connection to the dead queue: letters taken without acknowledging them, then each handed
//! back or removed.

use anyhow::Context;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions};
use lapin::types::ShortString;
use lapin::{Channel, Connection};
use pokeq_shared::broker;
use pokeq_shared::config::Common;
use pokeq_shared::topology::Topology;

use super::letter::Letter;
use crate::inspect;
use crate::probe::{self, ProbeError};

/// One connection to the broker whose dead queue exists, and the names of the topology.
pub(super) struct Session {
    pub(super) connection: Connection,
    pub(super) channel: Channel,
    pub(super) topology: Topology,
}

/// Letters taken and not yet settled, in queue order.
pub(super) struct Held {
    pub(super) letters: Vec<Letter>,
    /// Messages in the dead queue when the first one was taken.
    pub(super) total: u64,
}

impl Session {
    pub(super) async fn open(common: &Common) -> anyhow::Result<Self> {
        let connection = broker::connect(
            common.amqp_url.expose(),
            "pokeq-ctl",
            common.extra_ca.as_deref(),
        )
        .await?;
        // Checked, never declared: a mistyped prefix must read as "nothing there", not create
        // an empty dead queue that lists as "no dead letters".
        let topology = Topology::without_retries(&common.prefix, common.queue_type);
        let vhost = inspect::vhost(common.amqp_url.expose());
        if let Err(error) =
            inspect::require(&connection, &topology.dead(), &common.prefix, &vhost).await
        {
            broker::close(&connection).await;
            return Err(error);
        }
        let channel = connection.create_channel().await?;
        Ok(Self {
            connection,
            channel,
            topology,
        })
    }

    /// A session on the queues as they are, for commands that only read: nothing is declared,
    /// and `None` when the dead queue does not exist.
    pub(super) async fn existing(common: &Common) -> anyhow::Result<Option<Self>> {
        let connection = broker::connect_once(
            common.amqp_url.expose(),
            "pokeq-ctl",
            common.extra_ca.as_deref(),
        )
        .await?;
        let topology = Topology::without_retries(&common.prefix, common.queue_type);
        let channel = connection.create_channel().await?;
        match probe::passive_declare(&channel, &topology.dead()).await {
            Ok(_) => Ok(Some(Self {
                connection,
                channel,
                topology,
            })),
            Err(ProbeError::NotFound) => {
                broker::close(&connection).await;
                Ok(None)
            }
            Err(error) => {
                broker::close(&connection).await;
                Err(error.into())
            }
        }
    }

    /// Takes messages from the dead queue, unacknowledged, until it is empty or `enough`
    /// (called with each new letter) says stop. On an error everything taken is handed back.
    pub(super) async fn take(
        &self,
        mut enough: impl FnMut(&Letter) -> bool,
    ) -> anyhow::Result<Held> {
        let mut held = Held {
            letters: Vec::new(),
            total: 0,
        };
        let queue = self.topology.dead();
        loop {
            let got = self
                .channel
                .basic_get(
                    ShortString::from(queue.as_str()),
                    BasicGetOptions { no_ack: false },
                )
                .await;
            let message = match got {
                Ok(Some(message)) => message,
                Ok(None) => break,
                Err(error) => {
                    give_back(held.letters.iter()).await;
                    return Err(error).with_context(|| format!("reading {queue}"));
                }
            };
            if held.letters.is_empty() {
                held.total = u64::from(message.message_count) + 1;
            }
            let letter = Letter::new(message.delivery);
            let stop = enough(&letter);
            held.letters.push(letter);
            if stop {
                break;
            }
        }
        Ok(held)
    }

    /// Closes the channel first, so that the broker has processed every ack and nack before
    /// this returns (a test or a script reading the queue next sees the final depth).
    pub(super) async fn close(self) {
        broker::close_channel(&self.channel).await;
        broker::close(&self.connection).await;
    }
}

/// Hands letters back to the dead queue. A letter whose channel already closed needs nothing:
/// the broker requeued it then.
pub(super) async fn give_back<'a>(letters: impl Iterator<Item = &'a Letter>) {
    for letter in letters {
        let requeue = BasicNackOptions {
            requeue: true,
            multiple: false,
        };
        if let Err(error) = letter.delivery.acker.nack(requeue).await {
            tracing::warn!(%error, "cannot hand a dead letter back; the broker will on disconnect");
        }
    }
}

/// Removes a letter from the dead queue; an error if the broker cannot have received the ack.
pub(super) async fn remove(letter: &Letter) -> anyhow::Result<()> {
    let acked = letter
        .delivery
        .acker
        .ack(BasicAckOptions::default())
        .await
        .context("acknowledging a dead letter")?;
    anyhow::ensure!(
        acked,
        "the channel closed before a dead letter could be acknowledged"
    );
    Ok(())
}
