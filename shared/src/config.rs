//! Settings shared by every binary, parsed by clap (flag first, then environment variable) and
//! validated once at start so that a bad value stops the process before it touches anything.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::secret::SecretUrl;

/// A setting that failed validation. Its `Display` names the setting and shows the value with any
/// password masked, because this text ends up in terminals and logs.
#[derive(Debug, thiserror::Error)]
#[error("invalid {setting}: {value:?}: {reason}")]
pub struct ConfigError {
    pub setting: &'static str,
    pub value: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(setting: &'static str, value: &str, reason: impl fmt::Display) -> Self {
        Self {
            setting,
            value: mask_url(value),
            reason: reason.to_string(),
        }
    }
}

/// A setting that validated but that RabbitMQ or Postgres refused: a wrong user or password, a
/// missing vhost, missing rights, a queue that exists with other arguments. Unlike an outage,
/// waiting does not cure it, so no retry loop waits for it and every binary exits 2 with this
/// text (see [`crate::exit`]). Like [`ConfigError`] it names the setting and shows its value with
/// any password masked; the reason quotes the service and says what to change.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{setting}{}: {reason}", .value.as_ref().map(|v| format!("={v}")).unwrap_or_default())]
pub struct Misconfigured {
    pub setting: &'static str,
    /// The value, masked; `None` when the refusal does not depend on it alone (rights the
    /// broker's user lacks, which the broker's message names).
    pub value: Option<String>,
    pub reason: String,
}

impl Misconfigured {
    pub fn new(setting: &'static str, value: &str, reason: impl fmt::Display) -> Self {
        Self {
            setting,
            value: Some(mask_url(value)),
            reason: reason.to_string(),
        }
    }

    /// For a refusal that the setting's value does not show (see [`Misconfigured::value`]).
    pub fn of(setting: &'static str, reason: impl fmt::Display) -> Self {
        Self {
            setting,
            value: None,
            reason: reason.to_string(),
        }
    }
}

/// Kind of the work and dead-letter queues. Quorum queues replicate across a RabbitMQ cluster and
/// enforce a delivery limit; classic ones are for brokers where quorum queues are unwanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum QueueType {
    Quorum,
    Classic,
}

impl QueueType {
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Quorum => "quorum",
            QueueType::Classic => "classic",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Settings read from the environment only, for every binary's `--help`.
pub const ENVIRONMENT_HELP: &str = "Also read from the environment: RUST_LOG (log filter, default \
`info`), NO_COLOR (any value: no colour in text logs), TOKIO_WORKER_THREADS (async worker \
threads; the consumer runs one unless set).";

/// Connection settings and names every binary takes. Values holding credentials hide their
/// environment value from `--help` and are [`SecretUrl`]s, whose `Debug` masks the password.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// RabbitMQ URL (amqp:// or amqps://), or the comma-separated URLs of a cluster's nodes
    /// (same user, password and vhost): each process tries them in its own shuffled order and,
    /// when it loses its node, reconnects to the next one that answers.
    #[arg(
        long,
        global = true,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        hide_env_values = true,
        hide_default_value = true
    )]
    pub amqp_url: SecretUrl,

    /// Postgres URL; the producer, the consumer and `pokeq migrate` create the database if
    /// missing (other `pokeq` commands only read it).
    #[arg(
        long,
        global = true,
        env = "DATABASE_URL",
        default_value = "postgres://postgres:postgres@127.0.0.1:5432/pokeq",
        hide_env_values = true,
        hide_default_value = true
    )]
    pub database_url: SecretUrl,

    /// PokeAPI base URL (the stub serves the same paths).
    #[arg(
        long,
        global = true,
        env = "POKEAPI_URL",
        default_value = "https://pokeapi.co/api/v2"
    )]
    pub pokeapi_url: SecretUrl,

    /// Every exchange and queue name starts with `<prefix>.`.
    #[arg(long, global = true, env = "POKEQ_PREFIX", default_value = "pokeq")]
    pub prefix: String,

    /// Kind of the jobs queue (`classic` to opt out of quorum); the dead-letter, ledger and
    /// retry wait queues are always classic.
    #[arg(long, global = true, env = "POKEQ_QUEUE_TYPE", value_enum, default_value_t = QueueType::Quorum)]
    pub queue_type: QueueType,

    /// PEM file of CA certificates to trust, besides the system's, for amqps:// and Postgres
    /// TLS (a private CA).
    #[arg(long, global = true, env = "POKEQ_CA_FILE")]
    pub ca_file: Option<std::path::PathBuf>,

    /// `json` for one JSON object per log line.
    #[arg(long, global = true, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// [`CommonArgs`] once validated: URLs known to parse, the prefix known to be a safe name. Its
/// `Debug` shows no password: the URLs are [`SecretUrl`]s, and `tokio_postgres::Config` redacts
/// its own.
#[derive(Debug, Clone)]
pub struct Common {
    pub amqp_url: SecretUrl,
    pub database: tokio_postgres::Config,
    pub database_url: SecretUrl,
    /// An API behind a proxy or a gateway may take credentials in its URL too.
    pub pokeapi_url: SecretUrl,
    pub prefix: String,
    pub queue_type: QueueType,
    pub log_format: LogFormat,
    /// CA certificates (PEM) of `--ca-file`, trusted besides the system's roots.
    pub extra_ca: Option<String>,
}

impl CommonArgs {
    pub fn validate(&self) -> Result<Common, ConfigError> {
        validate_amqp_urls(self.amqp_url.expose())?;

        let database_url = self.database_url.expose();
        let database = crate::tls::postgres_config(database_url)
            .map_err(|e| ConfigError::new("DATABASE_URL", database_url, e))?;
        if database.get_dbname().is_none() {
            return Err(ConfigError::new(
                "DATABASE_URL",
                database_url,
                "no database name",
            ));
        }

        let pokeapi_url = self.pokeapi_url.expose();
        let api = url::Url::parse(pokeapi_url)
            .map_err(|e| ConfigError::new("POKEAPI_URL", pokeapi_url, e))?;
        if !matches!(api.scheme(), "http" | "https") {
            return Err(ConfigError::new(
                "POKEAPI_URL",
                pokeapi_url,
                "scheme must be http or https",
            ));
        }

        let prefix_ok = !self.prefix.is_empty()
            && self.prefix.len() <= 100
            && self
                .prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !prefix_ok {
            return Err(ConfigError::new(
                "POKEQ_PREFIX",
                &self.prefix,
                "use 1 to 100 of A-Z a-z 0-9 - _ .",
            ));
        }

        let extra_ca = match &self.ca_file {
            Some(path) => Some(crate::tls::load_ca_file(path).map_err(|reason| {
                ConfigError::new("POKEQ_CA_FILE", &path.display().to_string(), reason)
            })?),
            None => None,
        };

        Ok(Common {
            extra_ca,
            amqp_url: self.amqp_url.clone(),
            database,
            database_url: self.database_url.clone(),
            pokeapi_url: SecretUrl::new(pokeapi_url.trim_end_matches('/')),
            prefix: self.prefix.clone(),
            queue_type: self.queue_type,
            log_format: self.log_format,
        })
    }
}

/// Checks `AMQP_URL`: one broker URL, or a comma-separated list of the nodes of one cluster
/// (see [`crate::broker::addresses`]). Each must be an `amqp://` or `amqps://` URL that lapin
/// takes, and all must log in the same way to the same virtual host: they are one broker to
/// pokeq, which moves between them on its own, and `pokeq` reads the vhost and the management
/// user from the first. An empty element (`a,,b`, a trailing comma) is refused rather than
/// skipped: it is a typo, and a list that silently lost a node fails over to fewer nodes.
pub fn validate_amqp_urls(list: &str) -> Result<(), ConfigError> {
    let addresses: Vec<&str> = list.split(',').map(str::trim).collect();
    let many = addresses.len() > 1;
    let mut first: Option<(String, String, String)> = None;
    for (n, address) in addresses.iter().enumerate() {
        let which = |reason: String| {
            let reason = if many {
                format!("address {} of {}: {reason}", n + 1, addresses.len())
            } else {
                reason
            };
            ConfigError::new("AMQP_URL", list, reason)
        };
        if address.is_empty() {
            return Err(which(
                "is empty (separate the nodes' URLs with single commas)".to_owned(),
            ));
        }
        let amqp = url::Url::parse(address).map_err(|e| {
            which(if many {
                format!("{e} (a comma in a password is written %2C)")
            } else {
                e.to_string()
            })
        })?;
        if !matches!(amqp.scheme(), "amqp" | "amqps") {
            return Err(which("scheme must be amqp or amqps".to_owned()));
        }
        let uri = lapin::uri::AMQPUri::from_str(address).map_err(which)?;
        let login = (
            uri.authority.userinfo.username.clone(),
            uri.authority.userinfo.password.clone(),
            uri.vhost.clone(),
        );
        match &first {
            None => first = Some(login),
            Some(first) if *first != login => {
                return Err(which(
                    "every node of the list must have the same user, password and virtual host \
                     as the first"
                        .to_owned(),
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Replaces the password of a URL with `****`, so a value can be shown in errors and logs; a
/// `password` in the query (a Postgres URL may carry it there) too. Text that does not parse as
/// a URL is masked between `://user:` and `@` all the same, and a Postgres key=value string
/// (`host=... password=...`) has its `password` value masked.
pub fn mask_url(value: &str) -> String {
    // A list of broker URLs (`AMQP_URL`): each one masked on its own, since the parse of the
    // whole would take the later ones for a path and leave their passwords.
    if value.contains(',') && value.matches("://").count() > 1 {
        return value.split(',').map(mask_url).collect::<Vec<_>>().join(",");
    }
    if !value.contains("://") && value.contains("password") {
        return mask_key_value_password(value);
    }
    if let Ok(mut url) = url::Url::parse(value) {
        let mut masked = url.password().is_some() && url.set_password(Some("****")).is_ok();
        if url.query_pairs().any(|(key, _)| key == "password") {
            let pairs: Vec<(String, String)> = url
                .query_pairs()
                .map(|(key, value)| {
                    let value = if key == "password" {
                        "****".into()
                    } else {
                        value
                    };
                    (key.into_owned(), value.into_owned())
                })
                .collect();
            url.query_pairs_mut().clear().extend_pairs(pairs);
            masked = true;
        }
        return if masked {
            url.to_string()
        } else {
            value.to_owned()
        };
    }
    match (value.find("://"), value.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &value[scheme_end + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:****{}",
                    &value[..scheme_end + 3],
                    &userinfo[..colon],
                    &value[at..]
                ),
                None => value.to_owned(),
            }
        }
        _ => value.to_owned(),
    }
}

/// Masks `password=...` in a libpq-style key=value string, quoted values included.
fn mask_key_value_password(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find("password") {
        let (before, after) = rest.split_at(at);
        out.push_str(before);
        let after_key = &after["password".len()..];
        let trimmed = after_key.trim_start();
        let Some(value_part) = trimmed.strip_prefix('=') else {
            out.push_str("password");
            rest = after_key;
            continue;
        };
        let value_part = value_part.trim_start();
        let end = if let Some(quoted) = value_part.strip_prefix('\'') {
            let mut escaped = false;
            let mut close = quoted.len();
            for (i, c) in quoted.char_indices() {
                match c {
                    '\\' if !escaped => escaped = true,
                    '\'' if !escaped => {
                        close = i;
                        break;
                    }
                    _ => escaped = false,
                }
            }
            1 + (close + 1).min(quoted.len())
        } else {
            value_part
                .find(char::is_whitespace)
                .unwrap_or(value_part.len())
        };
        out.push_str("password=****");
        rest = &value_part[end..];
    }
    out.push_str(rest);
    out
}

/// Parses durations written as `250ms`, `5s`, `2m` or `1h`: the forms the contract's flags use.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} has no unit (use ms, s, m or h)"))?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a whole number"))?;
    let millis = match unit {
        "ms" => Some(number),
        "s" => number.checked_mul(1_000),
        "m" => number.checked_mul(60_000),
        "h" => number.checked_mul(3_600_000),
        _ => {
            return Err(format!(
                "{text:?} has unknown unit {unit:?} (use ms, s, m or h)"
            ));
        }
    }
    .ok_or_else(|| format!("{text:?} is too long"))?;
    Ok(Duration::from_millis(millis))
}

/// Parses sizes written as `8MB`, `512KB` or a plain number of bytes (units are powers of 1024).
pub fn parse_byte_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: usize = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a whole number"))?;
    let factor: usize = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "KB" | "KIB" => 1 << 10,
        "MB" | "MIB" => 1 << 20,
        "GB" | "GIB" => 1 << 30,
        other => {
            return Err(format!(
                "{text:?} has unknown unit {other:?} (use B, KB, MB or GB)"
            ));
        }
    };
    match number.checked_mul(factor) {
        Some(0) | None => Err(format!(
            "{text:?} must be between 1 byte and the address space"
        )),
        Some(bytes) => Ok(bytes),
    }
}

/// Writes a duration the way [`parse_duration`] reads it, in the largest whole unit: this is the
/// label of a retry wait queue, so equal delays always give the same queue name.
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis.is_multiple_of(3_600_000) && millis > 0 {
        format!("{}h", millis / 3_600_000)
    } else if millis.is_multiple_of(60_000) && millis > 0 {
        format!("{}m", millis / 60_000)
    } else if millis.is_multiple_of(1_000) && millis > 0 {
        format!("{}s", millis / 1_000)
    } else {
        format!("{millis}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_password_in_urls() {
        assert_eq!(
            mask_url("amqp://user:s3cret@host:5672/%2f"),
            "amqp://user:****@host:5672/%2f"
        );
        assert_eq!(
            mask_url("postgres://postgres:hunter2@db/pokeq"),
            "postgres://postgres:****@db/pokeq"
        );
        assert_eq!(mask_url("http://host/api"), "http://host/api");
        assert_eq!(
            mask_url("postgres://app@db/pokeq?password=hunter2&sslmode=require"),
            "postgres://app@db/pokeq?password=****&sslmode=require"
        );
        assert_eq!(mask_url("bad://u:p@@x y"), "bad://u:****@x y");
        assert_eq!(
            mask_url("host=db user=app password=hunter2 dbname=pokeq"),
            "host=db user=app password=**** dbname=pokeq"
        );
        assert_eq!(
            mask_url("host=db password = 'a b\\'c' dbname=x"),
            "host=db password=**** dbname=x"
        );
    }

    #[test]
    fn masks_every_password_of_a_list_of_broker_urls() {
        assert_eq!(
            mask_url("amqp://u:s3cret@a:5672/%2f,amqp://u:s3cret@b,amqps://u:s3cret@c/v"),
            "amqp://u:****@a:5672/%2f,amqp://u:****@b,amqps://u:****@c/v"
        );
        let url = crate::secret::SecretUrl::new("amqp://u:s3cret@a, amqp://u:s3cret@b");
        assert!(!format!("{url} {url:?}").contains("s3cret"), "{url}");
    }

    #[test]
    fn a_list_of_broker_urls_is_refused_with_the_element_at_fault() {
        validate_amqp_urls("amqp://u:p@a:5672/%2f").expect("one URL");
        validate_amqp_urls("amqp://u:p@a:5672/%2f, amqp://u:p@b:5673/%2f,amqps://u:p@c/%2f")
            .expect("three nodes");
        for (list, says) in [
            (
                "amqp://u:s3cret@a,,amqp://u:s3cret@b",
                "address 2 of 3: is empty",
            ),
            ("amqp://u:s3cret@a,", "address 2 of 2: is empty"),
            (
                "amqp://u:s3cret@a,amqp://u:other@b",
                "address 2 of 2: every node",
            ),
            (
                "amqp://u:s3cret@a/%2f,amqp://u:s3cret@b/v",
                "same user, password and virtual",
            ),
            ("amqp://u:s3cret@a,amqp://v:s3cret@b", "same user"),
            (
                "amqp://u:s3cret@a,http://u:s3cret@b",
                "address 2 of 2: scheme",
            ),
            ("amqp://u:s3c,ret@a,amqp://u:s3c,ret@b", "%2C"),
        ] {
            let error = validate_amqp_urls(list).expect_err(list).to_string();
            assert!(error.starts_with("invalid AMQP_URL"), "{error}");
            assert!(error.contains(says), "{list}: {error}");
            assert!(!error.contains("s3cret"), "{error}");
        }
    }

    #[test]
    fn durations_round_trip_through_labels() {
        for (text, label) in [
            ("1s", "1s"),
            ("60s", "1m"),
            ("1500ms", "1500ms"),
            ("2m", "2m"),
        ] {
            let parsed = parse_duration(text).unwrap();
            assert_eq!(format_duration(parsed), label);
            assert_eq!(parse_duration(label).unwrap(), parsed);
        }
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn byte_sizes_take_binary_units() {
        assert_eq!(parse_byte_size("8MB"), Ok(8 << 20));
        assert_eq!(parse_byte_size("512kb"), Ok(512 << 10));
        assert_eq!(parse_byte_size("1000"), Ok(1000));
        assert!(parse_byte_size("0").is_err());
        assert!(parse_byte_size("8 parsecs").is_err());
        assert!(parse_byte_size("MB").is_err());
    }

    #[test]
    fn bad_common_setting_names_itself_and_hides_password() {
        let args = CommonArgs {
            amqp_url: "http://guest:topsecret@host/".into(),
            database_url: "postgres://postgres:postgres@127.0.0.1/pokeq".into(),
            pokeapi_url: "https://pokeapi.co/api/v2".into(),
            prefix: "pokeq".into(),
            queue_type: QueueType::Quorum,
            log_format: LogFormat::Text,
            ca_file: None,
        };
        let error = args.validate().unwrap_err().to_string();
        assert!(error.contains("AMQP_URL"), "{error}");
        assert!(!error.contains("topsecret"), "{error}");
    }

    #[test]
    fn refused_setting_names_itself_and_hides_password() {
        let refused = Misconfigured::new(
            "DATABASE_URL",
            "postgres://app:topsecret@db/pokeq",
            "Postgres refused the login",
        );
        assert_eq!(
            refused.to_string(),
            "DATABASE_URL=postgres://app:****@db/pokeq: Postgres refused the login"
        );
        let rights = Misconfigured::of("AMQP_URL", "the user may not declare queues");
        assert_eq!(
            rights.to_string(),
            "AMQP_URL: the user may not declare queues"
        );
    }
}
