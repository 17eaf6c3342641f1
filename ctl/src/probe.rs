//! Exact queue figures now, over AMQP: a *passive* `queue.declare` answers with the queue's
//! ready messages and consumers at this instant, where the management API shows a sample up to
//! a few seconds old.
//!
//! Passive never creates anything: the broker answers a missing queue with a 404 channel error,
//! which reads here as "not declared" (and costs the channel, so a new one is opened).

use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Connection, ErrorKind};
use pokeq_shared::broker::{self, BrokerError, Refusal};
use pokeq_shared::config::{Common, Misconfigured};

use crate::status::Missing;

/// Longest wait for one passive declare: a stalled broker must not stall `status`.
const DECLARE_TIMEOUT: Duration = Duration::from_secs(5);

/// A queue's figures as the broker counts them now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Messages ready for delivery (not those a consumer holds unacknowledged).
    pub ready: u32,
    pub consumers: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The broker has no such queue; it closed the channel asked on.
    #[error("no such queue")]
    NotFound,
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("no answer from RabbitMQ within {0:?} to a passive declare of {1}")]
    Timeout(Duration, String),
}

impl ProbeError {
    /// As a missing part of a report, with the refused setting if that is the cause.
    pub(crate) fn missing(self) -> Missing {
        let misconfigured = match &self {
            ProbeError::Broker(BrokerError::Misconfigured(refused)) => Some(refused.clone()),
            _ => None,
        };
        Missing {
            reason: self.to_string(),
            misconfigured,
        }
    }
}

/// One connection to the broker, for as many probes as a command needs.
pub struct QueueProbe {
    connection: Connection,
    channel: Channel,
}

impl QueueProbe {
    /// Connects once (no retries: an operator waiting for `status` wants the failure now).
    pub async fn open(common: &Common) -> Result<Self, ProbeError> {
        let connection = broker::connect_once(
            common.amqp_url.expose(),
            "pokeq-ctl",
            common.extra_ca.as_deref(),
        )
        .await?;
        let channel = connection
            .create_channel()
            .await
            .map_err(BrokerError::from)?;
        Ok(Self {
            connection,
            channel,
        })
    }

    /// Whether the connection can still be used; a probe that failed otherwise than with a 404
    /// is best replaced.
    pub fn connected(&self) -> bool {
        self.connection.status().connected()
    }

    /// The queue's counts now, `None` if the broker has no such queue.
    pub async fn counts(&mut self, queue: &str) -> Result<Option<Counts>, ProbeError> {
        match passive_declare(&self.channel, queue).await {
            Err(ProbeError::NotFound) => {
                // The broker closed the channel with its answer.
                self.channel = self
                    .connection
                    .create_channel()
                    .await
                    .map_err(BrokerError::from)?;
                Ok(None)
            }
            answer => answer.map(Some),
        }
    }

    pub async fn close(self) {
        broker::close_channel(&self.channel).await;
        broker::close(&self.connection).await;
    }
}

/// A passive declare of `queue` on `channel`: its counts, or [`ProbeError::NotFound`] (after
/// which the channel is closed).
pub async fn passive_declare(channel: &Channel, queue: &str) -> Result<Counts, ProbeError> {
    let declaring = channel.queue_declare(
        ShortString::from(queue),
        QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    );
    match tokio::time::timeout(DECLARE_TIMEOUT, declaring).await {
        Err(_) => Err(ProbeError::Timeout(DECLARE_TIMEOUT, queue.to_owned())),
        Ok(Ok(declared)) => Ok(Counts {
            ready: declared.message_count(),
            consumers: declared.consumer_count(),
        }),
        Ok(Err(error)) if is_not_found(&error) => Err(ProbeError::NotFound),
        Ok(Err(error)) => match broker::refusal(&error) {
            Some((Refusal::AccessRefused, message)) => Err(BrokerError::from(Misconfigured::of(
                "AMQP_URL",
                format!(
                    "RabbitMQ refused to show the queue {queue} ({message}); the user needs \
                     read rights on it"
                ),
            ))
            .into()),
            _ => Err(BrokerError::from(error).into()),
        },
    }
}

/// The broker's "no such queue" (404 NOT_FOUND, a channel error).
fn is_not_found(error: &lapin::Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::ProtocolError(amqp)
            if matches!(amqp.kind(), AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND))
    )
}
