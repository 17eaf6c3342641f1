//! `pokeq workers` against the real RabbitMQ (AMQP and management API) and Postgres, with two
//! real consumers running in this process.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use pokeapi_stub::{FaultKind, FaultRule};
use pokeq_shared::job;
use serde_json::Value;
use support::TestEnv;
use support::pipeline::{pokeq, spawn_consumer, stub};

fn workers(report: &Value) -> &Vec<Value> {
    report["workers"].as_array().expect("a workers list")
}

/// The workers report once `check` holds for it; the management API samples figures every 5 s.
async fn report_when(env: &TestEnv, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let outcome = pokeq(env, &["workers", "--json"], None).await;
        assert_eq!(outcome.code(), 0, "{:?}\n{}", outcome.result, outcome.out);
        let report = outcome.json();
        if check(&report) {
            return report;
        }
        assert!(Instant::now() < deadline, "never saw {what}: {report:#}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Both in-process consumers share one metrics recorder (a real consumer is a process of its
/// own), so the API figure is the sum of both: 7 + 11 requests held by slow bodies.
#[tokio::test]
async fn workers_lists_each_live_consumer_with_what_it_holds() {
    let env = TestEnv::start().await;
    // Ids 1..=18 answer headers at once and their body only after a minute: their requests stay
    // in flight and their deliveries in hand for as long as the test looks.
    let slow: HashMap<i32, FaultRule> = (1..=18)
        .map(|id| {
            let slow = FaultKind::SlowBody(Duration::from_secs(60));
            (id, FaultRule::always(slow))
        })
        .collect();
    let api = stub(200, slow).await;
    let extra = |prefetch: &'static str| {
        [
            "--prefetch",
            prefetch,
            "--http-timeout",
            "90s",
            "--shutdown-grace",
            "100ms",
        ]
    };
    let small = spawn_consumer(&env, &api, &extra("7"));
    let large = spawn_consumer(&env, &api, &extra("11"));

    let idle = report_when(&env, "two consumers", |r| workers(r).len() == 2).await;
    let pid = std::process::id();
    let name = pokeq_consumer::process_name();
    let mut prefetches = Vec::new();
    for worker in workers(&idle) {
        assert_eq!(worker["name"], name.as_str(), "{worker:#}");
        assert_eq!(worker["pid"], pid, "{worker:#}");
        assert!(worker["host"].as_str().is_some_and(|h| !h.is_empty()));
        assert_eq!(worker["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(worker["retry_delays"][0], "1s");
        assert!(
            worker["started_at"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z'))
        );
        assert_eq!(worker["circuit"]["open"], false);
        assert_eq!(worker["api_in_flight"], 0, "{worker:#}");
        assert_eq!(worker["metrics_error"], Value::Null, "{worker:#}");
        assert_eq!(worker["last_job_finished_at"], Value::Null);
        prefetches.push(worker["prefetch"].as_u64().expect("prefetch"));
    }
    prefetches.sort();
    assert_eq!(prefetches, [7, 11]);

    // A quick job: its finish shows up as the last job.
    env.publish_job(100, "mon100").await;
    let after_job = report_when(&env, "the last job finished", |r| {
        workers(r)
            .iter()
            .all(|w| w["seconds_since_last_job"].as_u64().is_some())
    })
    .await;
    assert!(workers(&after_job)[0]["seconds_since_last_job"].as_u64() < Some(30));

    // 18 slow jobs: each consumer holds as many as its prefetch allows.
    for id in 1..=18 {
        env.publish_job(id, "slow").await;
    }
    let busy = report_when(&env, "each consumer holding its prefetch", |r| {
        workers(r)
            .iter()
            .all(|w| w["in_hand"] == w["prefetch"] && w["api_in_flight"] == 18)
    })
    .await;
    let mut held: Vec<u64> = workers(&busy)
        .iter()
        .map(|w| w["in_hand"].as_u64().unwrap_or_default())
        .collect();
    held.sort();
    assert_eq!(held, [7, 11]);

    // An open API circuit, recorded as the consumer does (keyed by its connection's name).
    let since = job::unix_millis() - 5_000;
    env.store
        .record_circuit(&name, Some((since, "connection refused")))
        .await
        .expect("recorded");
    let text = pokeq(&env, &["workers"], None).await;
    assert_eq!(text.code(), 0, "{:?}\n{}", text.result, text.out);
    assert!(
        text.out
            .contains(&format!("2 consumers on {}", env.topology().jobs())),
        "{}",
        text.out
    );
    assert!(text.out.contains(&pid.to_string()), "{}", text.out);
    assert!(text.out.contains("open "), "{}", text.out);
    assert!(text.out.contains("connection refused"), "{}", text.out);
    let json = pokeq(&env, &["workers", "--json"], None).await.json();
    for worker in workers(&json) {
        assert_eq!(worker["circuit"]["open"], true, "{worker:#}");
        assert!(worker["circuit"]["seconds_open"].as_u64() >= Some(4));
    }

    small.stop().await;
    large.stop().await;
    let gone = report_when(&env, "no consumer", |r| workers(r).is_empty()).await;
    assert_eq!(gone["queue"], env.topology().jobs().as_str());
    let text = pokeq(&env, &["workers"], None).await;
    assert!(text.out.contains("0 consumers on"), "{}", text.out);
}
