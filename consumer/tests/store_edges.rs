//! The edges of the store: data Postgres refuses fails its own item and nothing else, in the
//! consumer and in the producer; the producer waits out Postgres going away mid-run, and stops
//! within seconds on SIGTERM whatever it is waiting for.

mod support;

use std::time::{Duration, Instant};

use pokeapi_stub::{FaultKind, FaultRule, ListFault, StubConfig};
use pokeq_consumer::commit::Committer;
use pokeq_shared::commit::{Document, Finished};
use pokeq_shared::shutdown::CancellationToken;
use pokeq_shared::store::{ErrorClass, SaveRow};
use pokeq_shared::testkit::metrics_listener;
use pokeq_shared::testkit::{self, Fresh};
use pokeq_shared::transform::{Pokemon, Stat};
use pokeq_shared::validators::Validators;
use support::proxy::{Proxy, upstream};
use support::{TestEnv, http_status, spawn_consumer, wait_until};

const SETTLE: Duration = Duration::from_secs(60);

fn stub(count: u32, latency: Duration) -> StubConfig {
    StubConfig {
        count,
        latency,
        ..StubConfig::default()
    }
}

/// `(state, listed, published, skipped, pages_done)` of every producer run, oldest first.
async fn runs(env: &TestEnv) -> Vec<(String, i64, i64, i64, i64)> {
    env.client()
        .await
        .query(
            "select state, listed, published, skipped, pages_done from producer_runs order by id",
            &[],
        )
        .await
        .expect("producer runs")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect()
}

#[tokio::test]
async fn a_document_postgres_cannot_store_fails_alone_and_the_consumer_stays_ready() {
    let env = TestEnv::start(stub(40, Duration::ZERO)).await;
    let bad = 17;
    env.stub
        .set_fault(bad, Some(FaultRule::always(FaultKind::NulInString)));
    env.run_producer(&[]).await;
    let (metrics, metrics_addr) = metrics_listener();
    let mut config = env.consumer_config(&[]);
    config.metrics_addr = metrics;
    let consumer = spawn_consumer(config);

    let counts = env.wait_settled(40, SETTLE).await;
    assert_eq!((counts.done, counts.failed), (39, 1), "{counts:?}");
    let row = env
        .client()
        .await
        .query_one(
            "select status, error_kind, last_error from ingest_items where id = $1",
            &[&bad],
        )
        .await
        .expect("the bad item's row");
    let (status, kind, error): (String, String, String) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(
        (status.as_str(), kind.as_str()),
        ("failed", "malformed_payload")
    );
    assert!(error.contains("species.name contains a NUL"), "{error}");
    let stored: i64 = env
        .client()
        .await
        .query_one("select count(*) from pokemon where id <> $1", &[&bad])
        .await
        .expect("rows")
        .get(0);
    assert_eq!(stored, 39, "every other item is stored");

    assert!(
        wait_until(SETTLE, || async {
            env.ready(&env.topology().dead()).await == 1
        })
        .await,
        "one dead letter"
    );
    let letters = env.drain_dead().await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].job_id(), Some(bad));
    assert_eq!(letters[0].kind.as_deref(), Some("malformed_payload"));
    let reason = letters[0].error.as_deref().unwrap_or_default();
    assert!(reason.contains("NUL"), "{reason}");
    assert_eq!(
        http_status(&format!("http://{metrics_addr}/readyz")).await,
        Some(200),
        "a document the database cannot store is no outage"
    );
    consumer.stop().await.expect("consumer stops cleanly");
}

fn row(id: i32, species: &str) -> SaveRow {
    SaveRow {
        pokemon: Pokemon {
            id,
            name: format!("mon-{id}"),
            height: 7,
            weight: 69,
            base_experience: Some(64),
            types: vec!["grass".into()],
            abilities: vec![],
            stats: vec![Stat {
                name: "hp".into(),
                base_stat: 45,
                effort: 0,
            }],
            sprite: None,
            species: Some(species.to_owned()),
            is_default: Some(true),
            order: Some(id),
        },
        validators: Validators::default(),
        attempts: 1,
    }
}

/// The transform refuses NUL first, so no document reaches Postgres with one; a row built by
/// hand stands for whatever else the database may refuse.
#[tokio::test]
async fn a_group_commit_holding_a_refused_row_commits_the_others_one_by_one() {
    let env = Fresh::start("storeedges").await;
    let rows = [
        row(1, "bulbasaur"),
        row(2, "ivy\0saur"),
        row(3, "venusaur"),
        row(4, "charmander"),
    ];
    let refused = testkit::save(&env.store, rows.clone())
        .await
        .expect_err("the batch as one transaction is refused");
    assert_eq!(refused.class(), ErrorClass::Permanent, "{refused}");
    assert!(refused.to_string().contains("22P05"), "{refused}");

    let committer = Committer::spawn(env.store.clone(), 16);
    // Joined in one task, every request is queued before the batcher runs: one group commit.
    let answers = futures_util::future::join_all(
        rows.iter()
            .map(|row| committer.commit(Finished::alone(Document::Pokemon(row.clone())))),
    )
    .await;
    let shape: Vec<Result<bool, ErrorClass>> = answers
        .iter()
        .map(|answer| answer.as_ref().map(|c| c.written).map_err(|e| e.class()))
        .collect();
    assert_eq!(
        shape,
        [Ok(true), Err(ErrorClass::Permanent), Ok(true), Ok(true)]
    );
    let message = answers[1].as_ref().expect_err("refused").to_string();
    assert!(
        message.contains("22P05"),
        "the database's message: {message}"
    );

    let done: Vec<i32> = env
        .client()
        .await
        .query(
            "select p.id from pokemon p join ingest_items i using (id)
             where i.status = 'done' order by p.id",
            &[],
        )
        .await
        .expect("rows")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(done, [1, 3, 4]);
    drop(committer);
}

#[tokio::test]
async fn producer_skips_a_list_entry_postgres_refuses_and_publishes_the_rest() {
    let env = TestEnv::start(stub(30, Duration::ZERO)).await;
    let bad = 12;
    env.stub.set_list_fault(bad, Some(ListFault::NulInName));
    let summary = env.run_producer(&["--page-size", "10"]).await;
    assert_eq!(
        summary.to_string(),
        "listed=30 published=29 skipped=1 pages=3"
    );
    assert_eq!(summary.refused, 1);
    let counts = env.counts().await;
    assert_eq!((counts.pending, counts.queued), (0, 29), "{counts:?}");
    assert_eq!(env.ready(&env.topology().jobs()).await, 29);
    let known: i64 = env
        .client()
        .await
        .query_one("select count(*) from ingest_items where id = $1", &[&bad])
        .await
        .expect("count")
        .get(0);
    assert_eq!(known, 0, "the refused entry is not recorded");
    assert_eq!(runs(&env).await, [("done".into(), 30, 29, 1, 3)]);

    let again = env.run_producer(&["--page-size", "10"]).await;
    assert_eq!(
        again.to_string(),
        "listed=30 published=0 skipped=30 pages=3"
    );
}

#[tokio::test]
async fn producer_waits_out_a_postgres_outage_mid_run_and_counts_everything_once() {
    let env = TestEnv::start(stub(400, Duration::from_millis(50))).await;
    let proxy = Proxy::start(upstream(&env.database_url)).await;
    let config = env.producer_config_via(
        &env.amqp_url,
        &proxy.url(&env.database_url),
        &["--page-size", "10", "--concurrency", "2"],
    );
    let producer = tokio::spawn(pokeq_producer::run(config, CancellationToken::new()));
    assert!(wait_until(SETTLE, || async { env.counts().await.queued >= 100 }).await);

    proxy.cut();
    // The outage: a few seconds in which every store call of the producer fails. Its length is
    // what is tested (the producer outwaits it), so this sleep is no synchronisation.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!producer.is_finished(), "the producer waits for Postgres");
    let during = env.counts().await;
    assert!(during.queued < 400, "the outage came mid-run: {during:?}");
    proxy.restore();

    let summary = tokio::time::timeout(SETTLE, producer)
        .await
        .expect("the producer finishes")
        .expect("producer task")
        .expect("the run succeeds after the outage");
    assert_eq!(
        summary.to_string(),
        "listed=400 published=400 skipped=0 pages=40"
    );
    let counts = env.counts().await;
    assert_eq!(counts.queued, 400, "{counts:?}");
    assert_eq!(
        env.ready(&env.topology().jobs()).await,
        400,
        "no job published twice"
    );
    assert_eq!(runs(&env).await, [("done".into(), 400, 400, 0, 40)]);
}

#[tokio::test]
async fn sigterm_stops_a_producer_retrying_publishes_within_seconds_and_a_rerun_completes() {
    let env = TestEnv::start(stub(400, Duration::from_millis(50))).await;
    let proxy = Proxy::start(upstream(&env.amqp_url)).await;
    let flags = ["--page-size", "10", "--concurrency", "2"];
    let config = env.producer_config_via(&proxy.url(&env.amqp_url), &env.database_url, &flags);
    let shutdown = CancellationToken::new();
    let producer = tokio::spawn(pokeq_producer::run(config, shutdown.clone()));
    assert!(wait_until(SETTLE, || async { env.counts().await.queued >= 50 }).await);

    proxy.cut();
    // The producer found the broker gone and is retrying its publishes.
    assert!(
        wait_until(SETTLE, || async { proxy.refused() >= 2 }).await,
        "the producer tries the broker again"
    );
    assert!(!producer.is_finished(), "the producer retries");
    let cancelled = Instant::now();
    shutdown.cancel();
    let result = tokio::time::timeout(Duration::from_secs(30), producer)
        .await
        .expect("the producer stops")
        .expect("producer task");
    let took = cancelled.elapsed();
    assert!(took < Duration::from_secs(5), "stopped after {took:?}");
    let error = format!("{:#}", result.expect_err("an interrupted run fails"));
    assert!(error.contains("interrupted"), "{error}");

    let before = env.counts().await;
    assert!(before.queued < 400, "interrupted mid-run: {before:?}");
    let summary = env.run_producer(&flags).await;
    assert_eq!(summary.listed, 400);
    assert_eq!(
        summary.published,
        400 - before.queued as u64,
        "the rerun publishes exactly what was not confirmed: {before:?}"
    );
    assert_eq!(env.counts().await.queued, 400);
    let runs = runs(&env).await;
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].0, "failed");
    assert_eq!(runs[1].0, "done");
}

#[tokio::test]
async fn sigterm_stops_a_producer_waiting_for_postgres_within_seconds() {
    let env = TestEnv::start(stub(400, Duration::from_millis(50))).await;
    let proxy = Proxy::start(upstream(&env.database_url)).await;
    let config = env.producer_config_via(
        &env.amqp_url,
        &proxy.url(&env.database_url),
        &["--page-size", "10", "--concurrency", "2"],
    );
    let shutdown = CancellationToken::new();
    let producer = tokio::spawn(pokeq_producer::run(config, shutdown.clone()));
    assert!(wait_until(SETTLE, || async { env.counts().await.queued >= 50 }).await);

    proxy.cut();
    // The producer's store calls failed and it is waiting, trying Postgres again.
    assert!(
        wait_until(SETTLE, || async { proxy.refused() >= 2 }).await,
        "the producer tries Postgres again"
    );
    assert!(!producer.is_finished(), "the producer waits for Postgres");
    let cancelled = Instant::now();
    shutdown.cancel();
    let result = tokio::time::timeout(Duration::from_secs(30), producer)
        .await
        .expect("the producer stops")
        .expect("producer task");
    let took = cancelled.elapsed();
    assert!(took < Duration::from_secs(5), "stopped after {took:?}");
    let error = format!("{:#}", result.expect_err("an interrupted run fails"));
    assert!(error.contains("interrupted"), "{error}");
    proxy.restore();

    let before = env.counts().await;
    let summary = env
        .run_producer(&["--page-size", "10", "--concurrency", "2"])
        .await;
    assert_eq!(summary.listed, 400);
    assert_eq!(summary.published, 400 - before.queued as u64);
    assert_eq!(env.counts().await.queued, 400);
}
