//! The job message: what a producer publishes for one resource and a consumer decodes.
//!
//! A body is untrusted input (anyone with queue access can publish), so decoding is strict and
//! every refusal says precisely why; the consumer dead-letters such a message as
//! `invalid_message` instead of crashing or looping on it.

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use serde::{Deserialize, Serialize};

/// The resource of the jobs pokeq started with, and of every job a producer publishes by
/// default (`--resources`). Every resource [`crate::resources::names`] lists is accepted; a job's
/// resource is also its routing key.
pub const RESOURCE: &str = "pokemon";
/// The body format version this build writes and reads.
pub const VERSION: u32 = 1;
/// Largest body accepted; a real job is under 100 bytes.
pub const MAX_BODY: usize = 4 * 1024;

/// Number of failed tries so far; absent on a first delivery.
pub const ATTEMPTS_HEADER: &str = "x-pokeq-attempts";
/// W3C trace context (`00-<trace id>-<parent id>-01`), set by the producer and kept through
/// retries and dead letters, so one job can be followed across processes by its trace id.
pub const TRACEPARENT_HEADER: &str = "traceparent";
/// Unix time in milliseconds before which a retried job must not run: set when the API asked for
/// a longer wait (`Retry-After`) than the longest retry delay, so the job hops through the wait
/// queues until then instead of running early.
pub const NOT_BEFORE_HEADER: &str = "x-pokeq-not-before";
/// Why a message was dead-lettered: one of [`ErrorKind`]'s names.
pub const ERROR_KIND_HEADER: &str = "x-pokeq-error-kind";
/// Human-readable reason of a dead letter.
pub const ERROR_HEADER: &str = "x-pokeq-error";
/// The broker's record of each time it dead-lettered a message (RabbitMQ sets it).
pub const DEATH_HEADER: &str = "x-death";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub v: u32,
    pub resource: String,
    pub id: i32,
    #[serde(default)]
    pub name: String,
    /// Set by `producer --follow`: the consumer that stores this job's document enqueues the
    /// documents it links to (absent from `ingest_items` only), as jobs that follow in turn.
    /// Left out of the body when false, so a body without it reads as before.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub follow: bool,
}

/// A body that is not a job this build can run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidMessage(pub String);

impl Job {
    /// A pokemon job.
    pub fn new(id: i32, name: impl Into<String>) -> Self {
        Self::of(RESOURCE, id, name)
    }

    /// A job for any resource; `resource` must be one of [`crate::resources::names`] for a
    /// consumer to accept it.
    pub fn of(resource: &str, id: i32, name: impl Into<String>) -> Self {
        Self {
            v: VERSION,
            resource: resource.to_owned(),
            id,
            name: name.into(),
            follow: false,
        }
    }

    /// This job with `follow` set as given.
    pub fn following(mut self, follow: bool) -> Self {
        self.follow = follow;
        self
    }

    /// `<resource>/<id>`: the AMQP message id, stable across retries and replays.
    pub fn message_id(&self) -> String {
        format!("{}/{}", self.resource, self.id)
    }

    pub fn encode(&self) -> Vec<u8> {
        // Serialising a struct of strings and integers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Persistent JSON message with the job's id, as the producer publishes it.
    /// Persistent JSON message with the job's id, its publish time and a fresh W3C trace
    /// context, as the producer publishes it.
    pub fn properties(&self) -> BasicProperties {
        let mut headers = FieldTable::default();
        headers.insert(
            ShortString::from(TRACEPARENT_HEADER),
            AMQPValue::LongString(LongString::from(new_traceparent())),
        );
        BasicProperties::default()
            .with_content_type(ShortString::from("application/json"))
            .with_delivery_mode(2)
            .with_message_id(ShortString::from(self.message_id()))
            .with_timestamp(unix_seconds())
            .with_headers(headers)
    }

    pub fn decode(body: &[u8]) -> Result<Job, InvalidMessage> {
        if body.len() > MAX_BODY {
            return Err(InvalidMessage(format!(
                "body of {} bytes is over the {MAX_BODY}-byte limit",
                body.len()
            )));
        }
        let text = std::str::from_utf8(body)
            .map_err(|e| InvalidMessage(format!("body is not UTF-8: {e}")))?;
        // serde would also read a struct from a JSON array; a job is an object.
        if text.trim_start().starts_with('[') {
            return Err(InvalidMessage(
                "body is not a job: invalid type: sequence, expected a JSON object".into(),
            ));
        }
        let job: Job = serde_json::from_str(text)
            .map_err(|e| InvalidMessage(format!("body is not a job: {e}")))?;
        if job.v != VERSION {
            return Err(InvalidMessage(format!(
                "unknown version v={} (this build reads v={VERSION})",
                job.v
            )));
        }
        if !crate::resources::is_known(&job.resource) {
            let known: Vec<&str> = crate::resources::names().collect();
            return Err(InvalidMessage(format!(
                "unknown resource {:?} (expected one of {})",
                job.resource,
                known.join(", ")
            )));
        }
        if job.id <= 0 {
            return Err(InvalidMessage(format!(
                "id {} is not a positive integer",
                job.id
            )));
        }
        Ok(job)
    }
}

/// Why a job ended in the dead-letter queue, and so the `error_kind` of its failed item. The
/// first four are the contract's `x-pokeq-error-kind` values, set by the consumer; the others
/// are RabbitMQ's own dead-lettering reasons, for letters the broker dead-lettered itself (they
/// carry no pokeq header; see [`broker_death`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    MalformedPayload,
    InvalidMessage,
    Exhausted,
    /// Delivered more often than the quorum jobs queue's `x-delivery-limit` without being
    /// settled: a job that crashed or stalled every consumer that took it.
    DeliveryLimit,
    /// Rejected without requeue by a consumer that is not pokeq's.
    Rejected,
    /// Expired in the jobs queue (a message TTL set by a policy).
    Expired,
    /// Dropped from the jobs queue when it was full (a length limit set by a policy).
    MaxLen,
}

impl ErrorKind {
    /// Every kind, in the order operators read them.
    pub const ALL: [ErrorKind; 8] = [
        ErrorKind::NotFound,
        ErrorKind::MalformedPayload,
        ErrorKind::InvalidMessage,
        ErrorKind::Exhausted,
        ErrorKind::DeliveryLimit,
        ErrorKind::Rejected,
        ErrorKind::Expired,
        ErrorKind::MaxLen,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::MalformedPayload => "malformed_payload",
            ErrorKind::InvalidMessage => "invalid_message",
            ErrorKind::Exhausted => "exhausted",
            ErrorKind::DeliveryLimit => "delivery_limit",
            ErrorKind::Rejected => "rejected",
            ErrorKind::Expired => "expired",
            ErrorKind::MaxLen => "maxlen",
        }
    }

    /// The kind of a RabbitMQ dead-lettering reason (`x-death` `reason`), if it is one.
    pub fn from_broker_reason(reason: &str) -> Option<Self> {
        match reason {
            "delivery_limit" => Some(ErrorKind::DeliveryLimit),
            "rejected" => Some(ErrorKind::Rejected),
            "expired" => Some(ErrorKind::Expired),
            "maxlen" => Some(ErrorKind::MaxLen),
            _ => None,
        }
    }
}

/// How RabbitMQ itself dead-lettered a message, as its headers tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerDeath {
    /// RabbitMQ's reason: `delivery_limit`, `rejected`, `expired` or `maxlen`.
    pub reason: String,
    /// The queue the message died in, when the headers name it.
    pub queue: Option<String>,
}

/// The broker's latest dead-lettering of a message: from `x-last-death-*` (RabbitMQ 3.13+),
/// else from the most recent `x-death` entry (listed newest first). `None` if the broker never
/// dead-lettered it. Expiries in pokeq's own wait queues are dead-letterings too, so a retried
/// job carries `expired` entries: only the newest one says how the message ended.
pub fn broker_death(properties: &BasicProperties) -> Option<BrokerDeath> {
    let headers = properties.headers().as_ref()?.inner();
    let newest = match headers.get(DEATH_HEADER) {
        Some(AMQPValue::FieldArray(entries)) => {
            entries.as_slice().iter().find_map(|entry| match entry {
                AMQPValue::FieldTable(table) => Some(table.inner()),
                _ => None,
            })
        }
        _ => None,
    };
    let text = |value: Option<&AMQPValue>| match value? {
        AMQPValue::LongString(text) => Some(String::from_utf8_lossy(text.as_bytes()).into_owned()),
        AMQPValue::ShortString(text) => Some(text.to_string()),
        _ => None,
    };
    let reason = text(headers.get("x-last-death-reason"))
        .or_else(|| text(newest.and_then(|entry| entry.get("reason"))))?;
    let queue = text(headers.get("x-last-death-queue"))
        .or_else(|| text(newest.and_then(|entry| entry.get("queue"))));
    Some(BrokerDeath { reason, queue })
}

/// Most failed tries a message can claim: far above any `--max-attempts`, low enough that
/// counting on from it never overflows. A forged larger count is read as this.
pub const MAX_ATTEMPTS_READ: u32 = 100_000;

/// Failed tries recorded on a message; a missing, negative or unreadable header counts as
/// none, an absurdly large one as [`MAX_ATTEMPTS_READ`].
pub fn attempts(properties: &BasicProperties) -> u32 {
    header_int(properties, ATTEMPTS_HEADER)
        .and_then(|n| u32::try_from(n.max(0)).ok().or(Some(MAX_ATTEMPTS_READ)))
        .map_or(0, |n| n.min(MAX_ATTEMPTS_READ))
}

/// The `NOT_BEFORE_HEADER` time, in Unix milliseconds, if the message carries one.
pub fn not_before(properties: &BasicProperties) -> Option<i64> {
    header_int(properties, NOT_BEFORE_HEADER)
}

/// An integer header, whichever integer type the publisher chose.
pub fn header_int(properties: &BasicProperties, name: &str) -> Option<i64> {
    let value = properties
        .headers()
        .as_ref()
        .and_then(|headers| headers.inner().get(name).cloned());
    match value {
        Some(AMQPValue::ShortShortInt(n)) => Some(i64::from(n)),
        Some(AMQPValue::ShortShortUInt(n)) => Some(i64::from(n)),
        Some(AMQPValue::ShortInt(n)) => Some(i64::from(n)),
        Some(AMQPValue::ShortUInt(n)) => Some(i64::from(n)),
        Some(AMQPValue::LongInt(n)) => Some(i64::from(n)),
        Some(AMQPValue::LongUInt(n)) => Some(i64::from(n)),
        Some(AMQPValue::LongLongInt(n)) => Some(n),
        _ => None,
    }
}

/// A new W3C `traceparent` value: random trace and parent ids, sampled.
pub fn new_traceparent() -> String {
    let trace: u128 = rand::random();
    let parent: u64 = rand::random();
    format!("00-{:032x}-{:016x}-01", trace.max(1), parent.max(1))
}

/// The trace id of a message's `traceparent` header, if it carries a well-formed one.
pub fn trace_id(properties: &BasicProperties) -> Option<String> {
    let value = header_text(properties, TRACEPARENT_HEADER)?;
    let mut parts = value.split('-');
    let (_version, trace) = (parts.next()?, parts.next()?);
    (trace.len() == 32 && trace.bytes().all(|b| b.is_ascii_hexdigit())).then(|| trace.to_owned())
}

/// Seconds since the Unix epoch, the unit of the AMQP `timestamp` property.
/// Now, in Unix milliseconds.
pub fn unix_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

pub fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A header of text, as read back from a dead letter.
pub fn header_text(properties: &BasicProperties, name: &str) -> Option<String> {
    match properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(text) => Some(text.to_string()),
        AMQPValue::ShortString(text) => Some(text.to_string()),
        _ => None,
    }
}

/// The properties of `original` with `headers` set (other headers kept), for re-publishing a
/// delivery to the retry or dead-letter exchange without losing its id or trace context.
pub fn with_headers(original: &BasicProperties, headers: &[(&str, AMQPValue)]) -> BasicProperties {
    let mut table = original.headers().clone().unwrap_or_default();
    for (name, value) in headers {
        table.insert(ShortString::from(*name), value.clone());
    }
    let properties = original.clone().with_headers(table);
    if properties.delivery_mode().is_none() {
        properties.with_delivery_mode(2)
    } else {
        properties
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_contract_shape() {
        let body = Job::new(25, "pikachu").encode();
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"v":1,"resource":"pokemon","id":25,"name":"pikachu"}"#
        );
        assert_eq!(Job::decode(&body).unwrap(), Job::new(25, "pikachu"));
        let species = Job::of("pokemon-species", 133, "eevee").following(true);
        assert_eq!(
            std::str::from_utf8(&species.encode()).unwrap(),
            r#"{"v":1,"resource":"pokemon-species","id":133,"name":"eevee","follow":true}"#
        );
        assert_eq!(Job::decode(&species.encode()).unwrap(), species);
        assert_eq!(species.message_id(), "pokemon-species/133");
        for resource in crate::resources::names() {
            let body = format!(r#"{{"v":1,"resource":"{resource}","id":3}}"#);
            assert_eq!(Job::decode(body.as_bytes()).unwrap().resource, resource);
        }
    }

    #[test]
    fn refuses_what_is_not_a_job_with_a_reason() {
        let cases: [(&[u8], &str); 7] = [
            (b"not json", "not a job"),
            (br#"{"v":2,"resource":"pokemon","id":1}"#, "unknown version"),
            (br#"{"v":1,"resource":"berry","id":1}"#, "unknown resource"),
            (br#"{"v":1,"resource":"pokemon","id":-4}"#, "not a positive"),
            (br#"{"v":1,"resource":"pokemon","id":0}"#, "not a positive"),
            (br#"{"v":1,"resource":"pokemon","id":"1"}"#, "not a job"),
            (b"\xff\xfe", "not UTF-8"),
        ];
        for (body, reason) in cases {
            let error = Job::decode(body).unwrap_err().to_string();
            assert!(error.contains(reason), "{error} should say {reason}");
        }
        let huge = vec![b' '; MAX_BODY + 1];
        assert!(Job::decode(&huge).unwrap_err().0.contains("limit"));
        let too_big_id = br#"{"v":1,"resource":"pokemon","id":99999999999}"#;
        assert!(Job::decode(too_big_id).is_err());
    }

    #[test]
    fn jobs_carry_a_trace_context_that_survives_new_headers() {
        let properties = Job::new(7, "x").properties();
        let trace = trace_id(&properties).expect("traceparent set");
        assert_eq!(trace.len(), 32);
        let retried = with_headers(&properties, &[(ATTEMPTS_HEADER, AMQPValue::LongInt(1))]);
        assert_eq!(trace_id(&retried), Some(trace.clone()));
        assert_ne!(
            trace_id(&Job::new(7, "x").properties()),
            Some(trace),
            "fresh per job"
        );
    }

    #[test]
    fn the_broker_death_is_its_newest_one() {
        let entry = |queue: &str, reason: &str| {
            let mut table = FieldTable::default();
            table.insert("queue".into(), AMQPValue::LongString(queue.into()));
            table.insert("reason".into(), AMQPValue::LongString(reason.into()));
            AMQPValue::FieldTable(table)
        };
        let job = Job::new(1, "bulbasaur").properties();
        assert_eq!(broker_death(&job), None);
        let deaths = AMQPValue::FieldArray(
            vec![
                entry("p.jobs", "delivery_limit"),
                entry("p.retry.1s", "expired"),
            ]
            .into(),
        );
        let dead = with_headers(&job, &[(DEATH_HEADER, deaths)]);
        assert_eq!(
            broker_death(&dead),
            Some(BrokerDeath {
                reason: "delivery_limit".into(),
                queue: Some("p.jobs".into()),
            })
        );
        let newer = with_headers(
            &dead,
            &[(
                "x-last-death-reason",
                AMQPValue::LongString("rejected".into()),
            )],
        );
        assert_eq!(
            broker_death(&newer).map(|d| d.reason).as_deref(),
            Some("rejected")
        );
        for reason in ["delivery_limit", "rejected", "expired", "maxlen"] {
            let kind = ErrorKind::from_broker_reason(reason).map(ErrorKind::as_str);
            assert_eq!(kind, Some(reason));
        }
    }

    #[test]
    fn attempts_header_round_trips_and_defaults_to_zero() {
        let job = Job::new(1, "bulbasaur");
        assert_eq!(attempts(&job.properties()), 0);
        let retried = with_headers(
            &job.properties(),
            &[(ATTEMPTS_HEADER, AMQPValue::LongInt(3))],
        );
        assert_eq!(attempts(&retried), 3);
        assert_eq!(
            retried.message_id().as_ref().map(|s| s.as_str()),
            Some("pokemon/1")
        );
    }
}
