//! `pokeq status` tells the truth (exact counts, throughput, ETA, producer runs) and
//! `pokeq status --wait` ends as a script needs it to, against the real RabbitMQ and Postgres of
//! this machine and, for whole runs, a consumer running in-process against the PokeAPI stub.

mod support;

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use lapin::options::{BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::{FieldTable, ShortString};
use pokeapi_stub::{FaultKind, FaultRule, StubConfig, StubHandle};
use pokeq_ctl::{Cli, Console};
use pokeq_shared::shutdown::CancellationToken;
use serde_json::Value;
use support::{Outcome, TestEnv, wait_until};
use tokio::task::JoinHandle;

/// Output a command running in another task writes, readable while it runs.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Shared {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().expect("lock").clone()).expect("UTF-8")
    }
}

/// `pokeq <args>` (the full command line) started in its own task.
fn spawn_pokeq(args: Vec<String>) -> (Shared, JoinHandle<anyhow::Result<()>>) {
    let config = Cli::try_parse_from(&args)
        .expect("flags parse")
        .validate()
        .expect("config valid");
    let shared = Shared::default();
    let mut out = shared.clone();
    let task = tokio::spawn(async move {
        let console = Console {
            out: &mut out,
            input: None,
            terminal: false,
        };
        pokeq_ctl::run_with(config, CancellationToken::new(), console).await
    });
    (shared, task)
}

/// `pokeq status --wait <extra>` for this test's services, in its own task.
fn spawn_wait(env: &TestEnv, extra: &[&str]) -> (Shared, JoinHandle<anyhow::Result<()>>) {
    let mut args = env.args(&["status", "--wait"]);
    args.extend(extra.iter().map(|s| s.to_string()));
    spawn_pokeq(args)
}

async fn finished(task: JoinHandle<anyhow::Result<()>>, shared: &Shared) -> Outcome {
    let result = tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .unwrap_or_else(|_| panic!("status --wait still waiting: {}", shared.text()))
        .expect("no panic");
    Outcome {
        out: shared.text(),
        result,
    }
}

/// Whether the broker has `queue`, asked passively (a missing queue is not created).
async fn queue_exists(env: &TestEnv, queue: &str) -> bool {
    let channel = env.connection.create_channel().await.expect("channel");
    let declared = channel
        .queue_declare(
            ShortString::from(queue),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await;
    if declared.is_ok() {
        let _ = channel.close(200, ShortString::from("ok")).await;
    }
    declared.is_ok()
}

/// A consumer of this test's jobs, in-process, against `stub`.
fn spawn_consumer(
    env: &TestEnv,
    stub: &StubHandle,
) -> (CancellationToken, JoinHandle<anyhow::Result<()>>) {
    let args = [
        "consumer",
        "--amqp-url",
        &env.amqp_url,
        "--database-url",
        &env.database_url,
        "--pokeapi-url",
        &stub.base_url(),
        "--prefix",
        &env.prefix,
        "--rate",
        "0",
        "--metrics-addr",
        "127.0.0.1:0",
    ];
    let config = pokeq_consumer::Cli::try_parse_from(args)
        .expect("consumer flags")
        .validate()
        .expect("consumer config");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(pokeq_consumer::run(config, shutdown.clone()));
    (shutdown, task)
}

async fn stop(consumer: (CancellationToken, JoinHandle<anyhow::Result<()>>)) {
    consumer.0.cancel();
    tokio::time::timeout(Duration::from_secs(60), consumer.1)
        .await
        .expect("consumer stops")
        .expect("no panic")
        .expect("consumer ends cleanly");
}

async fn stub(faults: HashMap<i32, FaultRule>) -> StubHandle {
    pokeapi_stub::spawn(
        StubConfig {
            count: 20,
            faults,
            ..StubConfig::default()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .expect("stub starts")
}

/// Items 1..=n `queued` with their jobs in the jobs queue: what a producer leaves behind.
async fn queue_items(env: &TestEnv, n: i32) {
    let items: Vec<(i32, &str, Option<&str>, Option<&str>)> =
        (1..=n).map(|id| (id, "queued", None, None)).collect();
    env.seed_items(&items).await;
    for id in 1..=n {
        env.publish_job(id, &format!("mon{id}")).await;
    }
}

#[tokio::test]
async fn wait_exits_0_once_a_consumer_has_done_every_item() {
    let env = TestEnv::start().await;
    let api = stub(HashMap::new()).await;
    queue_items(&env, 20).await;

    let (shared, task) = spawn_wait(&env, &["--timeout", "60s"]);
    let blocking = wait_until(Duration::from_secs(10), || async {
        shared
            .text()
            .contains("0 done, 0 failed, 0 pending, 20 queued; 20 ready in")
    })
    .await;
    assert!(blocking, "no progress line: {}", shared.text());
    assert!(!task.is_finished(), "returned with work left");

    let consumer = spawn_consumer(&env, &api);
    let outcome = finished(task, &shared).await;
    assert_eq!(outcome.code(), 0, "{:?}\n{}", outcome.result, outcome.out);
    assert!(
        outcome.last_line().starts_with("done after ")
            && outcome.last_line().ends_with(": 20 done, none failed"),
        "{}",
        outcome.out
    );
    // What --wait promised: every item done and nothing left to take.
    let counts = env.store.status_counts().await.expect("counts");
    assert_eq!((counts.done, counts.pending, counts.queued), (20, 0, 0));
    assert_eq!(env.ready(&env.topology().jobs()).await, 0);
    stop(consumer).await;
    api.shutdown().await;
}

#[tokio::test]
async fn wait_exits_1_with_the_failed_counts_by_kind() {
    let env = TestEnv::start().await;
    let api = stub(HashMap::from([
        (3, FaultRule::always(FaultKind::NotFound)),
        (7, FaultRule::always(FaultKind::NotFound)),
    ]))
    .await;
    queue_items(&env, 20).await;
    let consumer = spawn_consumer(&env, &api);

    let (shared, task) = spawn_wait(&env, &["--json"]);
    let outcome = finished(task, &shared).await;
    assert_eq!(outcome.code(), 1, "{:?}\n{}", outcome.result, outcome.out);
    let error = format!("{:#}", outcome.result.as_ref().expect_err("failed items"));
    assert_eq!(error, "2 items failed: not_found 2");
    let ending = outcome.json();
    assert_eq!(ending["outcome"], "failed");
    assert_eq!(ending["items"]["done"], 18);
    assert_eq!(ending["items"]["failed"], 2);
    assert_eq!(ending["items"]["failed_by_kind"]["not_found"], 2);
    assert_eq!(ending["jobs_ready"], 0);
    stop(consumer).await;

    // The same ending as text, once everything is over.
    let text = env.pokeq(&["status", "--wait"], None).await;
    assert_eq!(text.code(), 1);
    assert!(
        text.last_line()
            .ends_with(": 18 done, 2 failed (not_found 2)"),
        "{}",
        text.out
    );
    api.shutdown().await;
}

#[tokio::test]
async fn wait_exits_2_on_timeout_with_items_still_queued() {
    let env = TestEnv::start().await;
    queue_items(&env, 3).await;
    let jobs = env.topology().jobs();

    let started = Instant::now();
    let outcome = env
        .pokeq(&["status", "--wait", "--timeout", "2s"], None)
        .await;
    let waited = started.elapsed();
    assert_eq!(outcome.code(), 2, "{:?}\n{}", outcome.result, outcome.out);
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    assert_eq!(
        outcome.last_line(),
        format!("timed out after 2s: 0 pending, 3 queued, 3 ready in {jobs} (0 done, 0 failed)")
    );
    assert!(
        outcome
            .out
            .starts_with("waiting 0s: 0 done, 0 failed, 0 pending, 3 queued")
    );
    assert_eq!(env.ready(&jobs).await, 3, "waiting takes nothing");

    // The binary, as a script sees it: exit status 2 and the reason on stderr.
    let args = env.args(&["status", "--wait", "--timeout", "1s"]);
    let binary = tokio::process::Command::new(env!("CARGO_BIN_EXE_pokeq"))
        .args(&args[1..])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("pokeq runs");
    assert_eq!(binary.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&binary.stderr);
    assert!(
        stderr.contains("timed out after 1s: 0 pending, 3 queued"),
        "{stderr}"
    );
}

#[tokio::test]
async fn wait_is_not_over_while_a_job_is_ready_even_if_every_item_is_finished() {
    let env = TestEnv::start().await;
    env.seed_items(&[(1, "done", None, None), (2, "done", None, None)])
        .await;
    // A second copy of a job, e.g. replayed from the dead queue: a consumer will still take it.
    env.publish_job(2, "mon2").await;

    let pending = env
        .pokeq(&["status", "--wait", "--timeout", "1s"], None)
        .await;
    assert_eq!(pending.code(), 2, "{:?}\n{}", pending.result, pending.out);
    assert!(
        pending
            .last_line()
            .contains("0 pending, 0 queued, 1 ready in"),
        "{}",
        pending.out
    );

    env.drain(&env.topology().jobs()).await;
    let over = env
        .pokeq(&["status", "--wait", "--timeout", "5s"], None)
        .await;
    assert_eq!(over.code(), 0, "{:?}\n{}", over.result, over.out);
    assert!(
        over.last_line().ends_with(": 2 done, none failed"),
        "{}",
        over.out
    );
}

#[tokio::test]
async fn wait_on_a_prefix_without_queues_fails_at_once_and_declares_nothing() {
    let env = TestEnv::start().await;
    let prefix = format!("{}-typo", env.prefix);
    let args: Vec<String> = [
        "pokeq",
        "--amqp-url",
        &env.amqp_url,
        "--database-url",
        &env.database_url,
        "--prefix",
        &prefix,
        "status",
        "--wait",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (shared, task) = spawn_pokeq(args);
    let outcome = finished(task, &shared).await;
    assert_eq!(outcome.code(), 1);
    let error = format!("{:#}", outcome.result.expect_err("no such queue"));
    assert!(
        error.contains(&format!("the jobs queue {prefix}.jobs is not declared")),
        "{error}"
    );
    assert!(!queue_exists(&env, &format!("{prefix}.jobs")).await);
}

#[tokio::test]
async fn status_counts_ready_jobs_and_consumers_now_and_marks_sampled_figures() {
    let env = TestEnv::start().await;
    let jobs = env.topology().jobs();
    for id in 1..=3 {
        env.publish_job(id, "mon").await;
    }
    // A consumer that takes one job and holds it unacknowledged.
    let channel = env.connection.create_channel().await.expect("channel");
    channel
        .basic_qos(1, BasicQosOptions::default())
        .await
        .expect("qos");
    let _consumer = channel
        .basic_consume(
            ShortString::from(jobs.as_str()),
            ShortString::from("holder"),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let held = wait_until(Duration::from_secs(10), || async {
        env.ready(&jobs).await == 2
    })
    .await;
    assert!(held, "the consumer did not take a job");

    // At once, with no wait for the management API's next sample.
    let report = env.pokeq(&["status", "--json"], None).await;
    assert_eq!(report.code(), 0, "{:?}\n{}", report.result, report.out);
    let report = report.json();
    let row = queue_row(&report, &jobs);
    assert_eq!(row["counts_source"], "amqp");
    assert_eq!(row["messages_ready"], 2);
    assert_eq!(row["consumers"], 1);
    assert_eq!(report["management_max_age_seconds"], 10);
    assert!(report["broker_error"].is_null());

    // The management API's figures arrive within its sampling age.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let report = env.pokeq(&["status", "--json"], None).await.json();
        let row = queue_row(&report, &jobs);
        if row["messages_unacknowledged"] == 1 && row["management_messages_ready"] == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no management sample: {report:#}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let text = env.pokeq(&["status"], None).await;
    assert!(
        text.out.contains(
            "READY and CONSUMERS are exact, counted now; UNACKED is the management API's \
             sample, up to ~10s old"
        ),
        "{}",
        text.out
    );
    let _ = channel.close(200, ShortString::from("ok")).await;

    // A prefix with no queues: reported, not created.
    let prefix = format!("{}-typo", env.prefix);
    let args: Vec<String> = [
        "pokeq",
        "--amqp-url",
        &env.amqp_url,
        "--database-url",
        &env.database_url,
        "--prefix",
        &prefix,
        "status",
        "--json",
        "--management-url",
        &env.management_url,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (shared, task) = spawn_pokeq(args);
    let missing = finished(task, &shared).await.json();
    for queue in [format!("{prefix}.jobs"), format!("{prefix}.dead")] {
        assert_eq!(queue_row(&missing, &queue)["exists"], false, "{missing:#}");
        assert!(!queue_exists(&env, &queue).await, "{queue} was created");
    }
}

fn queue_row<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["queues"]
        .as_array()
        .and_then(|queues| queues.iter().find(|q| q["name"] == name))
        .unwrap_or_else(|| panic!("no queue {name} in {report:#}"))
}

#[tokio::test]
async fn status_shows_throughput_eta_and_the_last_producer_runs() {
    let env = TestEnv::start().await;
    {
        let client = env.client().await;
        // 30 done over the last 30 s, 2 failed 5 s ago, 5 done long ago, 60 still queued.
        client
            .batch_execute(
                "insert into ingest_items (resource, id, status, updated_at)
                 select 'pokemon', n, 'done', now() - n * interval '1 second'
                 from generate_series(1, 30) n;
                 insert into ingest_items (resource, id, status, error_kind, updated_at)
                 select 'pokemon', n, 'failed', 'not_found', now() - interval '5 seconds'
                 from generate_series(31, 32) n;
                 insert into ingest_items (resource, id, status, updated_at)
                 select 'pokemon', n, 'done', now() - interval '10 minutes'
                 from generate_series(33, 37) n;
                 insert into ingest_items (resource, id, status)
                 select 'pokemon', n, 'queued' from generate_series(38, 97) n;
                 insert into producer_runs (state, total, pages_planned, pages_done, listed,
                                            published, skipped, finished_at)
                 select 'done', 97, 1, 1, 97, n, 0, now() from generate_series(1, 6) n;
                 insert into producer_runs (state, total, pages_planned, pages_done, listed,
                                            published, skipped)
                 values ('running', 97, 1, 0, 0, 7, 0);",
            )
            .await
            .expect("seeded");
    }
    let outcome = env.pokeq(&["status", "--json"], None).await;
    assert_eq!(outcome.code(), 0, "{:?}\n{}", outcome.result, outcome.out);
    let report = outcome.json();
    let pace = &report["throughput"];
    assert_eq!(pace["done"], 30);
    assert_eq!(pace["failed"], 2);
    assert_eq!(pace["remaining"], 60);
    let window = pace["window_seconds"].as_f64().expect("window");
    assert!((30.0..35.0).contains(&window), "{pace}");
    let rate = pace["per_second"].as_f64().expect("rate");
    assert!((32.0 / 35.0..=32.0 / 30.0).contains(&rate), "{pace}");
    // 60 left at 32 per ~30 s.
    let eta = pace["eta_seconds"].as_u64().expect("an ETA");
    assert!((56..=66).contains(&eta), "{pace}");

    let runs: Vec<i64> = report["producer_runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|run| run["published"].as_i64().expect("published"))
        .collect();
    assert_eq!(runs, [7, 6, 5, 4, 3], "the last five, latest first");
    assert_eq!(report["producer_run"]["state"], "running");

    let text = env.pokeq(&["status"], None).await;
    assert!(text.out.contains("\nThroughput: "), "{}", text.out);
    assert!(
        text.out.contains("(30 done, 2 failed); ETA "),
        "{}",
        text.out
    );
    assert!(text.out.contains(" for 60 remaining\n"), "{}", text.out);
    assert_eq!(text.out.matches("published ").count(), 5, "{}", text.out);
}
