//! A consumer as operators see it: what it tells the broker about itself when it connects.
//!
//! Every consumer names its AMQP connection `pokeq-consumer@<host>:<pid>` and sends, in the
//! handshake's client properties, what stays true for the connection's life ([`Advertised`]).
//! The broker keeps them with the connection and its management API shows them, so the CLI can
//! list live consumers without any registry of its own: `pokeq workers` prints them, and
//! `pokeq topology` reads [`RETRY_DELAYS`] to tell the wait queues live consumers use from the
//! ones nobody does. A consumer gone is gone from the list the moment its connection closes.
//!
//! Every value is a string (all that lapin sends as client properties); older consumers send
//! none of these keys, so readers treat each one as optional.

/// Start of every consumer's connection name.
pub const NAME_PREFIX: &str = "pokeq-consumer@";

/// Client property keys; the `pokeq.` prefix keeps them apart from the client library's own
/// (`product`, `version`, ...).
pub const HOST: &str = "pokeq.host";
pub const PID: &str = "pokeq.pid";
/// The consumer's build version (`CARGO_PKG_VERSION`).
pub const VERSION: &str = "pokeq.version";
/// `POKEQ_PREFIX`: which pipeline on the vhost the consumer works for.
pub const PREFIX: &str = "pokeq.prefix";
pub const PREFETCH: &str = "pokeq.prefetch";
/// Comma-separated delay labels (`1s,5s,30s,2m,10m`): the wait queues `<prefix>.retry.<label>`
/// this consumer declares and publishes to.
pub const RETRY_DELAYS: &str = "pokeq.retry_delays";
/// When the process started, `YYYY-MM-DDTHH:MM:SSZ`.
pub const STARTED_AT: &str = "pokeq.started_at";
/// Where its `/metrics` listens (`ip:port`), absent when the endpoint is off. An unspecified IP
/// (`0.0.0.0`) means every interface: readers substitute the connection's peer address.
pub const METRICS_ADDR: &str = "pokeq.metrics_addr";

/// What a consumer advertises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertised {
    pub host: String,
    pub pid: u32,
    pub version: String,
    pub prefix: String,
    pub prefetch: u16,
    /// Delay labels, shortest first.
    pub retry_delays: Vec<String>,
    /// Unix seconds.
    pub started_at: u64,
    pub metrics_addr: Option<std::net::SocketAddr>,
}

impl Advertised {
    /// The client properties to connect with.
    pub fn client_properties(&self) -> Vec<(&'static str, String)> {
        let mut properties = vec![
            (HOST, self.host.clone()),
            (PID, self.pid.to_string()),
            (VERSION, self.version.clone()),
            (PREFIX, self.prefix.clone()),
            (PREFETCH, self.prefetch.to_string()),
            (RETRY_DELAYS, self.retry_delays.join(",")),
            (STARTED_AT, utc_rfc3339(self.started_at)),
        ];
        if let Some(addr) = self.metrics_addr {
            properties.push((METRICS_ADDR, addr.to_string()));
        }
        properties
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` of Unix seconds (civil-from-days, proleptic Gregorian).
pub fn utc_rfc3339(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let rem = unix % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_rfc3339() {
        assert_eq!(utc_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(utc_rfc3339(951_827_696), "2000-02-29T12:34:56Z");
        assert_eq!(utc_rfc3339(1_767_225_599), "2025-12-31T23:59:59Z");
    }

    #[test]
    fn properties_carry_every_static_figure() {
        let advertised = Advertised {
            host: "web-1".into(),
            pid: 42,
            version: "0.1.0".into(),
            prefix: "pokeq".into(),
            prefetch: 64,
            retry_delays: vec!["1s".into(), "5s".into()],
            started_at: 1_700_000_000,
            metrics_addr: Some("0.0.0.0:9000".parse().unwrap()),
        };
        let properties = advertised.client_properties();
        let get = |key: &str| {
            properties
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get(RETRY_DELAYS), Some("1s,5s"));
        assert_eq!(get(STARTED_AT), Some("2023-11-14T22:13:20Z"));
        assert_eq!(get(METRICS_ADDR), Some("0.0.0.0:9000"));
        assert_eq!(get(PREFETCH), Some("64"));
        let off = Advertised {
            metrics_addr: None,
            ..advertised
        };
        assert!(
            !off.client_properties()
                .iter()
                .any(|(k, _)| *k == METRICS_ADDR)
        );
    }
}
