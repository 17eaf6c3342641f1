//! The RabbitMQ management HTTP API, read-only: queue depths and consumer counts for `status`,
//! live consumers and their connections for `workers`, what is declared for `topology`.
//!
//! AMQP can tell a queue's ready count (a passive declare) but not its unacknowledged count, and
//! it cannot list queues, exchanges or connections, so the retry wait queues (whatever delays
//! the consumers were started with) and the consumers themselves are only discoverable here.
//! Figures (depths, unacknowledged counts) are the broker's statistics samples, taken every 5 s
//! by default; lists of queues, connections and consumers follow events and are current.
//! Credentials come from the URL's userinfo and are sent as basic auth; the URL shown in any
//! message has its password masked.

use std::str::FromStr;
use std::time::Duration;

use clap::Args;
use pokeq_shared::config::{ConfigError, Misconfigured, mask_url};
use pokeq_shared::secret::{SecretUrl, http_error};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use url::Url;

/// Longest wait for one management API request: a hung broker must not hang `status`.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Queues asked for per page; a vhost shared by many prefixes can hold thousands.
const PAGE_SIZE: u32 = 500;

#[derive(Debug, Clone, Args)]
pub struct ManagementArgs {
    /// RabbitMQ management API URL, user and password included
    /// [default: http://guest:guest@127.0.0.1:15672]
    #[arg(
        long,
        global = true,
        env = "MANAGEMENT_URL",
        default_value = "http://guest:guest@127.0.0.1:15672",
        hide_env_values = true,
        hide_default_value = true
    )]
    pub management_url: SecretUrl,
}

/// Where and as whom to ask, validated; `vhost` is the one the AMQP URL names.
#[derive(Clone)]
pub struct ManagementConfig {
    /// The API's base URL without userinfo, ending in `/`.
    base: Url,
    user: String,
    password: Option<String>,
    pub vhost: String,
    /// The URL as given, password masked: the only form that appears in messages.
    pub shown: String,
}

impl std::fmt::Debug for ManagementConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagementConfig")
            .field("url", &self.shown)
            .field("vhost", &self.vhost)
            .finish()
    }
}

impl ManagementArgs {
    /// Checks the URL and takes the vhost from `amqp_url`'s path (`/` when it names none; the
    /// first node's, when it lists several).
    pub fn validate(&self, amqp_url: &str) -> Result<ManagementConfig, ConfigError> {
        let text = self.management_url.expose();
        let mut base = Url::parse(text).map_err(|e| ConfigError::new("MANAGEMENT_URL", text, e))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(ConfigError::new(
                "MANAGEMENT_URL",
                text,
                "scheme must be http or https",
            ));
        }
        let user = decode(base.username());
        let password = base.password().map(decode);
        let (user, password) = if user.is_empty() {
            ("guest".to_owned(), Some("guest".to_owned()))
        } else {
            (user, password)
        };
        // Userinfo goes as a header, so request URLs (which reqwest puts in its errors) hold no
        // secret.
        let _ = base.set_username("");
        let _ = base.set_password(None);
        base.set_query(None);
        base.set_fragment(None);
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        // Every node of a list has the same vhost (checked with AMQP_URL).
        let amqp_url = pokeq_shared::broker::first_address(amqp_url);
        let vhost = lapin::uri::AMQPUri::from_str(amqp_url)
            .map_err(|e| ConfigError::new("AMQP_URL", amqp_url, e))?
            .vhost;
        let vhost = if vhost.is_empty() {
            "/".to_owned()
        } else {
            vhost
        };
        Ok(ManagementConfig {
            base,
            user,
            password,
            vhost,
            shown: mask_url(text),
        })
    }
}

/// Percent-decodes a URL's user or password (`%40` → `@`); `+` stays a plus, as in userinfo.
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Debug, thiserror::Error)]
pub enum ManagementError {
    #[error("cannot reach the RabbitMQ management API at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the RabbitMQ management API at {url} answered {status}: {detail}")]
    Status {
        url: String,
        status: u16,
        detail: String,
    },
    #[error("unexpected answer from the RabbitMQ management API at {url}: {reason}")]
    Decode { url: String, reason: String },
}

impl ManagementError {
    /// The setting to blame when the API refused the request rather than failed: a user or
    /// password it does not accept (401), or a vhost or base path it does not know (404).
    pub fn misconfiguration(&self, config: &ManagementConfig) -> Option<Misconfigured> {
        let ManagementError::Status { status, .. } = self else {
            return None;
        };
        let reason = match status {
            401 => "the management API refused the user or password (HTTP 401); check them, and \
                    that the user has the monitoring, management or administrator tag"
                .to_owned(),
            404 => format!(
                "the management API knows no vhost {:?} (HTTP 404); check the vhost of AMQP_URL, \
                 and that MANAGEMENT_URL is the API's base URL",
                config.vhost
            ),
            _ => return None,
        };
        Some(Misconfigured::new("MANAGEMENT_URL", &config.shown, reason))
    }
}

/// One queue's figures. A figure is `None` when the broker has not published statistics for the
/// queue yet (the first seconds after it was declared).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct QueueStats {
    pub name: String,
    #[serde(rename = "type")]
    pub queue_type: Option<String>,
    pub messages_ready: Option<u64>,
    pub messages_unacknowledged: Option<u64>,
    pub consumers: Option<u64>,
}

#[derive(Deserialize)]
struct Page<T> {
    items: Vec<T>,
    page_count: Option<u32>,
}

/// A queue as `topology` shows it: [`QueueStats`] plus how it was declared.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct QueueDetail {
    pub name: String,
    #[serde(rename = "type")]
    pub queue_type: Option<String>,
    #[serde(default)]
    pub durable: bool,
    #[serde(default)]
    pub auto_delete: bool,
    #[serde(default, deserialize_with = "object_or_empty")]
    pub arguments: serde_json::Map<String, serde_json::Value>,
    pub messages: Option<u64>,
    pub messages_ready: Option<u64>,
    pub messages_unacknowledged: Option<u64>,
    pub consumers: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ExchangeDetail {
    pub name: String,
    #[serde(rename = "type")]
    pub exchange_type: String,
    #[serde(default)]
    pub durable: bool,
    #[serde(default)]
    pub auto_delete: bool,
    #[serde(default)]
    pub internal: bool,
    #[serde(default, deserialize_with = "object_or_empty")]
    pub arguments: serde_json::Map<String, serde_json::Value>,
}

/// One consumer (a `basic.consume`) on some queue of the vhost.
#[derive(Debug, Clone, Deserialize)]
pub struct ConsumerInfo {
    pub queue: QueueRef,
    /// `None` while the channel is closing: the broker then sends an empty list for it.
    #[serde(default, deserialize_with = "object_or_empty")]
    pub channel_details: Option<ChannelRef>,
    #[serde(default)]
    pub prefetch_count: u64,
    #[serde(default)]
    pub consumer_tag: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct QueueRef {
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ChannelRef {
    /// The channel's name: its connection's name and number, `<peer> -> <broker> (1)`.
    pub name: String,
    /// The broker's name for the connection (`<peer> -> <broker>`), not the client's.
    pub connection_name: String,
}

/// One AMQP connection of the vhost, with what its client said about itself.
#[derive(Debug, Clone, Deserialize)]
pub struct ConnectionInfo {
    pub name: String,
    /// The name the client gave (`pokeq-consumer@<host>:<pid>` for a consumer).
    pub user_provided_name: Option<String>,
    #[serde(default, deserialize_with = "object_or_empty")]
    pub client_properties: serde_json::Map<String, serde_json::Value>,
    pub peer_host: Option<String>,
    pub peer_port: Option<u16>,
    /// Unix milliseconds.
    pub connected_at: Option<u64>,
}

impl ConnectionInfo {
    /// A client property as text (lapin sends strings; anything else is shown as JSON).
    pub fn property(&self, key: &str) -> Option<String> {
        match self.client_properties.get(key)? {
            serde_json::Value::String(text) => Some(text.clone()),
            serde_json::Value::Null => None,
            other => Some(other.to_string()),
        }
    }
}

/// A JSON object as `T`; anything else (RabbitMQ writes an empty Erlang property list, `[]`,
/// for details it does not have) as `T::default()`.
fn object_or_empty<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: DeserializeOwned + Default,
{
    match serde_json::Value::deserialize(deserializer)? {
        value @ serde_json::Value::Object(_) => {
            serde_json::from_value(value).map_err(serde::de::Error::custom)
        }
        _ => Ok(T::default()),
    }
}

/// One channel's figures from the last statistics sample.
#[derive(Debug, Clone, Deserialize)]
pub struct ChannelStats {
    pub name: String,
    pub messages_unacknowledged: Option<u64>,
}

pub struct Management {
    config: ManagementConfig,
    client: reqwest::Client,
}

impl Management {
    pub fn new(config: ManagementConfig) -> Result<Self, ManagementError> {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| ManagementError::Unreachable {
                url: config.shown.clone(),
                reason: http_error(e),
            })?;
        Ok(Self { config, client })
    }

    pub fn config(&self) -> &ManagementConfig {
        &self.config
    }

    /// Every queue of the vhost whose name starts with `<prefix>.`, in the broker's order.
    pub async fn queues(&self, prefix: &str) -> Result<Vec<QueueStats>, ManagementError> {
        self.listed(
            "queues",
            prefix,
            "name,type,messages_ready,messages_unacknowledged,consumers",
        )
        .await
    }

    /// [`Management::queues`], with each queue's declaration.
    pub async fn queue_details(&self, prefix: &str) -> Result<Vec<QueueDetail>, ManagementError> {
        self.listed(
            "queues",
            prefix,
            "name,type,durable,auto_delete,arguments,messages,messages_ready,\
             messages_unacknowledged,consumers",
        )
        .await
    }

    /// Every exchange of the vhost whose name starts with `<prefix>.`.
    pub async fn exchanges(&self, prefix: &str) -> Result<Vec<ExchangeDetail>, ManagementError> {
        self.listed(
            "exchanges",
            prefix,
            "name,type,durable,auto_delete,internal,arguments",
        )
        .await
    }

    /// Every consumer of the vhost, on any queue.
    pub async fn consumers(&self) -> Result<Vec<ConsumerInfo>, ManagementError> {
        self.get(&["api", "consumers", &self.config.vhost], &[])
            .await
    }

    /// Every connection to the vhost.
    pub async fn connections(&self) -> Result<Vec<ConnectionInfo>, ManagementError> {
        let columns = "name,user_provided_name,client_properties,peer_host,peer_port,connected_at";
        self.get(
            &["api", "vhosts", &self.config.vhost, "connections"],
            &[("columns", columns.to_owned())],
        )
        .await
    }

    /// Every channel of the vhost, with its unacknowledged deliveries.
    pub async fn channels(&self) -> Result<Vec<ChannelStats>, ManagementError> {
        self.get(
            &["api", "vhosts", &self.config.vhost, "channels"],
            &[("columns", "name,messages_unacknowledged".to_owned())],
        )
        .await
    }

    /// Every item of `api/<kind>/<vhost>` whose name starts with `<prefix>.`, page by page.
    async fn listed<T: DeserializeOwned + Named>(
        &self,
        kind: &str,
        prefix: &str,
        columns: &str,
    ) -> Result<Vec<T>, ManagementError> {
        let mut items = Vec::new();
        let mut page = 1;
        loop {
            let answer: Page<T> = self
                .get(
                    &["api", kind, &self.config.vhost],
                    &[
                        ("page", page.to_string()),
                        ("page_size", PAGE_SIZE.to_string()),
                        ("name", format!("^{}\\.", regex_escape(prefix))),
                        ("use_regex", "true".to_owned()),
                        ("columns", columns.to_owned()),
                    ],
                )
                .await?;
            items.extend(answer.items);
            if page >= answer.page_count.unwrap_or(1) {
                break;
            }
            page += 1;
        }
        let wanted = format!("{prefix}.");
        items.retain(|item| item.name().starts_with(&wanted));
        Ok(items)
    }

    /// GETs `segments` (each percent-encoded, so a vhost `/` is one segment) with `query`.
    async fn get<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> Result<T, ManagementError> {
        let shown = &self.config.shown;
        let mut url = self.config.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty();
            path.extend(segments);
        }
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (key, value) in query {
                pairs.append_pair(key, value);
            }
        }
        let unreachable = |e: reqwest::Error| ManagementError::Unreachable {
            url: shown.clone(),
            reason: http_error(e),
        };
        let response = self
            .client
            .get(url)
            .basic_auth(&self.config.user, self.config.password.as_deref())
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status();
        let body = response.bytes().await.map_err(unreachable)?;
        if !status.is_success() {
            let detail = match status.as_u16() {
                401 => "the user or password was refused".to_owned(),
                404 => format!("no vhost {:?} (taken from AMQP_URL)", self.config.vhost),
                _ => String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
            };
            return Err(ManagementError::Status {
                url: shown.clone(),
                status: status.as_u16(),
                detail,
            });
        }
        serde_json::from_slice(&body).map_err(|e| ManagementError::Decode {
            url: shown.clone(),
            reason: e.to_string(),
        })
    }
}

/// What the prefix filter of [`Management::listed`] checks again on the client's side.
trait Named {
    fn name(&self) -> &str;
}

impl Named for QueueStats {
    fn name(&self) -> &str {
        &self.name
    }
}

impl Named for QueueDetail {
    fn name(&self) -> &str {
        &self.name
    }
}

impl Named for ExchangeDetail {
    fn name(&self) -> &str {
        &self.name
    }
}

/// Escapes a queue prefix for the API's name filter (a PCRE); prefixes are validated to
/// `[A-Za-z0-9._-]`, so only the dot matters, but escaping every non-alphanumeric is safe.
fn regex_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len() * 2);
    for c in text.chars() {
        if !c.is_ascii_alphanumeric() && c != '_' {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(url: &str) -> ManagementArgs {
        ManagementArgs {
            management_url: url.into(),
        }
    }

    #[test]
    fn takes_credentials_from_userinfo_and_vhost_from_amqp_url() {
        let config = args("http://ops:s3cr%40t@rabbit:15672/mgmt")
            .validate("amqp://guest:guest@rabbit:5672/prod")
            .unwrap();
        assert_eq!(config.user, "ops");
        assert_eq!(config.password.as_deref(), Some("s3cr@t"));
        assert_eq!(config.vhost, "prod");
        assert_eq!(config.base.as_str(), "http://rabbit:15672/mgmt/");
        assert!(!config.shown.contains("s3cr"), "{}", config.shown);
        assert!(!format!("{config:?}").contains("s3cr"));

        let default_vhost = args("http://guest:guest@127.0.0.1:15672")
            .validate("amqp://guest:guest@127.0.0.1:5672/%2f")
            .unwrap();
        assert_eq!(default_vhost.vhost, "/");
        let no_path = args("http://127.0.0.1:15672")
            .validate("amqp://127.0.0.1")
            .unwrap();
        assert_eq!(no_path.vhost, "/");
        assert_eq!(no_path.user, "guest");
    }

    #[test]
    fn bad_url_names_the_setting_and_hides_the_password() {
        let error = args("ftp://ops:hunter2@host/")
            .validate("amqp://127.0.0.1")
            .unwrap_err()
            .to_string();
        assert!(error.contains("MANAGEMENT_URL"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
    }

    #[test]
    fn details_the_broker_no_longer_has_read_as_absent() {
        let consumer: ConsumerInfo = serde_json::from_str(
            r#"{"queue":{"name":"p.jobs","vhost":"/"},"channel_details":[],
                "prefetch_count":7,"consumer_tag":"t"}"#,
        )
        .unwrap();
        assert!(consumer.channel_details.is_none());
        let consumer: ConsumerInfo = serde_json::from_str(
            r#"{"queue":{"name":"p.jobs"},"channel_details":{"name":"c (1)",
                "connection_name":"c","number":1},"prefetch_count":7}"#,
        )
        .unwrap();
        assert_eq!(consumer.channel_details.unwrap().connection_name, "c");
        let connection: ConnectionInfo =
            serde_json::from_str(r#"{"name":"c","client_properties":[]}"#).unwrap();
        assert!(connection.client_properties.is_empty());
        assert_eq!(connection.property("pokeq.pid"), None);
    }

    #[test]
    fn prefix_filter_escapes_dots() {
        assert_eq!(regex_escape("pokeq-test.a_b"), "pokeq\\-test\\.a_b");
    }
}
