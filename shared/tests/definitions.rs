//! The broker configuration that compose pre-loads (`deploy/rabbitmq/definitions.json`) must be
//! exactly what the binaries declare, or every binary would fail its start with
//! PRECONDITION_FAILED (or silently use a queue with other arguments).

use std::collections::BTreeSet;

use pokeq_shared::config::QueueType;
use pokeq_shared::topology::{Declaration, RetryDelays, Topology};
use serde_json::{Value, json};

fn definitions() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/rabbitmq/definitions.json"
    );
    let text = std::fs::read_to_string(path).expect("deploy/rabbitmq/definitions.json exists");
    serde_json::from_str(&text).expect("definitions.json is JSON")
}

/// Each declaration as the JSON object RabbitMQ's definitions format uses, without the vhost.
fn expected() -> BTreeSet<String> {
    let topology = Topology::new("pokeq", QueueType::Quorum, RetryDelays::default());
    topology
        .declarations()
        .into_iter()
        .map(|declaration| match declaration {
            Declaration::Exchange { name, kind } => json!({
                "exchange": name, "type": kind.as_str(), "durable": true,
                "auto_delete": false, "internal": false, "arguments": {}
            }),
            Declaration::Queue { name, arguments } => json!({
                "queue": name, "durable": true, "auto_delete": false, "arguments": arguments
            }),
            Declaration::Binding {
                exchange,
                queue,
                routing_key,
            } => json!({
                "binding": [exchange, queue, routing_key], "arguments": {}
            }),
        })
        .map(|value| value.to_string())
        .collect()
}

fn actual(definitions: &Value) -> BTreeSet<String> {
    let list = |key: &str| definitions[key].as_array().cloned().unwrap_or_default();
    let mut set = BTreeSet::new();
    for e in list("exchanges") {
        set.insert(
            json!({
                "exchange": e["name"], "type": e["type"], "durable": e["durable"],
                "auto_delete": e["auto_delete"], "internal": e["internal"],
                "arguments": e["arguments"]
            })
            .to_string(),
        );
    }
    for q in list("queues") {
        set.insert(
            json!({
                "queue": q["name"], "durable": q["durable"], "auto_delete": q["auto_delete"],
                "arguments": q["arguments"]
            })
            .to_string(),
        );
    }
    for b in list("bindings") {
        assert_eq!(b["destination_type"], "queue", "binding {b}");
        set.insert(
            json!({
                "binding": [b["source"], b["destination"], b["routing_key"]],
                "arguments": b["arguments"]
            })
            .to_string(),
        );
    }
    set
}

#[test]
fn deploy_definitions_match_what_the_binaries_declare() {
    let definitions = definitions();
    let expected = expected();
    let actual = actual(&definitions);
    let missing: Vec<_> = expected.difference(&actual).collect();
    let extra: Vec<_> = actual.difference(&expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "definitions.json drifted from the code.\nmissing: {missing:#?}\nextra: {extra:#?}"
    );
}

#[test]
fn deploy_definitions_put_everything_in_one_declared_vhost() {
    let definitions = definitions();
    let vhosts: Vec<&str> = definitions["vhosts"]
        .as_array()
        .expect("vhosts")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(vhosts.len(), 1, "one vhost: {vhosts:?}");
    for key in ["exchanges", "queues", "bindings"] {
        for item in definitions[key].as_array().expect(key) {
            assert_eq!(item["vhost"], vhosts[0], "{key}: {item}");
        }
    }
}
