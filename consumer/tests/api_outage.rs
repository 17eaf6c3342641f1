//! The API going away mid-run is not the items' fault: an outage longer than the whole retry
//! schedule ends with every item done and no dead letter. (Alone in its test binary: it reads
//! the process-wide circuit gauge, which another test's consumer would move.)

mod support;

use std::time::{Duration, Instant};

use pokeapi_stub::StubConfig;
use pokeq_shared::testkit::metrics_listener;
use support::proxy::{Proxy, upstream};
use support::{TestEnv, spawn_consumer, wait_until};

const SETTLE: Duration = Duration::from_secs(90);
/// The fast retry schedule of the issue that found the problem: 1.4 s of delays in all.
const FAST_RETRIES: [&str; 4] = ["--retry-delays", "200ms,400ms,800ms", "--max-attempts", "5"];

/// Length of the outage in the mid-run test: far longer than the retry schedule. Longer ones
/// (the 40 s and 10 minutes) are the same test with `POKEQ_TEST_API_OUTAGE_SECS`.
fn outage() -> Duration {
    let secs = std::env::var("POKEQ_TEST_API_OUTAGE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    Duration::from_secs(secs)
}

async fn get(url: &str) -> Option<(u16, String)> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .ok()?;
    let response = client.get(url).send().await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.unwrap_or_default()))
}

/// The value of an unlabelled metric on a `/metrics` page.
fn metric(page: &str, name: &str) -> Option<f64> {
    page.lines().find_map(|line| {
        line.strip_prefix(name)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

async fn circuit_rows(env: &TestEnv) -> i64 {
    env.client()
        .await
        .query_one("select count(*) from api_circuit", &[])
        .await
        .expect("api_circuit readable")
        .get(0)
}

#[tokio::test]
async fn api_outage_mid_run_fails_nothing_and_work_resumes_when_it_returns() {
    let env = TestEnv::start(StubConfig {
        count: 600,
        latency: Duration::from_millis(5),
        ..StubConfig::default()
    })
    .await;
    env.count_writes().await;
    env.run_producer(&[]).await;
    let api = Proxy::start(upstream(&env.stub.base_url())).await;
    let (metrics, metrics_addr) = metrics_listener();
    let mut extra = vec!["--prefetch", "16"];
    extra.extend(FAST_RETRIES);
    let mut config = env.consumer_config_with_api(
        &env.amqp_url,
        &env.database_url,
        &api.url(&env.stub.base_url()),
        &extra,
    );
    config.metrics_addr = metrics;
    let consumer = spawn_consumer(config);
    let base = format!("http://{metrics_addr}");
    assert!(wait_until(SETTLE, || async { env.counts().await.done >= 100 }).await);

    api.cut();
    assert!(
        wait_until(Duration::from_secs(10), || async {
            get(&format!("{base}/readyz")).await
                == Some((200, "degraded: the API circuit is open\n".to_owned()))
        })
        .await,
        "/readyz says degraded, and stays 200, while the API is away"
    );
    let page = get(&format!("{base}/metrics")).await.expect("metrics").1;
    assert_eq!(metric(&page, "pokeq_api_circuit_open"), Some(1.0));
    assert!(
        wait_until(Duration::from_secs(5), || async {
            circuit_rows(&env).await == 1
        })
        .await,
        "the open circuit is recorded for pokeq status"
    );
    let before = env.stub.total_detail_requests();
    // The outage's length is what is tested (nothing fails however long it lasts).
    tokio::time::sleep(outage()).await;
    let during = env.counts().await;
    assert_eq!(during.failed, 0, "nothing failed during the outage");
    assert!(during.done < 600, "the outage came mid-run: {during:?}");
    assert_eq!(
        env.stub.total_detail_requests(),
        before,
        "no request reached the API while it was cut"
    );

    api.restore();
    let back = Instant::now();
    let counts = env.wait_settled(600, SETTLE).await;
    let resumed_in = back.elapsed();
    assert_eq!((counts.done, counts.failed), (600, 0));
    assert!(
        resumed_in < Duration::from_secs(20),
        "every item done soon after the API returned, took {resumed_in:?}"
    );
    assert!(env.drain_dead().await.is_empty(), "no dead letters");
    env.assert_each_row_written_once(600).await;
    let attempts: i64 = env
        .client()
        .await
        .query_one("select max(attempts) from ingest_items", &[])
        .await
        .expect("attempts")
        .get::<_, Option<i32>>(0)
        .map_or(0, i64::from);
    assert!(
        attempts <= 3,
        "the outage cost an item at most the tries made before the circuit opened, not all \
         {attempts}"
    );
    assert!(
        wait_until(Duration::from_secs(5), || async {
            get(&format!("{base}/readyz")).await == Some((200, "ready\n".to_owned()))
        })
        .await
    );
    let page = get(&format!("{base}/metrics")).await.expect("metrics").1;
    assert_eq!(metric(&page, "pokeq_api_circuit_open"), Some(0.0));
    assert!(
        wait_until(Duration::from_secs(5), || async {
            circuit_rows(&env).await == 0
        })
        .await
    );

    consumer.stop().await.expect("clean stop");
}
