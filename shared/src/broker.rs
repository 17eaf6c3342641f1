//! RabbitMQ connections and confirmed publishing.

use std::time::Duration;

use backon::Retryable;
use lapin::Confirmation;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};
use lapin::types::{LongString, ShortString};
use lapin::uri::AMQPUri;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

use crate::config::{Misconfigured, mask_url};

/// Longest wait for one TCP + AMQP handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest AMQP frame asked for, unless the URL sets `frame_max`. lapin keeps 32 frames in each
/// of its read and write buffers, so RabbitMQ's default of 128 KiB would cost 8 MiB per
/// connection; jobs are a few hundred bytes, and their headers (dead-letter reasons, `x-death`)
/// a few KiB.
const FRAME_MAX: u32 = 32 * 1024;
/// Longest wait for the broker to answer a connection close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait for the broker to confirm one publish.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot connect to RabbitMQ at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("RabbitMQ error: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("the broker refused (nacked) a publish to {exchange} {routing_key}")]
    Nacked {
        exchange: String,
        routing_key: String,
    },
    #[error("the broker returned an unroutable publish to {exchange} {routing_key}: {reply}")]
    Returned {
        exchange: String,
        routing_key: String,
        reply: String,
    },
    #[error("no confirm from the broker within {0:?}")]
    ConfirmTimeout(Duration),
    /// RabbitMQ refused a setting: retrying cannot help, the binary exits 2.
    #[error(transparent)]
    Misconfigured(#[from] Misconfigured),
}

impl BrokerError {
    /// Whether RabbitMQ refused a setting rather than failed: not worth a retry.
    pub fn is_misconfigured(&self) -> bool {
        matches!(self, BrokerError::Misconfigured(_))
    }
}

/// A refusal that waiting does not change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `ACCESS_REFUSED`: a login with a wrong user or password, or rights the user lacks.
    AccessRefused,
    /// `NOT_ALLOWED`: a vhost that does not exist or that the user may not use.
    NotAllowed,
    /// `PRECONDITION_FAILED`: on a declare, a queue or exchange that exists with other
    /// arguments or type.
    PreconditionFailed,
}

/// The refusal in `error`, with the broker's message, or `None` for anything else (I/O errors,
/// timeouts, a broker shutting down), which an outage explains. RabbitMQ closes the connection
/// or the channel with these codes. lapin 4 reports them all as protocol errors, a refused login
/// included (seen against RabbitMQ 3.10: `ACCESS_REFUSED - Login was refused using
/// authentication mechanism PLAIN`), because it asks for `authentication_failure_close`; without
/// that capability the broker would drop the socket and a bad password would look like an
/// outage.
pub fn refusal(error: &lapin::Error) -> Option<(Refusal, String)> {
    let lapin::ErrorKind::ProtocolError(amqp) = error.kind() else {
        return None;
    };
    let refusal = match amqp.kind() {
        AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED) => Refusal::AccessRefused,
        AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED) => Refusal::NotAllowed,
        AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED) => Refusal::PreconditionFailed,
        _ => return None,
    };
    Some((refusal, amqp.get_message().to_string()))
}

/// What a refusal of the connection itself means for `AMQP_URL` (`url`), or `None` if `error`
/// is no refusal.
fn refused_connection(url: &str, error: &lapin::Error) -> Option<Misconfigured> {
    let (refusal, message) = refusal(error)?;
    let reason = match refusal {
        Refusal::AccessRefused => {
            format!("RabbitMQ refused the login ({message}); check the user name and password")
        }
        Refusal::NotAllowed => format!(
            "RabbitMQ refused the virtual host ({message}); check that the vhost (the URL's \
             path, %2f for /) exists and that the user has rights on it"
        ),
        Refusal::PreconditionFailed => format!("RabbitMQ refused the connection ({message})"),
    };
    Some(Misconfigured::new("AMQP_URL", url, reason))
}

/// The broker addresses of an `AMQP_URL`: one URL, or the comma-separated URLs of a cluster's
/// nodes (checked by [`crate::config::validate_amqp_urls`]), trimmed.
pub fn addresses(list: &str) -> Vec<&str> {
    list.split(',')
        .map(str::trim)
        .filter(|address| !address.is_empty())
        .collect()
}

/// The address `pokeq` reads the virtual host and the login from (the first of the list: all
/// have the same ones).
pub fn first_address(list: &str) -> &str {
    addresses(list).first().copied().unwrap_or(list)
}

/// The order in which one process tries a list of nodes, and where the next try starts. The
/// order is shuffled once per process, so that consumers started together spread over the
/// nodes instead of all landing on the first; a try starts at the node after the one connected
/// to last, so that a process that lost its node goes to another one first instead of waiting
/// for the lost one (which may hang, not refuse, until it is back).
struct Rotation {
    order: Vec<usize>,
    next: usize,
}

/// The [`Rotation`] of every list this process connects with, by the list's text.
static ROTATIONS: std::sync::Mutex<Vec<(String, Rotation)>> = std::sync::Mutex::new(Vec::new());

/// The addresses of `list` in the order to try them now.
fn order_of_tries<'a>(list: &str, addresses: &[&'a str]) -> Vec<(usize, &'a str)> {
    let mut rotations = ROTATIONS.lock().unwrap_or_else(|e| e.into_inner());
    let index = match rotations.iter().position(|(text, _)| text == list) {
        Some(index) => index,
        None => {
            let mut order: Vec<usize> = (0..addresses.len()).collect();
            rand::seq::SliceRandom::shuffle(order.as_mut_slice(), &mut rand::rng());
            rotations.push((list.to_owned(), Rotation { order, next: 0 }));
            rotations.len() - 1
        }
    };
    let rotation = &rotations[index].1;
    (0..addresses.len())
        .map(|k| (rotation.next + k) % addresses.len())
        .map(|position| (position, addresses[rotation.order[position]]))
        .collect()
}

/// Records that `list` connected at `position` of its order: the next try starts after it.
fn connected_at(list: &str, position: usize) {
    let mut rotations = ROTATIONS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, rotation)) = rotations.iter_mut().find(|(text, _)| text == list) {
        rotation.next = (position + 1) % rotation.order.len().max(1);
    }
}

/// Connects once, within [`CONNECT_TIMEOUT`] per node. An `amqps://` URL is verified against
/// the system's roots plus `extra_ca` (PEM). The error shows the URL with its password masked;
/// a refused login or vhost is [`BrokerError::Misconfigured`].
///
/// `url` may list several nodes of a cluster, comma-separated ([`addresses`]): they are tried
/// one after the other, in this process's order ([`Rotation`]), starting after the node
/// connected to last, until one connects. A node that refuses the login or the vhost does not
/// stop the others from being tried (a node still starting can refuse its vhost); if none
/// connects, that refusal is the error, else a [`BrokerError::Connect`] naming every node.
pub async fn connect_once(
    url: &str,
    name: &str,
    extra_ca: Option<&str>,
) -> Result<Connection, BrokerError> {
    connect_once_with(url, name, &[], extra_ca).await
}

/// [`connect_once`], also sending `client_properties` in the handshake: the broker keeps them
/// with the connection and its management API shows them, which is how `pokeq workers` learns
/// what each consumer is.
pub async fn connect_once_with(
    url: &str,
    name: &str,
    client_properties: &[(&str, String)],
    extra_ca: Option<&str>,
) -> Result<Connection, BrokerError> {
    let addresses = addresses(url);
    if addresses.len() <= 1 {
        return connect_node(url.trim(), name, client_properties, extra_ca).await;
    }
    let mut refused = None;
    let mut failures = Vec::with_capacity(addresses.len());
    for (position, address) in order_of_tries(url, &addresses) {
        match connect_node(address, name, client_properties, extra_ca).await {
            Ok(connection) => {
                connected_at(url, position);
                tracing::info!(node = %mask_url(address), "connected to RabbitMQ");
                return Ok(connection);
            }
            Err(error @ BrokerError::Misconfigured(_)) => {
                tracing::warn!(node = %mask_url(address), %error, "RabbitMQ node refused the connection");
                refused.get_or_insert(error);
            }
            Err(BrokerError::Connect { url, reason }) => failures.push(format!("{url}: {reason}")),
            Err(error) => failures.push(format!("{}: {error}", mask_url(address))),
        }
    }
    Err(refused.unwrap_or_else(|| BrokerError::Connect {
        url: mask_url(url),
        reason: format!("no node answered ({})", failures.join("; ")),
    }))
}

/// [`connect_once_with`] to one node.
async fn connect_node(
    url: &str,
    name: &str,
    client_properties: &[(&str, String)],
    extra_ca: Option<&str>,
) -> Result<Connection, BrokerError> {
    let properties = client_properties.iter().fold(
        ConnectionProperties::default().with_connection_name(LongString::from(name.to_owned())),
        |properties, (key, value)| {
            properties
                .with_client_property(ShortString::from(*key), LongString::from(value.as_str()))
        },
    );
    let failed = |reason: String| BrokerError::Connect {
        url: mask_url(url),
        reason,
    };
    let tls = lapin::tcp::OwnedTLSConfig {
        identity: None,
        cert_chain: extra_ca.map(str::to_owned),
    };
    let mut uri: AMQPUri = url
        .parse()
        .map_err(|_| failed("not an AMQP URL".to_owned()))?;
    uri.query.frame_max.get_or_insert(FRAME_MAX);
    let runtime = lapin::runtime::default_runtime().map_err(|e| failed(e.to_string()))?;
    let connecting = Connection::connect_uri_with_config(uri, properties, tls, runtime);
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(error)) => Err(match refused_connection(url, &error) {
            Some(refused) => refused.into(),
            None => failed(error.to_string()),
        }),
        Err(_) => Err(failed(format!("no answer within {CONNECT_TIMEOUT:?}"))),
    }
}

/// Closes `channel` politely, within [`CLOSE_TIMEOUT`]. Closing channels before their connection
/// keeps lapin from closing them on drop while the connection closes.
pub async fn close_channel(channel: &Channel) {
    let closing = channel.close(200, ShortString::from("done"));
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, closing).await;
}

/// Closes `connection` politely, within [`CLOSE_TIMEOUT`]. The broker answers a close at once
/// as a rule, but a close racing a channel's own close was seen to go unanswered for 30 s (a
/// consumer stopping after its grace period, in the chaos suite). Past the timeout the process
/// goes on and the socket is dropped: the broker then requeues whatever was unacknowledged,
/// just as after a clean close.
pub async fn close(connection: &Connection) {
    let closing = connection.close(200, ShortString::from("done"));
    if tokio::time::timeout(CLOSE_TIMEOUT, closing).await.is_err() {
        tracing::warn!(timeout = ?CLOSE_TIMEOUT, "RabbitMQ did not answer the close; dropping the connection");
    }
}

/// Connects, retrying for about a minute ([`crate::retry::BROKER_CONNECT`]): a broker that is
/// still starting (compose, Kubernetes) is a normal condition, not a failure. A refused login or
/// vhost is returned at once.
pub async fn connect(
    url: &str,
    name: &str,
    extra_ca: Option<&str>,
) -> Result<Connection, BrokerError> {
    (|| connect_once(url, name, extra_ca))
        .retry(crate::retry::BROKER_CONNECT)
        .when(|error| !error.is_misconfigured())
        .notify(|error, wait| tracing::warn!(%error, ?wait, "RabbitMQ not reachable yet"))
        .await
}

/// A channel with publisher confirms on.
pub async fn confirm_channel(connection: &Connection) -> Result<Channel, BrokerError> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok(channel)
}

/// Publishes one message as mandatory and waits for its confirm: `Ok` means the broker has the
/// message in a queue. A nack, a return (no queue bound) or a timeout is an error, so the caller
/// keeps the original until this returns `Ok`.
pub async fn publish(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
) -> Result<(), BrokerError> {
    let confirm = channel
        .basic_publish(
            ShortString::from(exchange),
            ShortString::from(routing_key),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            body,
            properties,
        )
        .await?;
    let confirmation = tokio::time::timeout(CONFIRM_TIMEOUT, confirm)
        .await
        .map_err(|_| BrokerError::ConfirmTimeout(CONFIRM_TIMEOUT))??;
    check(confirmation, exchange, routing_key)
}

/// Turns a confirmation into `Ok` only for an ack of a routed message.
pub fn check(
    confirmation: Confirmation,
    exchange: &str,
    routing_key: &str,
) -> Result<(), BrokerError> {
    match confirmation {
        Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
        Confirmation::Ack(Some(returned)) => Err(BrokerError::Returned {
            exchange: exchange.to_owned(),
            routing_key: routing_key.to_owned(),
            reply: returned.reply_text.to_string(),
        }),
        Confirmation::Nack(_) => Err(BrokerError::Nacked {
            exchange: exchange.to_owned(),
            routing_key: routing_key.to_owned(),
        }),
    }
}

/// A confirm channel with the topology declared, reconnected on demand: a publisher asks for
/// the channel before each batch and gets a live one, so a broker restart costs a retry, not
/// the run.
pub struct Link {
    url: String,
    name: String,
    topology: crate::topology::Topology,
    extra_ca: Option<String>,
    state: tokio::sync::Mutex<Option<(Connection, Channel)>>,
}

impl Link {
    pub fn new(
        url: &str,
        name: &str,
        topology: crate::topology::Topology,
        extra_ca: Option<&str>,
    ) -> Self {
        Self {
            url: url.to_owned(),
            name: name.to_owned(),
            topology,
            extra_ca: extra_ca.map(str::to_owned),
            state: tokio::sync::Mutex::new(None),
        }
    }

    /// Takes `connection` (made with [`connect`], which waits for a broker that is still
    /// starting) as the first one, opening its channel and declaring the topology.
    pub async fn adopt(&self, connection: Connection) -> Result<Channel, BrokerError> {
        self.topology.declare_on(&connection).await?;
        let channel = confirm_channel(&connection).await?;
        *self.state.lock().await = Some((connection, channel.clone()));
        Ok(channel)
    }

    /// A connected channel: the current one, or a new connection if it is gone.
    pub async fn channel(&self) -> Result<Channel, BrokerError> {
        let mut state = self.state.lock().await;
        if let Some((connection, channel)) = state.as_ref() {
            if connection.status().connected() && channel.status().connected() {
                return Ok(channel.clone());
            }
            crate::metrics::counter!(crate::metrics::RECONNECTS, "target" => "broker").increment(1);
            tracing::warn!("RabbitMQ connection lost; reconnecting");
        }
        *state = None;
        let connection = connect_once(&self.url, &self.name, self.extra_ca.as_deref()).await?;
        // A dead-letter queue on a cluster node that is down does not stop the jobs.
        self.topology.declare_on(&connection).await?;
        let channel = confirm_channel(&connection).await?;
        *state = Some((connection, channel.clone()));
        Ok(channel)
    }

    /// Closes the channel, then the connection, politely, if there is one.
    pub async fn close(&self) {
        if let Some((connection, channel)) = self.state.lock().await.take() {
            close_channel(&channel).await;
            close(&connection).await;
        }
    }
}
