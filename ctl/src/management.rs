//! The RabbitMQ management HTTP API, read-only: queue depths and consumer counts for `status`.
//!
//! AMQP can tell a queue's ready count (a passive declare) but not its unacknowledged count, and
//! it cannot list queues by name, so the retry wait queues (whatever delays the consumers were
//! started with) are only discoverable here. Credentials come from the URL's userinfo and are
//! sent as basic auth; the URL shown in any message has its password masked.

use std::str::FromStr;
use std::time::Duration;

use clap::Args;
use pokeq_shared::config::{ConfigError, Misconfigured, mask_url};
use serde::Deserialize;
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
        env = "MANAGEMENT_URL",
        default_value = "http://guest:guest@127.0.0.1:15672",
        hide_env_values = true,
        hide_default_value = true
    )]
    pub management_url: String,
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
    /// Checks the URL and takes the vhost from `amqp_url`'s path (`/` when it names none).
    pub fn validate(&self, amqp_url: &str) -> Result<ManagementConfig, ConfigError> {
        let text = &self.management_url;
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
struct Page {
    items: Vec<QueueStats>,
    page_count: Option<u32>,
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
                reason: chain(&e.without_url()),
            })?;
        Ok(Self { config, client })
    }

    pub fn config(&self) -> &ManagementConfig {
        &self.config
    }

    /// Every queue of the vhost whose name starts with `<prefix>.`, in the broker's order.
    pub async fn queues(&self, prefix: &str) -> Result<Vec<QueueStats>, ManagementError> {
        let mut queues = Vec::new();
        let mut page = 1;
        loop {
            let answer = self.queue_page(prefix, page).await?;
            queues.extend(answer.items);
            if page >= answer.page_count.unwrap_or(1) {
                break;
            }
            page += 1;
        }
        let wanted = format!("{prefix}.");
        queues.retain(|q| q.name.starts_with(&wanted));
        Ok(queues)
    }

    async fn queue_page(&self, prefix: &str, page: u32) -> Result<Page, ManagementError> {
        let shown = &self.config.shown;
        let mut url = self
            .config
            .base
            .join("api/queues")
            .map_err(|e| ManagementError::Decode {
                url: shown.clone(),
                reason: e.to_string(),
            })?;
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.push(&self.config.vhost);
        }
        url.query_pairs_mut()
            .append_pair("page", &page.to_string())
            .append_pair("page_size", &PAGE_SIZE.to_string())
            .append_pair("name", &format!("^{}\\.", regex_escape(prefix)))
            .append_pair("use_regex", "true")
            .append_pair(
                "columns",
                "name,type,messages_ready,messages_unacknowledged,consumers",
            );
        let unreachable = |e: reqwest::Error| ManagementError::Unreachable {
            url: shown.clone(),
            reason: chain(&e.without_url()),
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

/// An error and its causes on one line: reqwest's own text ("error sending request") says
/// nothing without the cause (connection refused, timed out, ...).
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(url: &str) -> ManagementArgs {
        ManagementArgs {
            management_url: url.to_owned(),
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
    fn prefix_filter_escapes_dots() {
        assert_eq!(regex_escape("pokeq-test.a_b"), "pokeq\\-test\\.a_b");
    }
}
