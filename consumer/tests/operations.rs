//! What an operator sees: the consumer as a real process (metrics, JSON logs, SIGTERM) and
//! dead letters replayed with the CLI.

mod support;

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use pokeapi_stub::{FaultKind, FaultRule, StubConfig};
use support::{TestEnv, free_port, wait_until};

const SETTLE: Duration = Duration::from_secs(60);

fn rule(kind: FaultKind, times: Option<u32>) -> FaultRule {
    FaultRule { kind, times }
}

/// Parses the Prometheus text format strictly enough to catch a malformed exposition: every
/// sample line is `name{labels} value`. Returns samples keyed by `name{labels}` as written.
fn parse_prometheus(text: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            assert!(
                line.is_empty() || line.starts_with("# HELP ") || line.starts_with("# TYPE "),
                "bad comment line {line:?}"
            );
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample has a value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "unclosed labels in {line:?}");
        }
        samples.insert(series.to_owned(), value);
    }
    samples
}

fn sum_of(samples: &HashMap<String, f64>, name: &str) -> f64 {
    samples
        .iter()
        .filter(|(series, _)| series.as_str() == name || series.starts_with(&format!("{name}{{")))
        .map(|(_, value)| value)
        .sum()
}

#[tokio::test]
async fn metrics_count_what_happened_logs_are_json_and_sigterm_exits_zero() {
    let mut config = StubConfig {
        count: 40,
        ..StubConfig::default()
    };
    config.faults = HashMap::from([
        (3, rule(FaultKind::NotFound, None)),
        (4, rule(FaultKind::ServerError(503), Some(1))),
        (5, rule(FaultKind::MalformedJson, None)),
    ]);
    let env = TestEnv::start(config).await;
    env.run_producer(&[]).await;

    // The binary binds its metrics port itself: see `free_port` for the (small) race.
    let port = free_port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_consumer"))
        .env("AMQP_URL", &env.amqp_url)
        .env("DATABASE_URL", &env.database_url)
        .env("POKEAPI_URL", env.stub.base_url())
        .env("POKEQ_PREFIX", &env.prefix)
        .env("POKEQ_RATE", "0")
        .env("POKEQ_RETRY_DELAYS", "100ms")
        // Id 4's 503 is counted as a retry: it must reach the retry queue.
        .env("POKEQ_API_RETRIES", "0")
        .env("METRICS_ADDR", format!("127.0.0.1:{port}"))
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // A failed test must not leave it running, declaring this test's queues again.
        .kill_on_drop(true)
        .spawn()
        .expect("consumer binary starts");
    // Read as it comes: a full pipe would block the consumer's logging, and so the consumer.
    let mut stderr = child.stderr.take().expect("piped stderr");
    let logs = tokio::spawn(async move {
        let mut text = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut stderr, &mut text).await;
        text
    });
    let counts = env.wait_settled(40, SETTLE).await;
    assert_eq!((counts.done, counts.failed), (38, 2));

    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let samples = parse_prometheus(&text);
    let get = |series: &str| samples.get(series).copied().unwrap_or(0.0);
    assert_eq!(
        get(r#"pokeq_jobs_total{outcome="done",resource="pokemon"}"#),
        38.0,
        "{text}"
    );
    assert_eq!(
        get(r#"pokeq_jobs_total{outcome="retry",resource="pokemon"}"#),
        1.0
    );
    assert_eq!(
        get(r#"pokeq_jobs_total{outcome="dead",resource="pokemon"}"#),
        2.0
    );
    assert_eq!(
        get(r#"pokeq_dead_letters_total{kind="not_found",resource="pokemon"}"#),
        1.0
    );
    assert_eq!(
        get(r#"pokeq_dead_letters_total{kind="malformed_payload",resource="pokemon"}"#),
        1.0
    );
    assert_eq!(get(r#"pokeq_retries_total{delay="100ms"}"#), 1.0);
    assert_eq!(sum_of(&samples, "pokeq_api_requests_total"), 41.0);
    assert_eq!(
        get(r#"pokeq_api_requests_total{status="404",resource="pokemon"}"#),
        1.0
    );
    assert_eq!(
        get(r#"pokeq_api_requests_total{status="503",resource="pokemon"}"#),
        1.0
    );
    assert_eq!(get("pokeq_api_request_duration_seconds_count"), 41.0);
    let commits = get("pokeq_db_transaction_duration_seconds_count");
    assert!(
        (1.0..=38.0).contains(&commits),
        "38 rows in at most 38 group commits: {commits}"
    );
    assert_eq!(
        get("pokeq_db_commit_rows_sum"),
        38.0,
        "every row committed once"
    );
    assert_eq!(get("pokeq_jobs_in_flight"), 0.0);

    let pid = child.id().expect("still running").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(SETTLE, child.wait())
        .await
        .expect("the consumer exits after SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0), "SIGTERM exits 0");

    let stderr = logs.await.expect("stderr reader");
    let stderr = String::from_utf8_lossy(&stderr);
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    let dead = lines
        .iter()
        .find(|l| l["message"] == "dead-lettered" && l.to_string().contains("pokemon/3"))
        .expect("a log line for the dead letter of pokemon/3");
    let text = dead.to_string();
    assert!(
        text.contains("\"attempt\":1"),
        "the attempt is on the line: {text}"
    );
    assert!(
        text.contains("trace_id"),
        "the trace id is on the line: {text}"
    );
}

#[tokio::test]
async fn replayed_dead_letters_succeed_once_the_cause_is_gone() {
    let mut config = StubConfig {
        count: 20,
        ..StubConfig::default()
    };
    config.faults = HashMap::from([
        (3, rule(FaultKind::NotFound, None)),
        (4, rule(FaultKind::ServerError(500), None)),
    ]);
    let env = TestEnv::start(config).await;
    env.run_producer(&[]).await;
    let consumer = env.spawn_consumer(&["--retry-delays", "100ms", "--max-attempts", "2"]);
    let counts = env.wait_settled(20, SETTLE).await;
    assert_eq!((counts.done, counts.failed), (18, 2));
    assert!(
        wait_until(SETTLE, || async {
            env.ready(&env.topology().dead()).await == 2
        })
        .await
    );

    // The API recovers; the operator replays only the 404s.
    env.stub.set_fault(3, None);
    env.stub.set_fault(4, None);
    let printed = env.pokeq(&["dead", "replay", "--kind", "not_found"]).await;
    assert!(printed.contains("replayed=1 kept=1"), "{printed}");

    assert!(
        wait_until(SETTLE, || async { env.counts().await.done == 19 }).await,
        "the replayed job succeeds: {:?}",
        env.counts().await
    );
    let row = env
        .client()
        .await
        .query_one(
            "select status, (select count(*) from pokemon where id = 3) from ingest_items where id = 3",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "done");
    assert_eq!(row.get::<_, i64>(1), 1);
    let remaining = env.drain_dead().await;
    assert_eq!(remaining.len(), 1, "only the chosen kind was replayed");
    assert_eq!(remaining[0].kind.as_deref(), Some("exhausted"));
    consumer.stop().await.unwrap();
}
