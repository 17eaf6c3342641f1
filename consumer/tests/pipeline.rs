//! The whole pipeline with real parts: the stub API, RabbitMQ, Postgres, the producer and the
//! consumer, each test in its own database and under its own queue prefix.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use lapin::BasicProperties;
use lapin::types::ShortString;
use pokeapi_stub::{FaultKind, FaultRule, StubConfig};
use pokeq_shared::config::QueueType;
use pokeq_shared::job::Job;
use pokeq_shared::topology::{RetryDelays, Topology};
use support::{TestEnv, wait_until};

const SETTLE: Duration = Duration::from_secs(60);

fn stub(count: u32) -> StubConfig {
    StubConfig {
        count,
        ..StubConfig::default()
    }
}

fn faults(rules: &[(i32, FaultKind, Option<u32>)]) -> HashMap<i32, FaultRule> {
    rules
        .iter()
        .map(|(id, kind, times)| {
            (
                *id,
                FaultRule {
                    kind: kind.clone(),
                    times: *times,
                },
            )
        })
        .collect()
}

/// `height / 10` as Postgres prints `numeric` with one decimal.
fn tenths(value: i32) -> String {
    format!("{}.{}", value / 10, value % 10)
}

/// Every stored row equals what the stub served for its id, and every listed id has one.
async fn assert_rows_match_stub(env: &TestEnv) {
    let client = env.client().await;
    let rows = client
        .query(
            "select id, name, height_m::text, weight_kg::text, base_experience, types,
                    abilities, sprite_url, species
             from pokemon order by id",
            &[],
        )
        .await
        .unwrap();
    let ids: Vec<i32> = env.stub.dataset().ids().to_vec();
    assert_eq!(rows.len(), ids.len(), "one row per listed id");
    for row in rows {
        let id: i32 = row.get(0);
        let expected = env.stub.dataset().record(id).expect("stored id was served");
        assert_eq!(row.get::<_, String>(1), expected.name, "name of {id}");
        assert_eq!(
            row.get::<_, String>(2),
            tenths(expected.height),
            "height_m of {id}"
        );
        assert_eq!(
            row.get::<_, String>(3),
            tenths(expected.weight),
            "weight_kg of {id}"
        );
        assert_eq!(
            row.get::<_, Option<i32>>(4),
            expected.base_experience,
            "base_experience of {id}"
        );
        assert_eq!(
            row.get::<_, Vec<String>>(5),
            expected.types,
            "types of {id}"
        );
        assert_eq!(
            row.get::<_, Vec<String>>(6),
            expected.abilities,
            "abilities of {id}"
        );
        assert_eq!(
            row.get::<_, Option<String>>(7),
            expected.sprite,
            "sprite of {id}"
        );
        assert_eq!(
            row.get::<_, Option<String>>(8).as_deref(),
            Some(expected.species.as_str()),
            "species of {id}"
        );
    }
}

/// One detail request per item, plus one per recorded retry: nothing fetched needlessly. (A
/// transient failure is possible even against the stub, e.g. a keep-alive connection closed
/// under load; it must then show as a recorded attempt.)
async fn assert_detail_requests_accounted_for(env: &TestEnv) {
    let retries: i64 = env
        .client()
        .await
        .query_one(
            "select coalesce(sum(attempts - 1), 0)::int8 from ingest_items",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let items = env.stub.dataset().ids().len() as u64;
    assert_eq!(
        env.stub.total_detail_requests(),
        items + retries as u64,
        "one request per item and per recorded retry"
    );
    for id in env.stub.dataset().ids() {
        assert!(env.stub.detail_requests(*id) >= 1, "{id} fetched");
    }
}

#[tokio::test]
async fn pipeline_stores_every_item_exactly_as_the_api_serves_it() {
    let env = TestEnv::start(stub(300)).await;
    let summary = env.run_producer(&["--page-size", "40"]).await;
    assert_eq!(
        summary.to_string(),
        "listed=300 published=300 skipped=0 pages=8"
    );
    let counts = env.counts().await;
    assert_eq!(
        counts.queued + counts.done,
        300,
        "published items are queued: {counts:?}"
    );

    let consumer = env.spawn_consumer(&[]);
    let counts = env.wait_settled(300, SETTLE).await;
    assert_eq!((counts.done, counts.failed), (300, 0));
    consumer.stop().await.unwrap();

    assert_rows_match_stub(&env).await;
    assert_eq!(
        env.ready(&env.topology().jobs()).await,
        0,
        "jobs queue drained"
    );
    assert!(env.drain_dead().await.is_empty(), "no dead letters");
    assert_detail_requests_accounted_for(&env).await;
}

#[tokio::test]
async fn rerun_publishes_nothing_and_fetches_no_detail_when_all_done() {
    let env = TestEnv::start(stub(120)).await;
    env.run_producer(&["--page-size", "50"]).await;
    let consumer = env.spawn_consumer(&[]);
    env.wait_settled(120, SETTLE).await;
    // Stopped before the rerun, so that a stray job (there should be none) stays in the jobs
    // queue to be counted there, rather than be waited for on its way to a consumer.
    consumer.stop().await.unwrap();
    let details_before = env.stub.total_detail_requests();
    assert_detail_requests_accounted_for(&env).await;

    let summary = env.run_producer(&["--page-size", "50"]).await;
    assert_eq!(
        summary.to_string(),
        "listed=120 published=0 skipped=120 pages=3"
    );
    assert_eq!(
        env.stub.total_detail_requests(),
        details_before,
        "no detail fetched again"
    );
    assert_eq!(
        env.ready(&env.topology().jobs()).await,
        0,
        "no job for a consumer to fetch a detail for"
    );
}

#[tokio::test]
async fn limit_takes_the_first_items_of_the_list_and_ids_come_from_urls() {
    let env = TestEnv::start(stub(1100)).await;
    let summary = env
        .run_producer(&["--limit", "1030", "--page-size", "200"])
        .await;
    assert_eq!(
        summary.to_string(),
        "listed=1030 published=1030 skipped=0 pages=6"
    );
    let client = env.client().await;
    let max: i32 = client
        .query_one("select max(id) from ingest_items", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(max, 10005, "ids past 1025 are the alternate forms' 10001..");
}

#[tokio::test]
async fn transient_failures_wait_in_retry_queues_then_succeed() {
    let mut config = stub(30);
    config.faults = faults(&[
        (5, FaultKind::ServerError(503), Some(2)),
        (6, FaultKind::DropMidBody, Some(1)),
        (
            7,
            FaultKind::TooManyRequests {
                retry_after_secs: 1,
            },
            Some(1),
        ),
    ]);
    let env = TestEnv::start(config).await;
    env.run_producer(&[]).await;
    let started = Instant::now();
    // Without quick retries, so that each failure goes through a retry queue.
    let consumer = env.spawn_consumer(&[
        "--retry-delays",
        "100ms,200ms",
        "--max-attempts",
        "5",
        "--api-retries",
        "0",
    ]);
    let counts = env.wait_settled(30, SETTLE).await;
    assert_eq!((counts.done, counts.failed), (30, 0));
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "the 429's Retry-After of 1 s is honoured even though every delay is shorter"
    );
    consumer.stop().await.unwrap();

    assert_eq!(env.stub.detail_requests(5), 3);
    assert_eq!(env.stub.detail_requests(6), 2);
    assert_eq!(env.stub.detail_requests(7), 2);
    let client = env.client().await;
    let attempts: i32 = client
        .query_one("select attempts from ingest_items where id = 5", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(attempts, 3, "the third try succeeded");
    assert_rows_match_stub(&env).await;
    assert!(env.drain_dead().await.is_empty());
    // The consumer's own wait queues (the producer declares none).
    let delays = RetryDelays::parse("100ms,200ms").unwrap();
    let topology = Topology::new(&env.prefix, QueueType::Quorum, delays);
    for queue in topology.queues() {
        if queue != topology.dead() {
            assert_eq!(env.ready(&queue).await, 0, "{queue} empty");
        }
    }
}

#[tokio::test]
async fn permanent_failures_are_dead_lettered_at_once_with_their_reason() {
    let mut config = stub(20);
    config.faults = faults(&[
        (3, FaultKind::NotFound, None),
        (4, FaultKind::MalformedJson, None),
        (8, FaultKind::WrongId, None),
    ]);
    let env = TestEnv::start(config).await;
    env.run_producer(&[]).await;
    let consumer = env.spawn_consumer(&["--retry-delays", "100ms"]);
    let counts = env.wait_settled(20, SETTLE).await;
    assert_eq!((counts.done, counts.failed), (17, 3));
    consumer.stop().await.unwrap();

    for id in [3, 4, 8] {
        assert_eq!(
            env.stub.detail_requests(id),
            1,
            "no retry of permanent failure {id}"
        );
    }
    let mut dead = env.drain_dead().await;
    dead.sort_by_key(|d| d.job_id());
    let kinds: Vec<_> = dead
        .iter()
        .map(|d| (d.job_id().unwrap(), d.kind.clone().unwrap(), d.attempts))
        .collect();
    assert_eq!(
        kinds,
        [
            (3, "not_found".to_owned(), 1),
            (4, "malformed_payload".to_owned(), 1),
            (8, "malformed_payload".to_owned(), 1)
        ]
    );
    assert!(
        dead[2]
            .error
            .as_deref()
            .unwrap()
            .contains("differs from the requested id")
    );

    let client = env.client().await;
    let failed = client
        .query(
            "select id, error_kind, last_error from ingest_items where status = 'failed' order by id",
            &[],
        )
        .await
        .unwrap();
    let failed: Vec<(i32, String)> = failed.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        failed,
        [
            (3, "not_found".into()),
            (4, "malformed_payload".into()),
            (8, "malformed_payload".into())
        ]
    );
    let stored: i64 = client
        .query_one("select count(*) from pokemon where id in (3, 4, 8)", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 0, "nothing stored for a bad payload");
}

#[tokio::test]
async fn a_job_that_keeps_failing_is_dead_lettered_as_exhausted_after_max_attempts() {
    let mut config = stub(10);
    config.faults = faults(&[(9, FaultKind::ServerError(500), None)]);
    let env = TestEnv::start(config).await;
    env.run_producer(&[]).await;
    // Without quick retries: each attempt is one request.
    let consumer = env.spawn_consumer(&[
        "--retry-delays",
        "100ms,200ms",
        "--max-attempts",
        "3",
        "--api-retries",
        "0",
    ]);
    let counts = env.wait_settled(10, SETTLE).await;
    assert_eq!((counts.done, counts.failed), (9, 1));
    consumer.stop().await.unwrap();

    assert_eq!(env.stub.detail_requests(9), 3);
    let dead = env.drain_dead().await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].job_id(), Some(9));
    assert_eq!(dead[0].kind.as_deref(), Some("exhausted"));
    assert_eq!(dead[0].attempts, 3);
    assert!(dead[0].error.as_deref().unwrap().contains("500"));
    let row = env
        .client()
        .await
        .query_one(
            "select status, attempts, last_error from ingest_items where id = 9",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "failed");
    assert_eq!(row.get::<_, i32>(1), 3);
    assert!(row.get::<_, String>(2).contains("500"));
}

#[tokio::test]
async fn undecodable_messages_are_dead_lettered_and_the_consumer_keeps_going() {
    let env = TestEnv::start(stub(10)).await;
    let consumer = env.spawn_consumer(&[]);
    // Declared as every binary does, so publishing does not race the consumer's start.
    env.topology().declare(&env.channel).await.unwrap();
    let json = BasicProperties::default().with_content_type(ShortString::from("application/json"));
    let bad: [&[u8]; 6] = [
        b"not json at all",
        br#"{"v":9,"resource":"pokemon","id":1}"#,
        br#"{"v":1,"resource":"berry","id":1}"#,
        br#"{"v":1,"resource":"pokemon","id":-7}"#,
        br#"{"v":1,"resource":"pokemon","id":"25"}"#,
        b"\xc3\x28 invalid utf-8",
    ];
    for body in bad {
        env.publish_raw(body, json.clone()).await;
    }
    for id in env.stub.dataset().ids().to_vec() {
        let job = Job::new(id, "");
        env.publish_raw(&job.encode(), job.properties()).await;
    }
    let counts = env.wait_settled(10, SETTLE).await;
    assert_eq!(counts.done, 10);
    assert!(
        wait_until(SETTLE, || async {
            env.ready(&env.topology().dead()).await == 6
        })
        .await
    );
    consumer.stop().await.unwrap();

    let dead = env.drain_dead().await;
    assert_eq!(dead.len(), 6);
    assert!(
        dead.iter()
            .all(|d| d.kind.as_deref() == Some("invalid_message"))
    );
    let reasons: Vec<_> = dead.iter().map(|d| d.error.clone().unwrap()).collect();
    for expected in [
        "not a job",
        "unknown version",
        "unknown resource",
        "not a positive",
        "not UTF-8",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(expected)),
            "a reason says {expected}: {reasons:?}"
        );
    }
}

#[tokio::test]
async fn two_consumers_with_every_job_published_twice_write_each_row_once() {
    let env = TestEnv::start(stub(150)).await;
    env.count_writes().await;
    env.run_producer(&[]).await;
    // The duplicates an at-least-once broker may deliver, made certain.
    for id in env.stub.dataset().ids().to_vec() {
        let job = Job::new(id, "");
        env.publish_raw(&job.encode(), job.properties()).await;
    }
    let first = env.spawn_consumer(&["--prefetch", "16"]);
    let second = env.spawn_consumer(&["--prefetch", "16"]);
    env.wait_settled(150, SETTLE).await;
    assert!(
        wait_until(SETTLE, || async {
            env.ready(&env.topology().jobs()).await == 0
        })
        .await
    );
    first.stop().await.unwrap();
    second.stop().await.unwrap();

    env.assert_each_row_written_once(150).await;
    assert_rows_match_stub(&env).await;
}

#[tokio::test]
async fn a_producer_killed_mid_run_is_completed_by_a_rerun() {
    let mut config = stub(400);
    config.latency = Duration::from_millis(30);
    let env = TestEnv::start(config).await;
    let producer_config = env.producer_config(&["--page-size", "10", "--concurrency", "2"]);

    // A process kill, in-process: the producer runs on its own runtime, which is dropped mid-run
    // so its sockets close with no goodbye, as when the kernel kills a process.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.spawn(pokeq_producer::run(
        producer_config,
        pokeq_shared::shutdown::CancellationToken::new(),
    ));
    assert!(
        wait_until(Duration::from_secs(30), || async {
            env.counts().await.queued >= 100
        })
        .await,
        "producer made progress"
    );
    runtime.shutdown_background();
    let before = env.counts().await;
    assert!(before.queued < 400, "killed before the end: {before:?}");

    let summary = env
        .run_producer(&["--page-size", "10", "--concurrency", "2"])
        .await;
    assert_eq!(summary.listed, 400);
    assert_eq!(summary.published + summary.skipped, 400);
    assert!(
        summary.published <= 400 - before.queued as u64,
        "only what was not confirmed is published again: {summary} after {before:?}"
    );

    let consumer = env.spawn_consumer(&[]);
    let counts = env.wait_settled(400, SETTLE).await;
    assert_eq!((counts.done, counts.failed), (400, 0));
    consumer.stop().await.unwrap();
    assert_rows_match_stub(&env).await;
}

#[tokio::test]
async fn sigterm_finishes_in_flight_jobs_and_loses_nothing() {
    let mut config = stub(40);
    config.latency = Duration::from_millis(300);
    let env = TestEnv::start(config).await;
    env.run_producer(&[]).await;
    let consumer = env.spawn_consumer(&["--prefetch", "8"]);
    assert!(wait_until(SETTLE, || async { env.stub.total_detail_requests() >= 4 }).await);
    let stopped = Instant::now();
    consumer.stop().await.unwrap();
    assert!(
        stopped.elapsed() < Duration::from_secs(10),
        "stopped promptly"
    );

    let counts = env.counts().await;
    assert!(counts.done >= 1, "in-flight jobs finished: {counts:?}");
    assert!(counts.done < 40, "it stopped taking work: {counts:?}");
    assert_eq!(counts.failed, 0);
    assert!(
        wait_until(Duration::from_secs(10), || async {
            i64::from(env.ready(&env.topology().jobs()).await) == 40 - counts.done
        })
        .await,
        "every unfinished job is back in the queue: {counts:?}, ready {}",
        env.ready(&env.topology().jobs()).await
    );

    let consumer = env.spawn_consumer(&[]);
    let counts = env.wait_settled(40, SETTLE).await;
    assert_eq!(counts.done, 40);
    consumer.stop().await.unwrap();
}

#[tokio::test]
async fn real_samples_flow_through_the_pipeline() {
    let Some(dir) = pokeq_shared::testkit::samples_dir("real samples through the pipeline") else {
        return;
    };
    let mut config = stub(30);
    config.samples_dir = Some(dir);
    let env = TestEnv::start(config).await;
    env.run_producer(&[]).await;
    let consumer = env.spawn_consumer(&[]);
    let counts = env.wait_settled(30, SETTLE).await;
    assert_eq!((counts.done, counts.failed), (30, 0));
    consumer.stop().await.unwrap();
    assert_rows_match_stub(&env).await;
}

#[tokio::test]
async fn ten_binaries_starting_together_migrate_once() {
    let env = TestEnv::start(stub(1)).await;
    // Dropped with the test's database, whose name it begins with.
    let fresh = format!("{}_fresh", env.db_name);
    let url = env.database_url.replace(&env.db_name, &fresh);
    let config = pokeq_shared::store::parse_url(&url).unwrap();
    let opens = (0..10).map(|_| pokeq_shared::store::Store::open(&config, &url, 1, None));
    let stores = futures_util::future::join_all(opens).await;
    for store in &stores {
        let store = store.as_ref().expect("every start succeeds");
        assert_eq!(
            store.schema_version().await.unwrap(),
            pokeq_shared::store::latest_schema_version()
        );
    }
    let client = stores[0].as_ref().unwrap().pool().get().await.unwrap();
    let applied: i64 = client
        .query_one("select count(*) from pokeq_schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        applied,
        i64::from(pokeq_shared::store::latest_schema_version())
    );
}

#[tokio::test]
async fn replicas_share_one_request_rate_through_the_database() {
    let env = TestEnv::start(stub(120)).await;
    env.run_producer(&[]).await;
    let started = Instant::now();
    let first = env.spawn_consumer(&["--rate", "40"]);
    let second = env.spawn_consumer(&["--rate", "40"]);
    let counts = env.wait_settled(120, SETTLE).await;
    let elapsed = started.elapsed();
    assert_eq!(counts.done, 120);
    first.stop().await.unwrap();
    second.stop().await.unwrap();
    // 120 requests at 40/s together take about 3 s; two separate limits would take half that.
    assert!(
        elapsed >= Duration::from_millis(2700),
        "120 requests at a shared 40/s took only {elapsed:?}"
    );
}

#[tokio::test]
async fn refresh_asks_with_validators_and_rewrites_nothing_unchanged() {
    let env = TestEnv::start(stub(50)).await;
    env.run_producer(&[]).await;
    let consumer = env.spawn_consumer(&[]);
    env.wait_settled(50, SETTLE).await;
    let client = env.client().await;
    let stored_at = "select count(*), max(ingested_at)::text from pokemon";
    let before = client.query_one(stored_at, &[]).await.unwrap();
    let with_etag: i64 = client
        .query_one(
            "select count(*) from ingest_items where etag is not null",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(with_etag, 50, "validators kept per item");

    let summary = env.run_producer(&["--refresh"]).await;
    assert_eq!(
        summary.to_string(),
        "listed=50 published=50 skipped=0 pages=1"
    );
    assert!(
        wait_until(SETTLE, || async { env.stub.not_modified_responses() == 50 }).await,
        "every refresh was a conditional request answered 304"
    );
    assert!(wait_until(SETTLE, || async { env.counts().await.done == 50 }).await);
    consumer.stop().await.unwrap();

    let after = client.query_one(stored_at, &[]).await.unwrap();
    assert_eq!(before.get::<_, i64>(0), after.get::<_, i64>(0));
    assert_eq!(
        before.get::<_, String>(1),
        after.get::<_, String>(1),
        "no row rewritten"
    );
    for id in env.stub.dataset().ids() {
        assert_eq!(env.stub.detail_requests(*id), 2);
    }
    drop(client);
}
