use std::collections::HashMap;

use pokeq_shared::config::QueueType;
use pokeq_shared::topology::{RetryDelays, Topology};

use super::queues::{queue_names, queue_rows};
use super::render::render_queues;
use super::*;
use crate::management::QueueStats;
use crate::probe::Counts;

fn stats(name: &str, ready: u64) -> QueueStats {
    QueueStats {
        name: name.into(),
        queue_type: Some("classic".into()),
        messages_ready: Some(ready),
        messages_unacknowledged: Some(0),
        consumers: Some(0),
    }
}

fn found() -> Vec<QueueStats> {
    vec![
        stats("p.dead", 4),
        stats("p.dead.ledger", 0),
        stats("p.retry.10m", 0),
        stats("p.retry.5s", 1),
        stats("p.retry.30s", 2),
    ]
}

#[test]
fn queues_are_ordered_jobs_retries_by_delay_dead() {
    let topology = Topology::new("p", QueueType::Quorum, RetryDelays::default());
    let found = found();
    let names = queue_names(&topology, &found);
    let rows = queue_rows(&names, Some(&found), None);
    let names: Vec<_> = rows.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "p.jobs",
            "p.retry.5s",
            "p.retry.30s",
            "p.retry.10m",
            "p.dead",
            "p.dead.ledger"
        ]
    );
    assert!(!rows[0].exists, "jobs was not in the answer");
    assert_eq!(rows[4].messages_ready, Some(4));
    assert_eq!(rows[4].counts_source, Some("management"));
}

#[test]
fn exact_counts_win_over_the_management_sample() {
    let topology = Topology::new("p", QueueType::Quorum, RetryDelays::default());
    let found = found();
    let names = queue_names(&topology, &found);
    let mut exact = HashMap::new();
    exact.insert("p.jobs".to_owned(), None);
    exact.insert(
        "p.dead".to_owned(),
        Some(Counts {
            ready: 0,
            consumers: 1,
        }),
    );
    let rows = queue_rows(&names, Some(&found), Some(&exact));
    let dead = rows.iter().find(|r| r.name == "p.dead").expect("dead row");
    assert_eq!(dead.messages_ready, Some(0));
    assert_eq!(dead.consumers, Some(1));
    assert_eq!(dead.management_messages_ready, Some(4));
    assert_eq!(dead.counts_source, Some("amqp"));
    // A queue the management API listed but AMQP did not find is gone, whatever the
    // sample says.
    let retry = rows.iter().find(|r| r.name == "p.retry.5s").expect("row");
    assert!(!retry.exists);
    assert_eq!(retry.messages_ready, None);
    assert!(!rows[0].exists);
}

fn report(queues: Vec<QueueRow>, broker_error: Option<&str>) -> Report {
    Report {
        prefix: "p".into(),
        vhost: "/".into(),
        at: 0,
        items: None,
        throughput: None,
        producer_run: None,
        producer_runs: Vec::new(),
        api_circuit: None,
        database_error: None,
        queues: Some(queues),
        queues_error: None,
        broker_error: broker_error.map(str::to_owned),
        management_max_age_seconds: 10,
        misconfigured: None,
    }
}

#[test]
fn the_table_says_which_figures_are_exact_and_when_the_sample_is_behind() {
    let topology = Topology::new("p", QueueType::Quorum, RetryDelays::default());
    let mut found = found();
    found.push(QueueStats {
        messages_ready: Some(636),
        messages_unacknowledged: Some(128),
        ..stats("p.jobs", 0)
    });
    let names = queue_names(&topology, &found);
    let exact: HashMap<String, Option<Counts>> = names
        .iter()
        .map(|(_, name)| {
            let ready = found
                .iter()
                .find(|s| &s.name == name)
                .and_then(|s| s.messages_ready)
                .unwrap_or(0);
            let ready = if name == "p.jobs" { 0 } else { ready as u32 };
            (
                name.clone(),
                Some(Counts {
                    ready,
                    consumers: 2,
                }),
            )
        })
        .collect();
    let rows = queue_rows(&names, Some(&found), Some(&exact));
    let text = render_queues(&report(rows.clone(), None), &rows);
    assert!(
        text.contains("  p.jobs         classic      0      128          2\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "READY and CONSUMERS are exact, counted now; UNACKED is the management API's \
             sample, up to ~10s old\n"
        ),
        "{text}"
    );
    assert!(
        text.ends_with("the management API is behind: it still shows 636 ready in p.jobs\n"),
        "{text}"
    );

    let sampled = queue_rows(&names, Some(&found), None);
    let text = render_queues(
        &report(sampled.clone(), Some("connection refused")),
        &sampled,
    );
    assert!(
        text.contains("  p.jobs         classic    636      128          0\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "counts over AMQP unavailable (connection refused): every figure is the \
             management API's sample, up to ~10s old"
        ),
        "{text}"
    );
    assert!(!text.contains("behind"), "{text}");
}

#[test]
fn throughput_is_measured_from_the_first_item_of_the_window() {
    // 30 items over the last 10 s of a run that started then: 3/s, not 30/60.
    let young = Throughput::new(27, 3, Some(10.0), Some(0.2), 60);
    assert_eq!(young.window_seconds, 10.0);
    assert_eq!(young.per_second, 3.0);
    assert_eq!(young.eta_seconds, Some(20));
    // A long run: the full minute.
    let steady = Throughput::new(600, 0, Some(59.9), Some(0.0), 0);
    assert!((steady.per_second - 600.0 / 59.9).abs() < 1e-9);
    assert_eq!(steady.eta_seconds, None, "nothing remains");
    // Two items in the same instant do not make an infinite rate.
    let instant = Throughput::new(2, 0, Some(0.0), Some(0.0), 10);
    assert_eq!(instant.per_second, 2.0);
    assert_eq!(instant.eta_seconds, Some(5));
    // Nothing finished: no rate, no ETA.
    let stalled = Throughput::new(0, 0, None, None, 10);
    assert_eq!(stalled.per_second, 0.0);
    assert_eq!(stalled.eta_seconds, None);
    assert_eq!(
        stalled.describe(),
        "nothing finished in the last minute; 10 remaining, no ETA"
    );
    assert_eq!(
        young.describe(),
        "3.0/s over the last 10s (27 done, 3 failed); ETA 20s for 60 remaining"
    );
    let quiet = Throughput::new(5, 0, Some(50.0), Some(40.0), 1);
    assert!(
        quiet.describe().ends_with("; latest finished 40s ago"),
        "{}",
        quiet.describe()
    );
}
