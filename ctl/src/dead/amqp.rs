//! AMQP field values as text, numbers and JSON, for people and scripts reading headers.

use std::collections::BTreeMap;

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use serde_json::{Value, json};

pub(super) fn table_text(table: &FieldTable, key: &str) -> Option<String> {
    match table.inner().get(key)? {
        AMQPValue::LongString(text) => Some(String::from_utf8_lossy(text.as_bytes()).into_owned()),
        AMQPValue::ShortString(text) => Some(text.to_string()),
        _ => None,
    }
}

pub(super) fn amqp_int(value: &AMQPValue) -> Option<i64> {
    match *value {
        AMQPValue::ShortShortInt(n) => Some(i64::from(n)),
        AMQPValue::ShortShortUInt(n) => Some(i64::from(n)),
        AMQPValue::ShortInt(n) => Some(i64::from(n)),
        AMQPValue::ShortUInt(n) => Some(i64::from(n)),
        AMQPValue::LongInt(n) => Some(i64::from(n)),
        AMQPValue::LongUInt(n) => Some(i64::from(n)),
        AMQPValue::LongLongInt(n) => Some(n),
        AMQPValue::Timestamp(n) => i64::try_from(n).ok(),
        _ => None,
    }
}

/// An AMQP value as JSON, for people and scripts reading headers.
pub fn amqp_json(value: &AMQPValue) -> Value {
    match value {
        AMQPValue::Boolean(b) => json!(b),
        AMQPValue::Float(f) => json!(f),
        AMQPValue::Double(f) => json!(f),
        AMQPValue::DecimalValue(d) => json!(f64::from(d.value) / 10f64.powi(i32::from(d.scale))),
        AMQPValue::ShortString(text) => json!(text.as_str()),
        AMQPValue::LongString(text) => json!(String::from_utf8_lossy(text.as_bytes())),
        AMQPValue::FieldArray(values) => {
            Value::Array(values.as_slice().iter().map(amqp_json).collect())
        }
        AMQPValue::FieldTable(table) => table_json(table),
        AMQPValue::ByteArray(bytes) => json!(String::from_utf8_lossy(bytes.as_slice())),
        AMQPValue::Void => Value::Null,
        other => amqp_int(other).map_or(Value::Null, |n| json!(n)),
    }
}

pub(super) fn table_json(table: &FieldTable) -> Value {
    Value::Object(
        table
            .inner()
            .iter()
            .map(|(key, value)| (key.to_string(), amqp_json(value)))
            .collect(),
    )
}

pub(super) fn properties_json(properties: &BasicProperties) -> Value {
    let text = |value: &Option<ShortString>| value.as_ref().map(|s| s.to_string());
    let mut map = BTreeMap::new();
    let mut put = |key: &str, value: Value| {
        if !value.is_null() {
            map.insert(key.to_owned(), value);
        }
    };
    put("content_type", json!(text(properties.content_type())));
    put(
        "content_encoding",
        json!(text(properties.content_encoding())),
    );
    put("delivery_mode", json!(properties.delivery_mode()));
    put("priority", json!(properties.priority()));
    put("correlation_id", json!(text(properties.correlation_id())));
    put("reply_to", json!(text(properties.reply_to())));
    put("expiration", json!(text(properties.expiration())));
    put("message_id", json!(text(properties.message_id())));
    put("timestamp", json!(properties.timestamp()));
    put("type", json!(text(properties.kind())));
    put("user_id", json!(text(properties.user_id())));
    put("app_id", json!(text(properties.app_id())));
    json!(map)
}
