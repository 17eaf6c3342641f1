//! Infrastructure faults in the middle of a run: the broker or the database goes away and comes
//! back. Each ends with every row exact, nothing written twice and nothing failed.

mod support;

use std::time::Duration;

use pokeapi_stub::StubConfig;
use pokeq_shared::testkit::metrics_listener;
use support::proxy::{Proxy, upstream};
use support::{TestEnv, spawn_consumer, wait_until};

const SETTLE: Duration = Duration::from_secs(90);

async fn status(url: &str) -> Option<u16> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .ok()?;
    client
        .get(url)
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

fn slow_stub(count: u32) -> StubConfig {
    StubConfig {
        count,
        latency: Duration::from_millis(10),
        ..StubConfig::default()
    }
}

#[tokio::test]
async fn consumer_reconnects_after_losing_the_broker_and_is_unready_meanwhile() {
    let env = TestEnv::start(slow_stub(300)).await;
    env.count_writes().await;
    env.run_producer(&[]).await;
    let proxy = Proxy::start(upstream(&env.amqp_url)).await;
    let (metrics, metrics_addr) = metrics_listener();
    let mut config = env.consumer_config_via(
        &proxy.url(&env.amqp_url),
        &env.database_url,
        &["--prefetch", "8"],
    );
    config.metrics_addr = metrics;
    let consumer = spawn_consumer(config);
    let base = format!("http://{metrics_addr}");
    assert!(wait_until(SETTLE, || async { env.counts().await.done >= 50 }).await);
    assert_eq!(status(&format!("{base}/readyz")).await, Some(200));

    proxy.cut();
    assert!(
        wait_until(Duration::from_secs(10), || async {
            status(&format!("{base}/readyz")).await == Some(503)
        })
        .await,
        "/readyz turns unready without the broker"
    );
    assert_eq!(
        status(&format!("{base}/healthz")).await,
        Some(200),
        "still alive"
    );
    assert!(
        wait_until(SETTLE, || async { proxy.refused() >= 2 }).await,
        "the consumer tries the broker again"
    );
    assert!(!consumer.task.is_finished(), "the consumer does not exit");
    assert!(env.counts().await.done < 300, "the outage came mid-run");

    proxy.restore();
    let counts = env.wait_settled(300, SETTLE).await;
    assert_eq!((counts.done, counts.failed), (300, 0));
    assert!(
        wait_until(SETTLE, || async {
            env.ready(&env.topology().jobs()).await == 0
        })
        .await
    );
    assert_eq!(
        status(&format!("{base}/readyz")).await,
        Some(200),
        "ready again"
    );
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("pokeq_reconnects_total{target=\"broker\"}"),
        "reconnects are counted:\n{metrics}"
    );
    consumer.stop().await.unwrap();
    env.assert_each_row_written_once(300).await;
}

#[tokio::test]
async fn consumer_waits_out_a_database_outage_without_failing_or_counting_attempts() {
    let env = TestEnv::start(slow_stub(300)).await;
    env.count_writes().await;
    env.run_producer(&[]).await;
    let proxy = Proxy::start(upstream(&env.database_url)).await;
    let (metrics, metrics_addr) = metrics_listener();
    let mut config = env.consumer_config_via(
        &env.amqp_url,
        &proxy.url(&env.database_url),
        &["--prefetch", "8"],
    );
    config.metrics_addr = metrics;
    let consumer = spawn_consumer(config);
    let base = format!("http://{metrics_addr}");
    assert!(wait_until(SETTLE, || async { env.counts().await.done >= 50 }).await);

    proxy.cut();
    assert!(
        wait_until(Duration::from_secs(15), || async {
            status(&format!("{base}/readyz")).await == Some(503)
        })
        .await,
        "/readyz turns unready without the database"
    );
    // Jobs in hand meet the missing database: it is tried again, and they must not fail.
    assert!(
        wait_until(SETTLE, || async { proxy.refused() >= 2 }).await,
        "the consumer tries the database again"
    );
    let during = env.counts().await;
    assert_eq!(during.failed, 0, "nothing fails while the database is away");
    assert!(during.done < 300, "the outage came mid-run: {during:?}");
    assert_eq!(
        env.ready(&env.topology().dead()).await,
        0,
        "nothing dead-lettered"
    );

    proxy.restore();
    let counts = env.wait_settled(300, SETTLE).await;
    assert_eq!((counts.done, counts.failed), (300, 0));
    let max_attempts: i32 = env
        .client()
        .await
        .query_one("select max(attempts) from ingest_items", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(max_attempts, 1, "the outage was not charged to any job");
    assert!(
        wait_until(SETTLE, || async {
            env.ready(&env.topology().jobs()).await == 0
        })
        .await
    );
    consumer.stop().await.unwrap();
    env.assert_each_row_written_once(300).await;
}

#[tokio::test]
async fn producer_resends_unconfirmed_jobs_after_losing_the_broker() {
    let env = TestEnv::start(slow_stub(400)).await;
    let proxy = Proxy::start(upstream(&env.amqp_url)).await;
    let mut config = env.producer_config(&["--page-size", "10", "--concurrency", "2"]);
    config.common.amqp_url = proxy.url(&env.amqp_url).into();
    let producer = tokio::spawn(pokeq_producer::run(
        config,
        pokeq_shared::shutdown::CancellationToken::new(),
    ));
    assert!(wait_until(SETTLE, || async { env.counts().await.queued >= 100 }).await);
    proxy.cut();
    assert!(
        wait_until(SETTLE, || async { proxy.refused() >= 2 }).await,
        "the producer tries the broker again"
    );
    assert!(!producer.is_finished(), "the producer waits for the broker");
    proxy.restore();
    let summary = tokio::time::timeout(SETTLE, producer)
        .await
        .expect("producer finishes")
        .unwrap()
        .expect("producer succeeds after the outage");
    assert_eq!(summary.listed, 400);
    assert_eq!(
        summary.published, 400,
        "every job confirmed once: {summary}"
    );
    let counts = env.counts().await;
    assert_eq!(counts.queued, 400, "{counts:?}");

    let consumer = env.spawn_consumer(&[]);
    let counts = env.wait_settled(400, SETTLE).await;
    assert_eq!((counts.done, counts.failed), (400, 0));
    consumer.stop().await.unwrap();
}
