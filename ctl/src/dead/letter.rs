//! A dead letter and what its headers say: its kind, error, attempts and time of death, whether
//! pokeq or the broker dead-lettered it; and the headers a replay drops.

use lapin::BasicProperties;
use lapin::message::Delivery;
use lapin::types::{AMQPValue, FieldTable};
use pokeq_shared::job::{self, Job};
use pokeq_shared::resources;
use serde_json::{Value, json};

use super::amqp::{amqp_int, properties_json, table_json, table_text};

/// Headers that describe a past failure; a replayed job starts clean without them.
const DEATH_HEADER: &str = "x-death";

/// A dead letter taken from the queue and not yet settled, with what its headers say.
pub struct Letter {
    pub(super) delivery: Delivery,
    /// The job in the body, of any resource pokeq stores (see [`job_of`]); `None` when the body
    /// is not such a job.
    pub job: Option<Job>,
    pub kind: String,
    pub error: Option<String>,
    pub attempts: u32,
    /// Unix time (seconds) from the `timestamp` property, else the broker's last `x-death` time.
    pub dead_at: Option<u64>,
}

impl Letter {
    pub fn new(delivery: Delivery) -> Self {
        let properties = &delivery.properties;
        let deaths = x_death(properties);
        let last_death = deaths.first().copied();
        let kind = job::header_text(properties, job::ERROR_KIND_HEADER)
            .or_else(|| job::header_text(properties, "x-last-death-reason"))
            .or_else(|| last_death.and_then(|d| table_text(d, "reason")))
            .unwrap_or_else(|| "unknown".to_owned());
        let error = job::header_text(properties, job::ERROR_HEADER).or_else(|| {
            last_death.map(|death| {
                format!(
                    "dead-lettered by the broker from {}: {} (count {})",
                    table_text(death, "queue").unwrap_or_else(|| "?".into()),
                    table_text(death, "reason").unwrap_or_else(|| "?".into()),
                    death
                        .inner()
                        .get("count")
                        .and_then(amqp_int)
                        .map_or_else(|| "?".to_owned(), |n| n.to_string()),
                )
            })
        });
        let dead_at = properties
            .timestamp()
            .or_else(|| match last_death?.inner().get("time")? {
                AMQPValue::Timestamp(time) => Some(*time),
                _ => None,
            });
        Self {
            job: job_of(&delivery.data),
            kind,
            error,
            attempts: job::attempts(properties),
            dead_at,
            delivery,
        }
    }

    pub fn id(&self) -> Option<i32> {
        self.job.as_ref().map(|job| job.id)
    }

    /// The job's resource (`pokemon`, `pokemon-species`, ...), `None` when the body is not a job.
    pub fn resource(&self) -> Option<&str> {
        self.job.as_ref().map(|job| job.resource.as_str())
    }

    /// Whether the letter is of `resource`; any letter when no resource is asked for. A body that
    /// is not a job has no resource, so it matches none.
    pub(super) fn is_of(&self, resource: Option<&str>) -> bool {
        resource.is_none_or(|wanted| self.resource() == Some(wanted))
    }

    pub(super) fn age_seconds(&self, now: u64) -> Option<u64> {
        self.dead_at.map(|at| now.saturating_sub(at))
    }

    pub(super) fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.delivery.data).into_owned()
    }

    /// What `list --json` shows of a letter.
    pub(super) fn summary(&self, now: u64) -> Value {
        json!({
            "resource": self.resource(),
            "id": self.id(),
            "name": self.job.as_ref().map(|job| job.name.clone()),
            "kind": self.kind,
            "error": self.error,
            "attempts": self.attempts,
            "dead_at": self.dead_at,
            "age_seconds": self.age_seconds(now),
            "message_id": self.delivery.properties.message_id().as_ref().map(|s| s.to_string()),
            "body": self.body_text(),
        })
    }

    /// What `show --json` shows: the summary plus every property and header.
    pub(super) fn detail(&self, now: u64) -> Value {
        let mut value = self.summary(now);
        value["properties"] = properties_json(&self.delivery.properties);
        value["headers"] = self
            .delivery
            .properties
            .headers()
            .as_ref()
            .map_or_else(|| json!({}), table_json);
        value["redelivered"] = json!(self.delivery.redelivered);
        value
    }
}

/// The job in a letter's body: what [`Job::decode`] reads, or else a job of another resource
/// pokeq stores ([`resources::is_known`]) that is otherwise as strict (version, positive id, size).
/// Letters of every resource share the dead queue, and the operator must see, replay and purge
/// them all even from a build whose decoder runs fewer of them.
fn job_of(body: &[u8]) -> Option<Job> {
    if let Ok(job) = Job::decode(body) {
        return Some(job);
    }
    if body.len() > job::MAX_BODY || body.trim_ascii_start().starts_with(b"[") {
        return None;
    }
    let job: Job = serde_json::from_slice(body).ok()?;
    (job.v == job::VERSION && job.id > 0 && resources::is_known(&job.resource)).then_some(job)
}

/// The broker's `x-death` entries, most recent first.
fn x_death(properties: &BasicProperties) -> Vec<&FieldTable> {
    let Some(headers) = properties.headers().as_ref() else {
        return Vec::new();
    };
    match headers.inner().get(DEATH_HEADER) {
        Some(AMQPValue::FieldArray(entries)) => entries
            .as_slice()
            .iter()
            .filter_map(|entry| match entry {
                AMQPValue::FieldTable(table) => Some(table),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The properties of a replayed job: the original ones (id, content type, trace context) without
/// any record of past failures (pokeq's `x-pokeq-*`, the broker's `x-death`, `x-first-death-*`,
/// `x-last-death-*` and `x-delivery-count`), so the consumer counts attempts from zero;
/// persistent.
pub fn fresh_properties(original: &BasicProperties) -> BasicProperties {
    let mut headers = FieldTable::default();
    if let Some(old) = original.headers().as_ref() {
        for (key, value) in old.inner() {
            let key_text = key.as_str();
            let failure = key_text.starts_with("x-pokeq-")
                || key_text == DEATH_HEADER
                || key_text == "x-delivery-count"
                || key_text.starts_with("x-first-death-")
                || key_text.starts_with("x-last-death-");
            if !failure {
                headers.insert(key.clone(), value.clone());
            }
        }
    }
    original.clone().with_headers(headers).with_delivery_mode(2)
}

pub(super) fn now() -> u64 {
    pokeq_shared::job::unix_seconds()
}

pub(super) fn id_text(letter: &Letter) -> String {
    letter
        .id()
        .map_or_else(|| "-".to_owned(), |id| id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dead::amqp::amqp_json;
    use lapin::types::{FieldArray, LongString, ShortString};

    fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
        let mut table = FieldTable::default();
        for (key, value) in entries {
            table.insert(ShortString::from(*key), value.clone());
        }
        table
    }

    fn text(value: &str) -> AMQPValue {
        AMQPValue::LongString(LongString::from(value))
    }

    fn broker_dead() -> BasicProperties {
        let death = table(&[
            ("queue", text("p.jobs")),
            ("reason", text("delivery_limit")),
            ("count", AMQPValue::LongLongInt(1)),
            ("time", AMQPValue::Timestamp(1_700_000_000)),
        ]);
        Job::new(7, "squirtle").properties().with_headers(table(&[
            (
                DEATH_HEADER,
                AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(death)])),
            ),
            ("traceparent", text("00-abc-def-01")),
        ]))
    }

    #[test]
    fn fresh_properties_drop_failure_headers_and_keep_the_rest() {
        let dead = job::with_headers(
            &broker_dead(),
            &[
                (job::ATTEMPTS_HEADER, AMQPValue::LongInt(5)),
                (job::ERROR_KIND_HEADER, text("exhausted")),
                (job::ERROR_HEADER, text("503 five times")),
                ("x-last-death-reason", text("expired")),
                ("x-delivery-count", AMQPValue::LongLongInt(21)),
            ],
        );
        let fresh = fresh_properties(&dead);
        let headers = fresh.headers().clone().unwrap_or_default();
        let keys: Vec<_> = headers.inner().keys().map(|k| k.to_string()).collect();
        assert_eq!(keys, ["traceparent"]);
        assert_eq!(job::attempts(&fresh), 0);
        assert_eq!(
            fresh.message_id().as_ref().map(|s| s.as_str()),
            Some("pokemon/7")
        );
        assert_eq!(*fresh.delivery_mode(), Some(2));
    }

    #[test]
    fn letters_of_every_stored_resource_hold_a_job_and_others_none() {
        let species = job_of(br#"{"v":1,"resource":"pokemon-species","id":133,"name":"eevee"}"#)
            .expect("a species job");
        assert_eq!(
            (species.resource.as_str(), species.id),
            ("pokemon-species", 133)
        );
        let pokemon = job_of(br#"{"v":1,"resource":"pokemon","id":25}"#).expect("a pokemon job");
        assert_eq!(pokemon.resource, "pokemon");
        for body in [
            &br#"{"v":1,"resource":"berry","id":1}"#[..],
            br#"{"v":2,"resource":"move","id":1}"#,
            br#"{"v":1,"resource":"move","id":0}"#,
            br#"[1,"move",3]"#,
            b"not a job",
        ] {
            assert!(job_of(body).is_none(), "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn broker_dead_letters_read_as_delivery_limit() {
        let properties = broker_dead();
        let deaths = x_death(&properties);
        assert_eq!(deaths.len(), 1);
        assert_eq!(
            table_text(deaths[0], "reason").as_deref(),
            Some("delivery_limit")
        );
        let value = amqp_json(&AMQPValue::FieldArray(FieldArray::from(vec![
            AMQPValue::FieldTable(deaths[0].clone()),
        ])));
        assert_eq!(value[0]["reason"], "delivery_limit");
        assert_eq!(value[0]["time"], 1_700_000_000);
    }
}
