//! `pokeq status` and `pokeq dead ...` against the real RabbitMQ and Postgres of this machine.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use clap::Parser;
use pokeq_ctl::Cli;
use pokeq_shared::job::{self, Job};
use serde_json::Value;
use support::{Outcome, TestEnv};

fn queue<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["queues"]
        .as_array()
        .and_then(|queues| queues.iter().find(|q| q["name"] == name))
        .unwrap_or_else(|| panic!("no queue {name} in {report}"))
}

#[tokio::test]
async fn status_json_reports_items_queues_and_the_last_producer_run() {
    let env = TestEnv::start().await;
    env.seed_items(&[
        (1, "pending", None, None),
        (2, "pending", None, None),
        (3, "queued", None, None),
        (4, "done", None, None),
        (5, "done", None, None),
        (6, "done", None, None),
        (7, "failed", Some("not_found"), Some("404")),
        (8, "failed", Some("not_found"), Some("404")),
        (9, "failed", Some("exhausted"), Some("503")),
    ])
    .await;
    {
        let client = env.store.pool().get().await.expect("client");
        client
            .batch_execute(
                "insert into producer_runs (state, total, pages_planned, pages_done, listed,
                                            published, skipped, finished_at)
                 values ('done', 1302, 14, 14, 1302, 1300, 2, now());
                 insert into producer_runs (state, total, pages_planned, pages_done, listed,
                                            published, skipped)
                 values ('running', 1302, 14, 4, 400, 380, 20);",
            )
            .await
            .expect("seed producer runs");
    }
    for id in [1, 2, 3] {
        env.publish_job(id, "mon").await;
    }
    env.publish_dead_job(7, "mon7", "not_found").await;
    env.publish_dead_job(8, "mon8", "not_found").await;

    // The management API refreshes queue statistics every few seconds: wait for them.
    let jobs = env.topology().jobs();
    let dead = env.topology().dead();
    let deadline = Instant::now() + Duration::from_secs(30);
    let report = loop {
        let outcome = env.pokeq(&["status", "--json"], None).await;
        assert_eq!(outcome.code(), 0, "{:?}\n{}", outcome.result, outcome.out);
        let report = outcome.json();
        let (j, d) = (queue(&report, &jobs), queue(&report, &dead));
        let settled = j["messages_ready"] == 3
            && j["messages_unacknowledged"] == 0
            && j["consumers"] == 0
            && d["messages_ready"] == 2;
        if settled {
            break report;
        }
        assert!(
            Instant::now() < deadline,
            "queue figures never matched: {report:#}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    let items = &report["items"];
    assert_eq!(items["pending"], 2);
    assert_eq!(items["queued"], 1);
    assert_eq!(items["done"], 3);
    assert_eq!(items["failed"], 3);
    assert_eq!(items["total"], 9);
    assert_eq!(items["failed_by_kind"]["not_found"], 2);
    assert_eq!(items["failed_by_kind"]["exhausted"], 1);

    let jobs_queue = queue(&report, &jobs);
    assert_eq!(jobs_queue["type"], "quorum");
    assert_eq!(jobs_queue["messages_unacknowledged"], 0);
    assert_eq!(jobs_queue["consumers"], 0);
    let names: Vec<&str> = report["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .filter_map(|q| q["name"].as_str())
        .collect();
    let p = &env.prefix;
    let expected: Vec<String> = [
        "jobs",
        "retry.1s",
        "retry.5s",
        "retry.30s",
        "retry.2m",
        "retry.10m",
        "dead",
        "dead.ledger",
    ]
    .iter()
    .map(|suffix| format!("{p}.{suffix}"))
    .collect();
    assert_eq!(names, expected);
    assert!(report["queues_error"].is_null());
    assert!(report["database_error"].is_null());

    let run = &report["producer_run"];
    assert_eq!(run["state"], "running");
    assert_eq!(run["pages_done"], 4);
    assert_eq!(run["pages_planned"], 14);
    assert_eq!(run["listed"], 400);
    assert_eq!(run["published"], 380);
    assert_eq!(run["skipped"], 20);
    assert!(run["finished_at"].is_null());

    // The table for people carries the same figures.
    let text = env.pokeq(&["status"], None).await;
    assert_eq!(text.code(), 0, "{:?}", text.result);
    assert!(
        text.out.contains("exhausted 1, not_found 2"),
        "{}",
        text.out
    );
    assert!(
        text.out
            .contains("pages 4/14, listed 400, published 380, skipped 20"),
        "{}",
        text.out
    );
    assert!(text.out.contains(&format!("{p}.retry.10m")), "{}", text.out);
}

#[tokio::test]
async fn status_says_which_consumers_wait_for_the_api() {
    let env = TestEnv::start().await;
    let text = env.pokeq(&["status"], None).await;
    assert!(text.out.contains("API circuit: closed"), "{}", text.out);

    // What a consumer records when its circuit opens (see consumer/src/circuit.rs).
    let since = job::unix_millis() - 42_000;
    env.store
        .record_circuit(
            "pokeq-consumer@host-a:7",
            Some((since, "connection failed: connection refused")),
        )
        .await
        .expect("recorded");
    let text = env.pokeq(&["status"], None).await;
    assert!(
        text.out.contains("API circuit: OPEN in 1 consumer since"),
        "{}",
        text.out
    );
    assert!(text.out.contains("connection refused"), "{}", text.out);
    let json = env.pokeq(&["status", "--json"], None).await;
    let report: Value = serde_json::from_str(&json.out).expect("json");
    assert_eq!(report["api_circuit"]["open_consumers"], 1);
    assert_eq!(
        report["api_circuit"]["processes"][0],
        "pokeq-consumer@host-a:7"
    );
    assert!(report["api_circuit"]["seconds_open"].as_u64() >= Some(41));

    // Closed again: the row goes.
    env.store
        .record_circuit("pokeq-consumer@host-a:7", None)
        .await
        .expect("recorded");
    let json = env.pokeq(&["status", "--json"], None).await;
    let report: Value = serde_json::from_str(&json.out).expect("json");
    assert_eq!(report["api_circuit"]["open_consumers"], 0);
}

#[tokio::test]
async fn status_without_management_api_prints_the_database_part_and_fails() {
    let env = TestEnv::start().await;
    env.seed_items(&[(1, "done", None, None)]).await;
    let args = env.args(&[
        "status",
        "--management-url",
        "http://guest:sekrit@127.0.0.1:1",
    ]);
    let config = Cli::try_parse_from(args)
        .expect("flags")
        .validate()
        .expect("config");
    let mut out = Vec::new();
    let console = pokeq_ctl::Console {
        out: &mut out,
        input: None,
        terminal: false,
    };
    let result = pokeq_ctl::run_with(
        config,
        pokeq_shared::shutdown::CancellationToken::new(),
        console,
    )
    .await;
    let outcome = Outcome {
        out: String::from_utf8(out).expect("UTF-8"),
        result,
    };
    assert_eq!(outcome.code(), 1);
    let error = format!("{:#}", outcome.result.as_ref().unwrap_err());
    assert!(error.contains("queue figures unavailable"), "{error}");
    assert!(
        outcome.out.contains("queue figures unavailable"),
        "{}",
        outcome.out
    );
    assert!(outcome.out.contains("done         1"), "{}", outcome.out);
    assert!(!outcome.out.contains("sekrit") && !error.contains("sekrit"));
}

#[tokio::test]
async fn list_shows_exactly_the_dead_letters_and_leaves_the_queue_as_it_was() {
    let env = TestEnv::start().await;
    let dead = env.topology().dead();
    env.publish_dead_job(25, "pikachu", "not_found").await;
    env.publish_dead_job(26, "raichu", "exhausted").await;
    env.publish_dead(b"not a job", "invalid_message", "body is not a job", 0)
        .await;
    env.publish_dead_job(27, "sandshrew", "not_found").await;
    env.broker_dead_letter(28, "sandslash").await;
    assert_eq!(env.ready(&dead).await, 5);

    let all = env.pokeq(&["dead", "list", "--json"], None).await;
    assert_eq!(all.code(), 0, "{:?}", all.result);
    assert_eq!(
        env.ready(&dead).await,
        5,
        "list must hand every letter back"
    );
    let listed = all.json();
    assert_eq!(listed["depth"], 5);
    assert_eq!(listed["shown"], 5);
    let letters = listed["letters"].as_array().expect("letters");
    let seen: Vec<(Value, &str)> = letters
        .iter()
        .map(|l| (l["id"].clone(), l["kind"].as_str().unwrap_or("?")))
        .collect();
    assert_eq!(
        seen,
        [
            (Value::from(25), "not_found"),
            (Value::from(26), "exhausted"),
            (Value::Null, "invalid_message"),
            (Value::from(27), "not_found"),
            (Value::from(28), "delivery_limit"),
        ]
    );
    assert_eq!(letters[0]["error"], "not_found for pikachu");
    assert_eq!(letters[0]["attempts"], 2);
    assert_eq!(letters[2]["body"], "not a job");
    assert!(
        letters[4]["age_seconds"].is_u64(),
        "a broker dead letter has an x-death time: {}",
        letters[4]
    );

    let not_found = env
        .pokeq(&["dead", "list", "--kind", "not_found", "--json"], None)
        .await
        .json();
    let ids: Vec<&Value> = not_found["letters"]
        .as_array()
        .expect("letters")
        .iter()
        .map(|l| &l["id"])
        .collect();
    assert_eq!(ids, [25, 27]);

    let limited = env
        .pokeq(&["dead", "list", "--limit", "2", "--json"], None)
        .await
        .json();
    assert_eq!(limited["shown"], 2);
    assert_eq!(limited["limit_reached"], true);

    let text = env.pokeq(&["dead", "list"], None).await;
    assert!(text.out.contains("pikachu"), "{}", text.out);
    assert!(text.out.contains("delivery_limit"), "{}", text.out);
    assert_eq!(text.last_line(), format!("5 shown, 5 in {dead}"));

    let show = env.pokeq(&["dead", "show", "28", "--json"], None).await;
    assert_eq!(show.code(), 0, "{:?}", show.result);
    let shown = show.json();
    assert_eq!(
        shown["letters"][0]["headers"]["x-death"][0]["reason"],
        "delivery_limit"
    );
    let text = env.pokeq(&["dead", "show", "25"], None).await;
    assert_eq!(text.code(), 0, "{:?}", text.result);
    assert_eq!(
        text.out.matches("not_found for pikachu").count(),
        1,
        "the reason is shown once:\n{}",
        text.out
    );
    let missing = env.pokeq(&["dead", "show", "999"], None).await;
    assert_eq!(missing.code(), 1);
    assert!(
        missing.out.contains("No dead letter for pokemon 999"),
        "{}",
        missing.out
    );

    // Nothing lost and nothing reordered by all those reads.
    assert_eq!(env.ready(&dead).await, 5);
    let order: Vec<Option<i32>> = env.drain(&dead).await.iter().map(|m| m.id()).collect();
    assert_eq!(order, [Some(25), Some(26), None, Some(27), Some(28)]);
}

#[tokio::test]
async fn replay_of_a_kind_moves_exactly_those_letters_to_the_jobs_queue() {
    let env = TestEnv::start().await;
    let (jobs, dead) = (env.topology().jobs(), env.topology().dead());
    env.seed_items(&[
        (1, "failed", Some("not_found"), Some("404")),
        (2, "failed", Some("not_found"), Some("404")),
        (3, "failed", Some("exhausted"), Some("503")),
    ])
    .await;
    env.publish_dead_job(1, "bulbasaur", "not_found").await;
    env.publish_dead_job(3, "venusaur", "exhausted").await;
    env.publish_dead(b"{}", "invalid_message", "body is not a job", 0)
        .await;
    env.publish_dead_job(2, "ivysaur", "not_found").await;

    let replay = env
        .pokeq(&["dead", "replay", "--kind", "not_found"], None)
        .await;
    assert_eq!(replay.code(), 0, "{:?}", replay.result);
    assert_eq!(replay.last_line(), "replayed=2 kept=2");
    assert_eq!(env.ready(&jobs).await, 2);
    assert_eq!(env.ready(&dead).await, 2);

    let replayed = env.drain(&jobs).await;
    let ids: Vec<Option<i32>> = replayed.iter().map(|m| m.id()).collect();
    assert_eq!(ids, [Some(1), Some(2)]);
    for message in &replayed {
        // Only the trace context (kept so the job can still be followed) and the broker's own
        // delivery counter, set as the jobs queue delivered it here.
        let headers = message.header_names();
        assert!(
            headers
                .iter()
                .all(|h| h == "x-delivery-count" || h == "traceparent"),
            "{headers:?}"
        );
        assert_eq!(job::attempts(&message.properties), 0);
        assert_eq!(
            message
                .properties
                .message_id()
                .as_ref()
                .map(|s| s.to_string()),
            message.id().map(|id| format!("pokemon/{id}"))
        );
        assert_eq!(*message.properties.delivery_mode(), Some(2));
    }
    assert_eq!(replayed[0].body, Job::new(1, "bulbasaur").encode());
    assert_eq!(env.item(1).await.0, "queued");
    assert_eq!(env.item(1).await.1, 0);
    assert_eq!(env.item(2).await.0, "queued");
    assert_eq!(env.item(3).await.0, "failed");

    // One id, and the invalid body is kept unless asked for by its kind.
    let one = env.pokeq(&["dead", "replay", "--id", "3"], None).await;
    assert_eq!(one.last_line(), "replayed=1 kept=1");
    assert_eq!(env.ready(&jobs).await, 1);
    assert_eq!(env.item(3).await.0, "queued");
    let all = env.pokeq(&["dead", "replay", "--all"], None).await;
    assert_eq!(all.last_line(), "replayed=0 kept=1");
    assert_eq!(env.ready(&dead).await, 1);

    // No selection at all is bad usage (exit 2), refused before anything runs.
    let error = Cli::try_parse_from(env.args(&["dead", "replay"])).unwrap_err();
    assert_eq!(error.exit_code(), 2);
}

#[tokio::test]
async fn purge_needs_a_confirmation_and_removes_exactly_that_kind() {
    let env = TestEnv::start().await;
    let dead = env.topology().dead();
    env.seed_items(&[
        (1, "failed", Some("not_found"), Some("404 from the API")),
        (2, "failed", Some("not_found"), Some("404 from the API")),
        (3, "failed", Some("exhausted"), Some("503")),
    ])
    .await;
    env.publish_dead_job(1, "bulbasaur", "not_found").await;
    env.publish_dead_job(3, "venusaur", "exhausted").await;
    env.publish_dead_job(2, "ivysaur", "not_found").await;

    let refused = env
        .pokeq(&["dead", "purge", "--kind", "not_found"], None)
        .await;
    assert_eq!(refused.code(), 2);
    assert!(format!("{:#}", refused.result.unwrap_err()).contains("--yes"));
    assert_eq!(env.ready(&dead).await, 3);

    let declined = env
        .pokeq(&["dead", "purge", "--kind", "not_found"], Some("n\n"))
        .await;
    assert_eq!(
        declined.code(),
        1,
        "a declined purge is not a purge done: {:?}",
        declined.result
    );
    assert!(
        declined
            .out
            .starts_with("Purge 2 dead letters of kind not_found? [y/N] ")
    );
    assert_eq!(declined.last_line(), "purged=0");
    assert_eq!(env.ready(&dead).await, 3);

    let purged = env
        .pokeq(&["dead", "purge", "--kind", "not_found", "--yes"], None)
        .await;
    assert_eq!(purged.code(), 0, "{:?}", purged.result);
    assert_eq!(purged.last_line(), "purged=2");
    assert_eq!(env.ready(&dead).await, 1);
    for id in [1, 2] {
        let (status, _, error) = env.item(id).await;
        assert_eq!(status, "failed");
        assert_eq!(
            error.as_deref(),
            Some(
                format!(
                    "purged by operator: not_found for {}",
                    ["bulbasaur", "ivysaur"][id as usize - 1]
                )
                .as_str()
            )
        );
    }
    assert_eq!(env.item(3).await.2.as_deref(), Some("503"));
    let left: Vec<Option<i32>> = env.drain(&dead).await.iter().map(|m| m.id()).collect();
    assert_eq!(left, [Some(3)]);
}

/// The built binary: exit statuses and stdout as a script sees them.
#[tokio::test]
async fn binary_prints_status_json_and_refuses_an_unconfirmed_purge() {
    let env = TestEnv::start().await;
    env.seed_items(&[(1, "done", None, None), (2, "queued", None, None)])
        .await;
    env.publish_dead_job(2, "ivysaur", "not_found").await;
    let run = |extra: &[&str]| {
        let args = env.args(extra);
        tokio::process::Command::new(env!("CARGO_BIN_EXE_pokeq"))
            .args(&args[1..])
            .env("MANAGEMENT_URL", &env.management_url)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .output()
    };

    let status = run(&["status", "--json"]).await.expect("pokeq runs");
    assert_eq!(
        status.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let report: Value = serde_json::from_slice(&status.stdout).expect("one JSON document");
    assert_eq!(report["items"]["done"], 1);
    assert_eq!(report["items"]["queued"], 1);

    let purge = run(&["dead", "purge", "--kind", "not_found"])
        .await
        .expect("pokeq runs");
    assert_eq!(purge.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&purge.stderr).contains("--yes"));
    assert_eq!(env.ready(&env.topology().dead()).await, 1);

    let usage = run(&["dead", "replay"]).await.expect("pokeq runs");
    assert_eq!(usage.status.code(), Some(2));
}
