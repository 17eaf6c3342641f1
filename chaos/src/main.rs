//! `chaos`: pokeq's chaos suite. It starts its own RabbitMQ node and Postgres cluster on spare
//! ports, runs the real `pokeapi-stub`, `producer` and `consumer` binaries as processes, breaks
//! things mid-run (broker and database restarts, SIGKILLed and SIGTERMed consumers, API faults)
//! and verifies from Postgres and the broker that every item was stored once and exactly as the
//! stub serves it. See chaos/README.md.

mod cluster;
mod counter;
mod infra;
mod proc;
mod run;
mod scenarios;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Parser;

use crate::infra::{Postgres, Rabbit, Workdir};
use crate::proc::Bins;
use crate::run::{Infra, Report};
use crate::scenarios::{Scenario, Size};

/// pokeq's chaos suite: the real binaries against a private RabbitMQ and Postgres that it
/// stops, restarts and otherwise breaks mid-run.
#[derive(Debug, Parser)]
#[command(name = "chaos", version)]
struct Cli {
    /// Scenarios to run, by name or number (default: all of the mode): 1 broker-restart,
    /// 2 db-restart, 3 consumer-kill, 4 api-faults, 5 sigterm; with --cluster 6 leader-kill,
    /// 7 leader-kill-publishing, 8 node-restart, 9 rolling-restart.
    #[arg(value_parser = Scenario::parse)]
    scenarios: Vec<Scenario>,

    /// Against a cluster of three RabbitMQ nodes (the clients given every node's URL), with
    /// the cluster scenarios: node losses instead of the single-node ones.
    #[arg(long)]
    cluster: bool,

    /// Smaller runs, for CI (1000 items per single-node scenario instead of 3000, shorter
    /// outages).
    #[arg(long)]
    quick: bool,

    /// Items per scenario (overrides the size --quick picks).
    #[arg(long, value_parser = clap::value_parser!(u32).range(100..=1_000_000))]
    count: Option<u32>,

    /// Directory holding the `producer`, `consumer` and `pokeapi-stub` binaries [default: this
    /// executable's directory].
    #[arg(long)]
    bin_dir: Option<PathBuf>,

    /// Seed of the stub's data and faults.
    #[arg(long, default_value_t = 1)]
    seed: u64,

    /// Longest wait for any phase of a scenario (e.g. every item done).
    #[arg(long, default_value = "4m", value_parser = pokeq_shared::config::parse_duration)]
    timeout: Duration,

    /// Keep the temporary directory (every process's log, the node's and cluster's data).
    #[arg(long)]
    keep: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("chaos: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        // Whichever ends first, the other future is dropped here, and with it every guard:
        // children are killed, the node and the cluster stopped, the directory removed.
        tokio::select! {
            code = suite(cli) => code,
            () = interrupted() => {
                eprintln!("chaos: interrupted; cleaning up");
                ExitCode::from(130)
            }
        }
    })
}

async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn suite(cli: Cli) -> ExitCode {
    match run_suite(cli).await {
        Ok(reports) if reports.iter().all(Report::passed) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("chaos: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run_suite(cli: Cli) -> Result<Vec<Report>> {
    let started = Instant::now();
    let cluster = cli.cluster || cli.scenarios.iter().any(|s| s.clustered());
    let scenarios = if cli.scenarios.is_empty() {
        if cluster {
            Scenario::CLUSTER.to_vec()
        } else {
            Scenario::ALL.to_vec()
        }
    } else {
        cli.scenarios.clone()
    };
    if let Some(wrong) = scenarios.iter().find(|s| s.clustered() != cluster) {
        anyhow::bail!(
            "{wrong} is a {} scenario: run the single-node and the cluster scenarios separately",
            if wrong.clustered() {
                "cluster"
            } else {
                "single-node"
            }
        );
    }
    let size = Size {
        // The cluster scenarios keep 3000 items with --quick: their pace is set by the stub's
        // latency, and fewer items would be done before a node loss could land mid-run.
        count: cli
            .count
            .unwrap_or(if cli.quick && !cluster { 1000 } else { 3000 }),
        down: Duration::from_secs(if cli.quick { 3 } else { 5 }),
    };
    let bins = Bins::locate(cli.bin_dir.clone())?;
    // Declared first, dropped last: the services stop before their directory goes.
    let work = Workdir::create(cli.keep)?;
    println!(
        "chaos: {} scenario(s), {} items each; private RabbitMQ and Postgres in {}",
        scenarios.len(),
        size.count,
        work.path.display()
    );
    let brokers = async {
        if cluster {
            cluster::start(&work.path).await
        } else {
            Ok(vec![Rabbit::start(&work.path).await?])
        }
    };
    let (rabbits, pg) = tokio::join!(brokers, Postgres::start(&work.path));
    let (rabbits, pg) = (rabbits?, pg?);
    for rabbit in &rabbits {
        println!(
            "chaos: RabbitMQ node {} on 127.0.0.1:{} (distribution {})",
            rabbit.node, rabbit.port, rabbit.dist_port
        );
    }
    println!(
        "chaos: Postgres on 127.0.0.1:{} (ready after {:.1}s)",
        pg.port,
        started.elapsed().as_secs_f64()
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let mut infra = Infra {
        bins,
        root: work.path.clone(),
        rabbits,
        pg,
        http,
        seed: cli.seed,
        timeout: cli.timeout,
    };
    let mut reports = Vec::new();
    for scenario in scenarios {
        let scenario_started = Instant::now();
        if let Err(error) = infra.ensure_up().await {
            reports.push(Report::setup_failed(
                scenario.name(),
                error.context("cannot bring the services back up"),
                scenario_started,
            ));
            continue;
        }
        reports.push(scenarios::run(&mut infra, scenario, size).await);
    }
    print_table(&reports, started.elapsed());
    drop(infra);
    drop(work);
    Ok(reports)
}

fn print_table(reports: &[Report], wall: Duration) {
    println!();
    println!(
        "{:<22} {:>6} {:>6} {:>8} {:<13} {:>9} {:>7} {:>7} {:>8}  result",
        "scenario", "items", "kills", "sigterms", "restarts", "api reqs", "extra", "faults", "wall"
    );
    for r in reports {
        println!(
            "{:<22} {:>6} {:>6} {:>8} {:<13} {:>9} {:>7} {:>7} {:>7.1}s  {}",
            r.name,
            r.items,
            r.kills,
            r.sigterms,
            r.restarts,
            r.api_requests,
            r.extra(),
            r.faults,
            r.wall.as_secs_f64(),
            if r.passed() { "PASS" } else { "FAIL" }
        );
    }
    for r in reports {
        for recovery in &r.recoveries {
            println!("{:<22} recovery: {recovery}", r.name);
        }
    }
    let failed = reports.iter().filter(|r| !r.passed()).count();
    println!(
        "chaos: {} of {} scenarios passed in {:.1}s{}",
        reports.len() - failed,
        reports.len(),
        wall.as_secs_f64(),
        if failed > 0 { " — FAIL" } else { " — PASS" }
    );
}
