//! Who declares what, and `pokeq topology [prune]`, against the real RabbitMQ (AMQP and
//! management API) and Postgres, with the real producer and consumers in this process.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use lapin::options::BasicConsumeOptions;
use lapin::types::{FieldTable, ShortString};
use pokeq_shared::broker;
use pokeq_shared::config::QueueType;
use pokeq_shared::job::Job;
use pokeq_shared::testkit::Fresh;
use pokeq_shared::topology::{RetryDelays, Topology};
use serde_json::Value;
use support::TestEnv;
use support::pipeline::{declared, pokeq, run_producer, spawn_consumer, stub};

fn queue<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["queues"]
        .as_array()
        .and_then(|queues| queues.iter().find(|q| q["name"] == name))
        .unwrap_or_else(|| panic!("no queue {name} in {report:#}"))
}

fn unused(report: &Value) -> Vec<String> {
    report["unused"]
        .as_array()
        .expect("unused list")
        .iter()
        .filter_map(|name| name.as_str().map(str::to_owned))
        .collect()
}

/// The `topology --json` report once `check` holds for it (a consumer shows in the management
/// API a moment after it connected).
async fn report_when(fresh: &Fresh, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let outcome = pokeq(fresh, &["topology", "--json"], None).await;
        assert_eq!(outcome.code(), 0, "{:?}\n{}", outcome.result, outcome.out);
        let report = outcome.json();
        if check(&report) {
            return report;
        }
        assert!(Instant::now() < deadline, "never saw {what}: {report:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn live_consumers(report: &Value) -> usize {
    report["consumers"].as_array().map_or(0, Vec::len)
}

#[tokio::test]
async fn producer_declares_no_wait_queue_and_each_consumer_declares_its_own() {
    // No topology declared up front: what exists afterwards is what the binaries declared.
    let fresh = Fresh::start("ctltopo").await;
    let api = stub(5, HashMap::new()).await;
    let summary = run_producer(&fresh, &api).await;
    assert_eq!(summary.published, 5);
    let p = &fresh.prefix;
    let (queues, exchanges) = declared(p).await;
    assert_eq!(
        queues,
        [
            format!("{p}.dead"),
            format!("{p}.dead.ledger"),
            format!("{p}.jobs")
        ]
    );
    assert_eq!(exchanges, [format!("{p}.dead"), format!("{p}.jobs")]);

    let consumer = spawn_consumer(&fresh, &api, &["--retry-delays", "2s,7s"]);
    let report = report_when(&fresh, "the consumer", |r| live_consumers(r) == 1).await;
    let (queues, exchanges) = declared(p).await;
    assert_eq!(
        queues,
        [
            format!("{p}.dead"),
            format!("{p}.dead.ledger"),
            format!("{p}.jobs"),
            format!("{p}.retry.2s"),
            format!("{p}.retry.7s")
        ]
    );
    assert!(exchanges.contains(&format!("{p}.retry")), "{exchanges:?}");
    let names: Vec<&str> = report["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .filter_map(|q| q["name"].as_str())
        .collect();
    let expected = [
        format!("{p}.jobs"),
        format!("{p}.retry.2s"),
        format!("{p}.retry.7s"),
        format!("{p}.dead"),
        format!("{p}.dead.ledger"),
    ];
    assert_eq!(names, expected, "jobs, wait queues by delay, dead, ledger");
    let seven = queue(&report, &format!("{p}.retry.7s"));
    assert_eq!(seven["usage"], "used");
    assert_eq!(seven["used_by"], 1);
    assert_eq!(seven["arguments"]["x-message-ttl"], 7000);
    assert_eq!(queue(&report, &format!("{p}.jobs"))["consumers"], 1);
    assert_eq!(report["consumers"][0]["retry_delays"][1], "7s");
    assert!(unused(&report).is_empty());

    let text = pokeq(&fresh, &["topology"], None).await;
    assert!(text.out.contains("used by 1 consumer"), "{}", text.out);
    assert!(
        text.out.contains("No unused empty wait queue."),
        "{}",
        text.out
    );

    consumer.stop().await;
}

#[tokio::test]
async fn prune_deletes_only_empty_wait_queues_no_live_consumer_uses_after_asking() {
    // The default topology (1s, 5s, 30s, 2m, 10m), as an earlier consumer would have left it.
    let env = TestEnv::start().await;
    let p = env.prefix.clone();
    // A wait queue of an old schedule that still holds a job.
    let old = Topology::new(
        &p,
        QueueType::Quorum,
        RetryDelays::parse("1h").expect("delay"),
    );
    old.declare(&env.channel).await.expect("declare 1h");
    let waiting = Job::new(9, "blastoise");
    broker::publish(
        &env.channel,
        &old.retry(),
        "1h",
        &waiting.encode(),
        waiting.properties(),
    )
    .await
    .expect("a job waits in 1h");
    let api = stub(5, HashMap::new()).await;
    let consumer = spawn_consumer(&env, &api, &["--retry-delays", "1s,5s"]);
    let report = report_when(&env, "the consumer", |r| live_consumers(r) == 1).await;

    let name = |label: &str| format!("{p}.retry.{label}");
    assert_eq!(queue(&report, &name("1s"))["usage"], "used");
    assert_eq!(queue(&report, &name("5s"))["usage"], "used");
    assert_eq!(queue(&report, &name("1h"))["usage"], "unused_not_empty");
    assert_eq!(queue(&report, &name("1h"))["messages_ready"], 1);
    let candidates = [name("30s"), name("2m"), name("10m")];
    assert_eq!(unused(&report), candidates);
    let text = pokeq(&env, &["topology"], None).await;
    assert!(text.out.contains("UNUSED"), "{}", text.out);
    assert!(
        text.out.contains("3 unused empty wait queues"),
        "{}",
        text.out
    );

    // Nobody to ask: refused as usage (2). Declined: exit 1. Both delete nothing.
    let refused = pokeq(&env, &["topology", "prune"], None).await;
    assert_eq!(refused.code(), 2);
    let declined = pokeq(&env, &["topology", "prune"], Some("n\n")).await;
    assert_eq!(declined.code(), 1, "{}", declined.out);
    assert!(declined.out.contains(&name("30s")), "{}", declined.out);
    let (queues, _) = declared(&p).await;
    assert!(candidates.iter().all(|q| queues.contains(q)), "{queues:?}");

    let confirmed = pokeq(&env, &["topology", "prune"], Some("y\n")).await;
    assert_eq!(confirmed.code(), 0, "{:?}", confirmed.result);
    assert_eq!(confirmed.last_line(), "pruned=3 kept=0");
    let (queues, _) = declared(&p).await;
    assert!(candidates.iter().all(|q| !queues.contains(q)), "{queues:?}");
    for kept in [name("1s"), name("5s"), name("1h")] {
        assert!(queues.contains(&kept), "{kept} is gone: {queues:?}");
    }
    assert_eq!(
        env.ready(&name("1h")).await,
        1,
        "the waiting job is still there"
    );

    // With the consumer stopped, nobody uses 1s and 5s any more.
    consumer.stop().await;
    let report = report_when(&env, "no consumer", |r| live_consumers(r) == 0).await;
    assert_eq!(unused(&report), [name("1s"), name("5s")]);
    let pruned = pokeq(&env, &["topology", "prune", "--yes"], None).await;
    assert_eq!(pruned.last_line(), "pruned=2 kept=0", "{}", pruned.out);
    let (queues, _) = declared(&p).await;
    assert_eq!(
        queues,
        [
            format!("{p}.dead"),
            format!("{p}.dead.ledger"),
            format!("{p}.jobs"),
            name("1h")
        ]
    );
}

#[tokio::test]
async fn a_consumer_that_does_not_say_its_delays_keeps_every_wait_queue() {
    let env = TestEnv::start().await;
    // A consumer of an older build: it consumes, but advertises nothing.
    let old = broker::connect_once(&env.amqp_url, "pokeq-consumer", None)
        .await
        .expect("connect");
    let channel = old.create_channel().await.expect("channel");
    let _deliveries = channel
        .basic_consume(
            ShortString::from(env.topology().jobs()),
            ShortString::from("old"),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let report = report_when(&env, "the old consumer", |r| live_consumers(r) == 1).await;
    assert_eq!(report["consumers"][0]["retry_delays"], Value::Null);
    let retry_queues: Vec<&Value> = report["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .filter(|q| q["role"] == "retry")
        .collect();
    assert_eq!(retry_queues.len(), 5);
    assert!(retry_queues.iter().all(|q| q["usage"] == "unknown"));
    assert!(unused(&report).is_empty());

    let pruned = pokeq(&env, &["topology", "prune", "--yes"], None).await;
    assert_eq!(pruned.code(), 0);
    assert_eq!(pruned.last_line(), "pruned=0 kept=0");
    let (queues, _) = declared(&env.prefix).await;
    assert_eq!(
        queues.len(),
        8,
        "jobs, dead, ledger, five wait queues: {queues:?}"
    );
    broker::close_channel(&channel).await;
    broker::close(&old).await;
}
