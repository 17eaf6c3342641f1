//! The five single-node scenarios and the four cluster ones. Each gets a fresh database and queue prefix, starts its own stub,
//! producer and consumers, lands its fault mid-run (triggered on progress, not on time), and
//! leaves the final wait and checks to [`Run::settle`] and [`Run::verify`].

use std::fmt;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::cluster;
use crate::run::{Infra, Loss, Report, Run, Spec};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    BrokerRestart,
    DbRestart,
    ConsumerKill,
    ApiFaults,
    Sigterm,
    LeaderKill,
    LeaderKillPublishing,
    NodeRestart,
    RollingRestart,
}

impl Scenario {
    pub const ALL: [Scenario; 5] = [
        Scenario::BrokerRestart,
        Scenario::DbRestart,
        Scenario::ConsumerKill,
        Scenario::ApiFaults,
        Scenario::Sigterm,
    ];

    /// The cluster mode's scenarios, numbered 6 to 9 after [`Scenario::ALL`].
    pub const CLUSTER: [Scenario; 4] = [
        Scenario::LeaderKill,
        Scenario::LeaderKillPublishing,
        Scenario::NodeRestart,
        Scenario::RollingRestart,
    ];

    /// Whether it runs against the three-node cluster.
    pub fn clustered(self) -> bool {
        Scenario::CLUSTER.contains(&self)
    }

    pub fn name(self) -> &'static str {
        match self {
            Scenario::BrokerRestart => "broker-restart",
            Scenario::DbRestart => "db-restart",
            Scenario::ConsumerKill => "consumer-kill",
            Scenario::ApiFaults => "api-faults",
            Scenario::Sigterm => "sigterm",
            Scenario::LeaderKill => "leader-kill",
            Scenario::LeaderKillPublishing => "leader-kill-publishing",
            Scenario::NodeRestart => "node-restart",
            Scenario::RollingRestart => "rolling-restart",
        }
    }

    /// A name or its number (1 to 9).
    pub fn parse(text: &str) -> Result<Self, String> {
        let every = || Scenario::ALL.iter().chain(&Scenario::CLUSTER);
        every()
            .enumerate()
            .find(|(i, s)| s.name() == text || (i + 1).to_string() == text)
            .map(|(_, s)| *s)
            .ok_or_else(|| {
                let names: Vec<&str> = every().map(|s| s.name()).collect();
                format!(
                    "unknown scenario {text:?}: one of {} (or 1-9)",
                    names.join(", ")
                )
            })
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How big and how long.
#[derive(Debug, Clone, Copy)]
pub struct Size {
    pub count: u32,
    /// How long a stopped service stays down.
    pub down: Duration,
}

const GRACE: Duration = Duration::from_secs(10);
const RETRY_DELAYS: &str = "100ms,200ms,500ms";

fn consumer_args(prefetch: u16) -> Vec<String> {
    [
        "--prefetch",
        &prefetch.to_string(),
        "--max-attempts",
        "10",
        "--http-timeout",
        "10s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn spec(scenario: Scenario, size: Size) -> Spec {
    // The cluster scenarios go slower (fewer jobs in hand, slower answers), so that node
    // restarts, a few seconds each, land while the work goes on: 4 consumers x prefetch / latency
    // items a second.
    let (latency, fault_rate, prefetch) = match scenario {
        Scenario::BrokerRestart | Scenario::DbRestart => (100, 0.0, 16),
        Scenario::ConsumerKill | Scenario::Sigterm => (300, 0.0, 16),
        Scenario::ApiFaults => (20, 0.1, 16),
        Scenario::LeaderKill | Scenario::LeaderKillPublishing => (200, 0.0, 8),
        Scenario::NodeRestart => (300, 0.0, 8),
        Scenario::RollingRestart => (400, 0.0, 4),
    };
    Spec {
        count: size.count,
        latency: Duration::from_millis(latency),
        fault_rate,
        retry_delays: RETRY_DELAYS,
        consumer_args: consumer_args(prefetch),
    }
}

/// Runs one scenario start to finish and returns its report (printed as it goes).
pub async fn run(infra: &mut Infra, scenario: Scenario, size: Size) -> Report {
    let started = Instant::now();
    let name = scenario.name();
    println!("==> {name}");
    let mut run = match Run::start(infra, name, spec(scenario, size)).await {
        Ok(run) => run,
        Err(error) => {
            println!("[{name}] setup failed: {error:#}");
            return Report::setup_failed(name, error, started);
        }
    };
    let body = match scenario {
        Scenario::BrokerRestart => broker_restart(&mut run, size).await,
        Scenario::DbRestart => db_restart(&mut run, size).await,
        Scenario::ConsumerKill => consumer_kill(&mut run).await,
        Scenario::ApiFaults => api_faults(&mut run).await,
        Scenario::Sigterm => sigterm(&mut run).await,
        Scenario::LeaderKill => leader_kill(&mut run, size, false).await,
        Scenario::LeaderKillPublishing => leader_kill(&mut run, size, true).await,
        Scenario::NodeRestart => node_restart(&mut run, size).await,
        Scenario::RollingRestart => rolling_restart(&mut run, size).await,
    };
    match body {
        Ok(()) => {
            if let Err(error) = run.settle().await {
                run.failures.push(format!("{error:#}"));
            }
            if let Err(error) = run.measure_recoveries().await {
                run.failures.push(format!("recovery times: {error:#}"));
            }
            if let Err(error) = run.verify().await {
                run.failures.push(format!("verification: {error:#}"));
            }
        }
        Err(error) => run.failures.push(format!("{error:#}")),
    }
    if scenario == Scenario::ApiFaults && run.faults() == 0 {
        run.failures
            .push("the stub injected no fault: the scenario tested nothing".into());
    }
    let report = run.finish();
    let verdict = if report.passed() { "PASS" } else { "FAIL" };
    println!(
        "[{name}] {verdict}: {} items, {} kills, {} SIGTERMs, restarts {}, {} detail requests \
         at the stub ({} extra; the consumers counted {}), {} faults injected, {:.1}s",
        report.items,
        report.kills,
        report.sigterms,
        report.restarts,
        report.api_requests,
        report.extra(),
        report.consumer_counted(),
        report.faults,
        report.wall.as_secs_f64()
    );
    for failure in &report.failures {
        println!("[{name}]   FAIL: {failure}");
    }
    print!("{}", report.logs);
    report
}

fn fraction(n: i64, percent: i64) -> i64 {
    n * percent / 100
}

async fn start_consumers(run: &mut Run<'_>, n: usize, grace: Duration) -> Result<()> {
    for _ in 0..n {
        run.spawn_consumer(grace)?;
    }
    Ok(())
}

async fn wait_producer(run: &mut Run<'_>) -> Result<()> {
    let deadline = Instant::now() + run.infra.timeout;
    while run.producer_running() {
        if Instant::now() > deadline {
            bail!("the producer did not finish within {:?}", run.infra.timeout);
        }
        run.idle(Duration::from_millis(250)).await;
    }
    Ok(())
}

/// 1. RabbitMQ stopped (`rabbitmqctl stop`, the node process exits) while the producer is still
///    publishing and the consumers are busy, then started again.
async fn broker_restart(run: &mut Run<'_>, size: Size) -> Result<()> {
    run.infra_logs.push(run.infra.rabbits[0].log.clone());
    start_consumers(run, 3, GRACE).await?;
    // Small pages one at a time: the producer is still publishing when the broker goes.
    run.spawn_producer(&["--page-size", "25", "--concurrency", "1"])?;
    let n = run.n;
    run.wait_for("30% of the jobs confirmed", |c| {
        c.queued + c.done >= fraction(n, 30)
    })
    .await?;
    let publishing = run.producer_running();
    let done = run.check_mid_run("the broker restart");
    if !publishing {
        run.failures.push(
            "the producer finished before the broker went down: the scenario did not test it"
                .into(),
        );
    }
    run.say(&format!(
        "stopping RabbitMQ ({done}/{n} done, producer {})",
        if publishing { "publishing" } else { "finished" }
    ));
    run.infra.rabbits[0].stop().await?;
    run.say(&format!(
        "RabbitMQ down; starting it again in {:?}",
        size.down
    ));
    run.idle(size.down).await;
    run.infra.rabbits[0].start_again().await?;
    run.restarts = "1 broker".into();
    run.say("RabbitMQ is back");
    Ok(())
}

/// 2. Postgres restarted twice under load: `pg_ctl stop -m fast`, later `-m immediate` (a
///    crash, with recovery at start).
async fn db_restart(run: &mut Run<'_>, size: Size) -> Result<()> {
    run.infra_logs.push(run.infra.pg.log.clone());
    start_consumers(run, 3, GRACE).await?;
    run.spawn_producer(&[])?;
    let n = run.n;
    // The producer has no business with an outage here: only the consumers' resilience is
    // under test (a producer run dies with its database, and a rerun resumes).
    wait_producer(run).await?;
    for (percent, mode) in [(25, "fast"), (60, "immediate")] {
        run.wait_for(&format!("{percent}% done"), |c| {
            c.done >= fraction(n, percent)
        })
        .await?;
        let done = run.check_mid_run("the database restart");
        run.say(&format!("pg_ctl stop -m {mode} ({done}/{n} done)"));
        run.infra.pg.stop(mode).await?;
        run.idle(size.down).await;
        run.infra.pg.start_again().await?;
        run.say("Postgres is back");
    }
    run.restarts = "2 postgres".into();
    Ok(())
}

/// 3. A random consumer SIGKILLed every 2 s and replaced, three always running.
async fn consumer_kill(run: &mut Run<'_>) -> Result<()> {
    start_consumers(run, 3, GRACE).await?;
    run.spawn_producer(&[])?;
    let n = run.n;
    let deadline = Instant::now() + run.infra.timeout;
    let mut next_kill = Instant::now() + Duration::from_secs(2);
    loop {
        run.tick().await;
        if run.db_up && run.counts.done + run.counts.failed >= n {
            break;
        }
        if Instant::now() >= next_kill && !run.consumers.is_empty() {
            let victim = rand::random_range(0..run.consumers.len());
            run.kill_consumer(victim).await;
            run.spawn_consumer(GRACE)?;
            next_kill += Duration::from_secs(2);
        }
        if Instant::now() > deadline {
            bail!(
                "not every item done within {:?} ({})",
                run.infra.timeout,
                run.counts
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if run.kills == 0 {
        run.failures
            .push("the run ended before the first kill: the scenario tested nothing".into());
    }
    run.restarts = format!("{} consumers", run.kills);
    Ok(())
}

/// 4. The stub fails 10% of detail requests (429 with Retry-After, 503, body dropped mid-way);
///    short retry delays and 10 attempts, so no job should run out of attempts.
async fn api_faults(run: &mut Run<'_>) -> Result<()> {
    start_consumers(run, 4, GRACE).await?;
    run.spawn_producer(&[])?;
    Ok(())
}

/// 5. SIGTERM to every busy consumer, twice: with a 10 s grace (in-flight jobs finish), then
///    with 100 ms, shorter than one API request (in-flight jobs are handed back). Each must exit
///    0 within its grace; fresh consumers finish the work.
async fn sigterm(run: &mut Run<'_>) -> Result<()> {
    start_consumers(run, 3, GRACE).await?;
    run.spawn_producer(&[])?;
    let n = run.n;
    let mut replaced = 0;
    for (percent, next_grace) in [(25, Duration::from_millis(100)), (60, GRACE)] {
        run.wait_for(&format!("{percent}% done"), |c| {
            c.done >= fraction(n, percent)
        })
        .await?;
        let done = run.check_mid_run("SIGTERM");
        run.say(&format!("SIGTERM to every consumer ({done}/{n} done)"));
        let grace = run.consumers.first().map(|c| c.grace);
        run.terminate_consumers(false).await;
        if grace == Some(GRACE) {
            // A grace longer than any request: every job in flight was finished, none handed
            // back, so every request the stub answered so far stored an item.
            let done = run.counts().await?.done;
            let requests = run.stub_requests();
            if requests != done as u64 {
                run.failures.push(format!(
                    "after SIGTERM with a {GRACE:?} grace, the stub had answered {requests} \
                     detail requests but only {done} items were done: jobs in flight were \
                     handed back instead of finished"
                ));
            }
        }
        start_consumers(run, 3, next_grace).await?;
        replaced += 3;
    }
    run.restarts = format!("{replaced} consumers");
    Ok(())
}

/// Consumers this many, spread over the nodes by their own shuffled order of `AMQP_URL`.
const CLUSTER_CONSUMERS: usize = 4;

/// Where the clients named `name` are connected, as `n1:2 n2:1 n3:1`, and the counts.
async fn spread(run: &Run<'_>, name: &str) -> Result<(String, Vec<usize>)> {
    let counts = cluster::connections(&run.infra.rabbits, name).await?;
    let text = counts
        .iter()
        .enumerate()
        .map(|(i, n)| format!("n{}:{n}", i + 1))
        .collect::<Vec<_>>()
        .join(" ");
    Ok((text, counts))
}

/// The jobs queue's leader, checking that it is replicated on every node.
async fn jobs_leader(run: &mut Run<'_>) -> Result<usize> {
    let (leader, members) = cluster::leader(&run.infra.rabbits, &run.jobs_queue()).await?;
    if members != cluster::NODES {
        run.failures.push(format!(
            "the jobs queue has {members} members, expected one on each of the {} nodes",
            cluster::NODES
        ));
    }
    Ok(leader)
}

/// Keeps the cluster nodes' logs with the run's, for its report.
fn keep_node_logs(run: &mut Run<'_>) {
    for rabbit in &run.infra.rabbits {
        run.infra_logs.push(rabbit.log.clone());
    }
}

/// Starts the consumers on the cluster, publishes the whole list and waits until `percent`% of
/// it is done.
async fn run_until_done(run: &mut Run<'_>, percent: i64) -> Result<()> {
    let n = run.n;
    start_consumers(run, CLUSTER_CONSUMERS, GRACE).await?;
    run.spawn_producer(&[])?;
    wait_producer(run).await?;
    run.wait_for(&format!("{percent}% done"), |c| {
        c.done >= fraction(n, percent)
    })
    .await
}

/// 6, 7. The node leading the quorum jobs queue SIGKILLed at 30%, started again after the
///    outage. With `publishing`, the producer is still publishing, on that very node: it
///    starts alone, so its declaration places the queue's leader on its own node (RabbitMQ's
///    `client-local` default), and its unconfirmed publishes die with the node.
async fn leader_kill(run: &mut Run<'_>, size: Size, publishing: bool) -> Result<()> {
    keep_node_logs(run);
    let n = run.n;
    if publishing {
        run.spawn_producer(&["--page-size", "25", "--concurrency", "1"])?;
        run.wait_for("the first jobs confirmed", |c| c.queued + c.done > 0)
            .await?;
        start_consumers(run, CLUSTER_CONSUMERS, GRACE).await?;
        run.wait_for("30% of the jobs confirmed", |c| {
            c.queued + c.done >= fraction(n, 30)
        })
        .await?;
    } else {
        run_until_done(run, 30).await?;
    }
    let leader = jobs_leader(run).await?;
    let (consumers, _) = spread(run, "pokeq-consumer").await?;
    let (producer, producer_on) = spread(run, "pokeq-producer").await?;
    let done = run.check_mid_run("the leader's death");
    if publishing {
        if !run.producer_running() {
            run.failures.push(
                "the producer finished before the node died: the scenario did not test it".into(),
            );
        } else if producer_on.get(leader).copied().unwrap_or(0) == 0 {
            run.failures.push(format!(
                "the producer is not connected to the leader's node n{} ({producer}): its \
                 publishes did not die with it",
                leader + 1
            ));
        }
    }
    let node = run.infra.rabbits[leader].node.clone();
    let what = format!("SIGKILL of n{} (leader)", leader + 1);
    if publishing {
        // Right while a page's jobs are unconfirmed, so that their confirms die with the node.
        // The node is frozen first: a page's confirms come back within milliseconds, and a kill
        // made when a page was merely seen in flight came after them in one run of three (the
        // producer then had nothing to re-send). Frozen, the node confirms nothing more; 300 ms
        // later every page still `pending` waits for confirms that will never come.
        run.infra.rabbits[leader].freeze();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let at = run.wait_publishing().await?;
        run.infra.rabbits[leader].kill().await;
        run.losses.push(Loss { what, at });
    } else {
        run.node_lost(what).await?;
        run.infra.rabbits[leader].kill().await;
    }
    run.say(&format!(
        "SIGKILLed n{} {node}, the jobs queue's leader ({done}/{n} done before; consumers \
         {consumers}; producer {producer})",
        leader + 1
    ));
    run.idle(size.down).await;
    run.infra.rabbits[leader].start_again().await?;
    let leader_now = jobs_leader(run).await?;
    run.say(&format!(
        "n{} is back; the jobs queue's leader is n{}",
        leader + 1,
        leader_now + 1
    ));
    if publishing {
        wait_producer(run).await?;
        let resent = run.producer_log_lines("publish failed; retrying");
        match resent.first() {
            None => run.failures.push(
                "the producer re-sent nothing after its node died: no publish was caught".into(),
            ),
            Some(first) => run.say(&format!(
                "the producer re-sent unconfirmed jobs {} times; the first: {}",
                resent.len(),
                first.split("WARN").last().unwrap_or(first).trim()
            )),
        }
    }
    run.restarts = "1 node (kill)".into();
    Ok(())
}

/// 8. The node with the most consumers stopped (`rabbitmqctl stop`) at 30% done, started
///    again after the outage.
async fn node_restart(run: &mut Run<'_>, size: Size) -> Result<()> {
    keep_node_logs(run);
    let n = run.n;
    run_until_done(run, 30).await?;
    let leader = jobs_leader(run).await?;
    let (consumers, counts) = spread(run, "pokeq-consumer").await?;
    let Some((target, _)) = counts
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .max_by_key(|(i, n)| (**n, usize::from(*i != leader)))
    else {
        bail!("no consumer is connected to any node ({consumers})");
    };
    let done = run.check_mid_run("the node stop");
    run.say(&format!(
        "stopping n{} ({done}/{n} done; consumers {consumers}; leader n{})",
        target + 1,
        leader + 1
    ));
    run.node_lost(format!(
        "stop of n{} ({} consumers{})",
        target + 1,
        counts[target],
        if target == leader { ", leader" } else { "" }
    ))
    .await?;
    run.infra.rabbits[target].stop().await?;
    run.idle(size.down).await;
    run.infra.rabbits[target].start_again().await?;
    let (consumers, _) = spread(run, "pokeq-consumer").await?;
    run.say(&format!("n{} is back; consumers {consumers}", target + 1));
    run.restarts = "1 node (stop)".into();
    Ok(())
}

/// 9. Every node stopped and started again, one after the other, from 15% done: each only
///    once no quorum queue needs it for its majority (`rabbitmq-queues
///    check_if_node_is_quorum_critical`), as an operator's rolling restart does.
async fn rolling_restart(run: &mut Run<'_>, size: Size) -> Result<()> {
    keep_node_logs(run);
    let n = run.n;
    run_until_done(run, 15).await?;
    for target in 0..run.infra.rabbits.len() {
        let deadline = Instant::now() + run.infra.timeout;
        loop {
            let check = run.infra.rabbits[target]
                .query("rabbitmq-queues", &["check_if_node_is_quorum_critical"])
                .await;
            if check.is_ok() {
                break;
            }
            if Instant::now() > deadline {
                bail!("n{} stayed quorum-critical: {check:?}", target + 1);
            }
            run.idle(Duration::from_millis(500)).await;
        }
        let leader = jobs_leader(run).await?;
        let (consumers, counts) = spread(run, "pokeq-consumer").await?;
        let done = run.check_mid_run(&format!("the restart of n{}", target + 1));
        run.say(&format!(
            "stopping n{} ({done}/{n} done; consumers {consumers}; leader n{})",
            target + 1,
            leader + 1
        ));
        run.node_lost(format!(
            "stop of n{} ({} consumers{})",
            target + 1,
            counts[target],
            if target == leader { ", leader" } else { "" }
        ))
        .await?;
        run.infra.rabbits[target].stop().await?;
        run.idle(size.down).await;
        run.infra.rabbits[target].start_again().await?;
        run.say(&format!("n{} is back", target + 1));
    }
    run.restarts = format!("{} nodes (stop)", run.infra.rabbits.len());
    Ok(())
}
