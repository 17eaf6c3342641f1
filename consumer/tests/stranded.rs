//! Nothing stranded at the edges: jobs the broker dead-letters itself fail their items, jobs
//! lost in the broker are published again by a producer rerun, and a retry or dead letter the
//! broker does not take is published again with bounded backoff instead of running the job
//! again.

mod support;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use lapin::options::{
    BasicGetOptions, BasicNackOptions, BasicPublishOptions, QueueDeclareOptions,
    QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::{FieldTable, ShortString};
use pokeapi_stub::{FaultKind, FaultRule, StubConfig};
use pokeq_shared::job::Job;
use pokeq_shared::topology::{RetryDelays, Topology};
use support::{TestEnv, free_port, wait_until};

const SETTLE: Duration = Duration::from_secs(60);

fn stub(count: u32, faults: &[(i32, FaultRule)]) -> StubConfig {
    StubConfig {
        count,
        faults: faults.iter().cloned().collect::<HashMap<_, _>>(),
        ..StubConfig::default()
    }
}

/// (status, error_kind, last_error) of an item.
async fn item(env: &TestEnv, id: i32) -> (String, Option<String>, Option<String>) {
    let row = env
        .client()
        .await
        .query_one(
            "select status, error_kind, last_error from ingest_items where id = $1",
            &[&id],
        )
        .await
        .expect("item row");
    (row.get(0), row.get(1), row.get(2))
}

/// A consumer that is not pokeq's, taking the only job of the jobs queue and handing it back
/// until the broker gives up on it (the quorum queue's delivery limit). Returns how many times
/// it was delivered.
async fn hand_back_until_dead_lettered(env: &TestEnv) -> u32 {
    let jobs = env.topology().jobs();
    let channel = env.connection.create_channel().await.expect("channel");
    let mut deliveries = 0;
    while let Some(message) = channel
        .basic_get(
            ShortString::from(jobs.as_str()),
            BasicGetOptions { no_ack: false },
        )
        .await
        .expect("basic_get")
    {
        deliveries += 1;
        assert!(deliveries <= 100, "the broker never dead-letters the job");
        message
            .delivery
            .acker
            .nack(BasicNackOptions {
                requeue: true,
                multiple: false,
            })
            .await
            .expect("nack");
    }
    let _ = channel.close(200, ShortString::from("ok")).await;
    deliveries
}

#[tokio::test]
async fn jobs_the_broker_dead_letters_fail_their_items_and_retry_failed_brings_them_back() {
    let env = TestEnv::start(stub(10, &[(5, FaultRule::always(FaultKind::NotFound))])).await;
    let first = env.run_producer(&["--limit", "1"]).await;
    assert_eq!(first.published, 1);
    let deliveries = hand_back_until_dead_lettered(&env).await;
    assert!(
        deliveries > 20,
        "dead-lettered by the delivery limit: {deliveries}"
    );
    assert_eq!(env.ready(&env.topology().dead()).await, 1);
    assert_eq!(env.counts().await.queued, 1, "nobody told the item yet");
    // A letter pokeq cannot act on, published to the dead-letter exchange by hand.
    let confirm = env
        .channel
        .basic_publish(
            ShortString::from(env.topology().dead()),
            ShortString::from(""),
            BasicPublishOptions::default(),
            b"not a job",
            lapin::BasicProperties::default(),
        )
        .await
        .expect("publish");
    assert!(confirm.await.expect("confirm").is_ack());

    let consumer = env.spawn_consumer(&[]);
    assert!(
        wait_until(SETTLE, || async { env.counts().await.failed == 1 }).await,
        "the ledger fails the item: {:?}",
        env.counts().await
    );
    let (status, kind, error) = item(&env, 1).await;
    assert_eq!(
        (status.as_str(), kind.as_deref()),
        ("failed", Some("delivery_limit"))
    );
    let error = error.unwrap_or_default();
    assert!(
        error.contains(&format!("delivered {deliveries} times"))
            && error.contains("RabbitMQ delivery limit"),
        "{error}"
    );

    // A rerun skips the failed item; the consumer dead-letters id 5 itself, and the ledger
    // leaves its kind alone.
    let rerun = env.run_producer(&[]).await;
    assert_eq!((rerun.published, rerun.skipped), (9, 1), "{rerun}");
    let counts = env.wait_settled(10, SETTLE).await;
    assert_eq!((counts.done, counts.failed), (8, 2));
    assert!(
        wait_until(SETTLE, || async {
            env.ready(&env.topology().ledger()).await == 0
        })
        .await,
        "every ledger letter is taken"
    );
    assert_eq!(item(&env, 5).await.1.as_deref(), Some("not_found"));

    // Operators still find every letter in the dead queue, and only there.
    let listed: serde_json::Value =
        serde_json::from_str(&env.pokeq(&["dead", "list", "--json"]).await).expect("JSON");
    assert_eq!(listed["queue"], env.topology().dead());
    let kinds: Vec<(serde_json::Value, String)> = listed["letters"]
        .as_array()
        .expect("letters")
        .iter()
        .map(|l| {
            (
                l["id"].clone(),
                l["kind"].as_str().unwrap_or("?").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            (1.into(), "delivery_limit".to_owned()),
            (serde_json::Value::Null, "unknown".to_owned()),
            (5.into(), "not_found".to_owned()),
        ]
    );

    env.stub.set_fault(5, None);
    let retried = env.run_producer(&["--retry-failed"]).await;
    assert_eq!((retried.published, retried.skipped), (2, 8), "{retried}");
    assert!(
        wait_until(SETTLE, || async { env.counts().await.done == 10 }).await,
        "{:?}",
        env.counts().await
    );
    assert_eq!(env.counts().await.failed, 0);
    assert_eq!(item(&env, 1).await.0, "done");
    consumer.stop().await.unwrap();
}

#[tokio::test]
async fn a_purged_jobs_queue_is_recovered_by_a_rerun_and_the_duplicates_are_harmless() {
    // Ids 1 to 3 fail once and wait in a retry queue while the jobs queue is purged; the rerun
    // publishes them again too, so each of their items gets a second job. (A 500: a 503 would
    // pause the whole consumer for longer than the retry delay.)
    let waiting = [1, 2, 3];
    let mut config = stub(300, &[]);
    for id in waiting {
        config
            .faults
            .insert(id, FaultRule::times(FaultKind::ServerError(500), 1));
    }
    config.latency = Duration::from_millis(50);
    let env = TestEnv::start(config).await;
    env.count_writes().await;
    assert_eq!(env.run_producer(&[]).await.published, 300);
    let consumer = ConsumerProcess::start(
        &env,
        &[("POKEQ_PREFETCH", "4"), ("POKEQ_RETRY_DELAYS", "5s")],
    );
    assert!(wait_until(SETTLE, || async { env.counts().await.done >= 40 }).await);
    assert!(waiting.iter().all(|id| env.stub.detail_requests(*id) == 1));

    let jobs = env.topology().jobs();
    let purged = env
        .channel
        .queue_purge(
            ShortString::from(jobs.as_str()),
            QueuePurgeOptions::default(),
        )
        .await
        .expect("purge");
    assert!(purged > 100, "the purge came mid-run: {purged} jobs purged");
    let stranded = i64::from(purged) + waiting.len() as i64;
    assert!(
        wait_until(SETTLE, || async { env.counts().await.queued == stranded }).await,
        "the jobs in flight finish: {:?}",
        env.counts().await
    );

    // The lost jobs are not known to be lost yet: a plain rerun leaves them queued.
    let plain = env.run_producer(&[]).await;
    assert_eq!((plain.published, plain.skipped), (0, 300), "{plain}");
    let rerun = env.run_producer(&["--requeue-after", "0"]).await;
    assert_eq!(
        (rerun.listed, rerun.published, rerun.skipped),
        (300, stranded as u64, 300 - stranded as u64),
        "{rerun}"
    );

    let counts = env.wait_settled(300, SETTLE).await;
    assert_eq!((counts.done, counts.failed, counts.queued), (300, 0, 0));
    // The first jobs of ids 1 to 3 come back from their wait queue and find their items done.
    assert!(
        wait_until(SETTLE, || async {
            consumer
                .metric(r#"pokeq_jobs_total{outcome="skipped",resource="pokemon"}"#)
                .await
                == 3.0
        })
        .await,
        "the duplicates are acknowledged as done"
    );
    let retry = env
        .topology()
        .retry_queue(&RetryDelays::parse("5s").unwrap().all()[0]);
    assert_eq!((env.ready(&jobs).await, env.ready(&retry).await), (0, 0));
    assert_eq!(consumer.stop().await, Some(0));
    env.assert_each_row_written_once(300).await;
    for id in waiting {
        assert_eq!(
            env.stub.detail_requests(id),
            2,
            "pokemon {id}: the failure and one success; its other job found it done"
        );
    }
    assert_eq!(env.stub.total_detail_requests(), 303, "no other API call");
}

/// The consumer binary, killed when dropped: a failed test must not leave it running, or it
/// would declare this test's queues again after the cleanup.
struct ConsumerProcess {
    child: Child,
    metrics: String,
}

impl ConsumerProcess {
    /// Starts it on this test's services, with `settings` (environment variables) on top.
    fn start(env: &TestEnv, settings: &[(&str, &str)]) -> Self {
        // The binary binds its metrics port itself: see `free_port` for the (small) race.
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_consumer"))
            .env("AMQP_URL", &env.amqp_url)
            .env("DATABASE_URL", &env.database_url)
            .env("POKEAPI_URL", env.stub.base_url())
            .env("POKEQ_PREFIX", &env.prefix)
            .env("POKEQ_RATE", "0")
            .env("POKEQ_RETRY_DELAYS", "1s")
            // These tests put jobs in the retry queues: a failure must go there, not be asked
            // again within its attempt.
            .env("POKEQ_API_RETRIES", "0")
            .env("METRICS_ADDR", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .envs(settings.iter().copied())
            .spawn()
            .expect("consumer binary starts");
        Self {
            child,
            metrics: format!("http://127.0.0.1:{port}"),
        }
    }

    async fn ready(&self) -> bool {
        let response = reqwest::get(format!("{}/readyz", self.metrics)).await;
        response.is_ok_and(|r| r.status().is_success())
    }

    /// A sample of `/metrics`, 0 if absent.
    async fn metric(&self, series: &str) -> f64 {
        let Ok(response) = reqwest::get(format!("{}/metrics", self.metrics)).await else {
            return 0.0;
        };
        let text = response.text().await.unwrap_or_default();
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, and the exit status.
    async fn stop(mut self) -> Option<i32> {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(killed.is_ok_and(|s| s.success()));
        let deadline = std::time::Instant::now() + SETTLE;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }
}

impl Drop for ConsumerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Publishes jobs for `ids` straight to the jobs exchange: the producer would declare the
/// topology, and so undo what a test did to it.
async fn publish_jobs(env: &TestEnv, ids: impl Iterator<Item = i32>) {
    for id in ids {
        let job = Job::new(id, format!("mon{id}"));
        env.publish_raw(&job.encode(), job.properties()).await;
    }
}

/// The 1 s wait queue every retry goes to in these tests.
fn retry_queue(env: &TestEnv) -> String {
    env.topology()
        .retry_queue(&RetryDelays::parse("1s").unwrap().all()[0])
}

async fn delete_queue(env: &TestEnv, queue: &str) {
    env.channel
        .queue_delete(ShortString::from(queue), QueueDeleteOptions::default())
        .await
        .expect("queue deleted");
}

const FLAKY: [i32; 3] = [3, 7, 11];

/// 40 pokemon, of which [`FLAKY`] answer 500 to their first request, or to every request until
/// told otherwise. (A 500: a 503 also pauses the whole consumer.)
fn flaky_stub(rule: FaultRule) -> StubConfig {
    let faults: Vec<(i32, FaultRule)> = FLAKY.iter().map(|id| (*id, rule.clone())).collect();
    stub(40, &faults)
}

#[tokio::test]
async fn a_deleted_retry_queue_is_declared_again_without_running_the_jobs_again() {
    let env = TestEnv::start(flaky_stub(FaultRule::times(FaultKind::ServerError(500), 1))).await;
    let consumer = ConsumerProcess::start(&env, &[]);
    assert!(wait_until(SETTLE, || consumer.ready()).await, "consumer up");
    let retry = retry_queue(&env);
    delete_queue(&env, &retry).await;

    publish_jobs(&env, 1..=40).await;
    let counts = env.wait_settled(40, SETTLE).await;
    assert_eq!((counts.done, counts.failed), (40, 0));
    for id in FLAKY {
        assert_eq!(
            env.stub.detail_requests(id),
            2,
            "pokemon {id}: one failure, one success"
        );
    }
    let failures = consumer
        .metric(r#"pokeq_settle_failures_total{target="retry"}"#)
        .await;
    assert!(
        (1.0..=3.0).contains(&failures),
        "each unroutable retry counted until the queue was back: {failures}"
    );
    assert_eq!(
        consumer.metric(r#"pokeq_retries_total{delay="1s"}"#).await,
        3.0
    );
    assert_eq!(env.ready(&retry).await, 0, "the wait queue exists again");
    assert_eq!(consumer.stop().await, Some(0));
}

#[tokio::test]
async fn retries_the_broker_cannot_route_back_off_without_running_the_jobs_again() {
    // Handing the deliveries back would run these jobs again and again, each run failing.
    let env = TestEnv::start(flaky_stub(FaultRule::always(FaultKind::ServerError(500)))).await;
    let mut consumer = ConsumerProcess::start(&env, &[]);
    assert!(wait_until(SETTLE, || consumer.ready()).await, "consumer up");
    // Someone replaces the wait queue by one of the same name with other arguments, bound to
    // nothing: retries are unroutable, and the consumer cannot declare the queue again.
    let retry = retry_queue(&env);
    delete_queue(&env, &retry).await;
    env.channel
        .queue_declare(
            ShortString::from(retry.as_str()),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await
        .expect("impostor declared");

    publish_jobs(&env, 1..=40).await;
    assert!(wait_until(SETTLE, || async { env.counts().await.done == 37 }).await);
    assert!(
        wait_until(SETTLE, || async {
            consumer
                .metric(r#"pokeq_settle_failures_total{target="retry"}"#)
                .await
                >= 9.0
        })
        .await,
        "failed publishes are counted"
    );
    for id in FLAKY {
        assert_eq!(
            env.stub.detail_requests(id),
            1,
            "pokemon {id}: the job is not run again while its retry is refused"
        );
        assert_eq!(item(&env, id).await.0, "queued");
    }
    assert!(consumer.running(), "the consumer carries on");

    // The API recovers and the operator puts the topology back: the held retries go out at
    // their next try.
    for id in FLAKY {
        env.stub.set_fault(id, None);
    }
    delete_queue(&env, &retry).await;
    Topology::new(
        &env.prefix,
        pokeq_shared::config::QueueType::Quorum,
        RetryDelays::default(),
    )
    .declare(&env.channel)
    .await
    .expect("topology declared");
    let counts = env.wait_settled(40, SETTLE).await;
    assert_eq!((counts.done, counts.failed), (40, 0));
    for id in FLAKY {
        assert_eq!(
            env.stub.detail_requests(id),
            2,
            "pokemon {id}: one failure, one success"
        );
    }
    assert_eq!(consumer.stop().await, Some(0));
}
