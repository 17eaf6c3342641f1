//! `bench`: end-to-end benchmark of pokeq. Starts `pokeapi-stub`, K `consumer`s and the
//! `producer` as real processes against a fresh database and queue prefix, measures throughput,
//! publish→commit latency, CPU and memory per process, and appends one JSON line per run to
//! bench/results.jsonl. See bench/README.md.

mod children;
mod procfs;
mod report;
mod run;
mod scan;
mod services;
mod stubrate;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use pokeq_shared::secret::SecretUrl;
use serde_json::{Value, json};

use crate::run::{Registry, Settings, Spec};
use crate::services::Management;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// (a) 1,351 items, no added latency, 2 consumers (with the rerun of (d)).
    Default,
    /// (a) 1,351 and 20,000 items, no added latency.
    A,
    /// (b) 20,000 items, 50 ms added latency per request.
    B,
    /// (c) 20,000 items with 1, 2 and 4 consumers.
    C,
    /// (d) the rerun: 1,351 items, then the producer again (every run does the rerun).
    D,
    /// 1,351 items of real payloads (--samples-dir / POKEAPI_SAMPLES) cycled over the ids.
    Samples,
    /// a, b, c (2 consumers shared with a), and samples when a samples directory is known.
    All,
    /// 20,000 items with 2 consumers, clean and then with 15% of ids answering 503 twice
    /// before they succeed (a flaky backend behind a healthy API).
    Flaky,
    /// The whole Pokédex: 1,351 pokemon listed, consumers following their links to every other
    /// resource (producer `--resources pokemon --follow`), 2 consumers; beside (a)'s
    /// pokemon-only run. Items/s and CPU per item count the items of every resource.
    Crawl,
    /// One run shaped by --items, --consumers, --prefetch, --latency, --samples.
    Custom,
}

/// End-to-end benchmark of pokeq (stub, producer and consumers as real processes).
#[derive(Debug, Parser)]
#[command(name = "bench")]
struct Cli {
    #[command(subcommand)]
    command: Option<Tool>,
    /// Which runs to do.
    #[arg(long, value_enum, default_value_t = Scenario::Default)]
    scenario: Scenario,
    /// Items served by the stub (overrides the scenario's sizes).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    items: Option<u32>,
    /// Consumer processes (overrides the scenario's).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
    consumers: Option<u32>,
    /// The consumers' --prefetch (default: the binaries' 64; 128 with added latency).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=4096))]
    prefetch: Option<u16>,
    /// POKEQ_API_CONCURRENCY of every process (default: the binaries' 16; 64 with added
    /// latency, so that 2 consumers can reach 2,000 items/s at 50 ms).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    api_concurrency: Option<u16>,
    /// Added latency per stub request in ms (overrides the scenario's).
    #[arg(long)]
    latency_ms: Option<u64>,
    /// Serve the real payload files of this directory (needs <dir>/pokemon/*.json).
    #[arg(long, env = "POKEAPI_SAMPLES")]
    samples_dir: Option<PathBuf>,
    /// With --scenario custom: use --samples-dir payloads.
    #[arg(long)]
    samples: bool,
    /// Name of a custom run (default `custom`).
    #[arg(long, default_value = "custom")]
    label: String,
    /// Directory of producer, consumer and pokeapi-stub (default: next to this binary, built
    /// first with cargo when run through `cargo run`).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Do not run `cargo build` for the binaries first.
    #[arg(long)]
    no_build: bool,
    /// RabbitMQ URL, or the comma-separated URLs of a cluster's nodes (given to the binaries
    /// as AMQP_URL).
    #[arg(
        long,
        env = "BENCH_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    amqp_url: SecretUrl,
    /// Postgres server; each run creates and drops its own `pokeq_bench_<tag>` database.
    #[arg(
        long,
        env = "BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    postgres_url: SecretUrl,
    #[arg(
        long,
        env = "BENCH_MANAGEMENT_URL",
        default_value = "http://guest:guest@127.0.0.1:15672"
    )]
    management_url: SecretUrl,
    /// POKEQ_QUEUE_TYPE of every process (quorum or classic).
    #[arg(long, default_value = "quorum")]
    queue_type: String,
    /// Abort a run when no item finished for this many seconds.
    #[arg(long, default_value_t = 60)]
    stall_secs: u64,
    /// Seconds of the stub-alone measurement (0 skips it).
    #[arg(long, default_value_t = 3)]
    stub_secs: u64,
    /// Concurrent clients of the stub-alone measurement (default: the pipeline's requests in
    /// flight, consumers × min(prefetch, API concurrency)).
    #[arg(long)]
    stub_clients: Option<usize>,
    /// Skip the rerun of the producer on the finished database.
    #[arg(long)]
    no_rerun: bool,
    /// Run every run of the scenario this many times (for (c), whose check takes the median of
    /// the last 3 runs of each shape).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10))]
    repeat: u32,
    /// Do not append to the results file.
    #[arg(long)]
    no_record: bool,
    /// Keep each run's database and queues (for inspection).
    #[arg(long)]
    keep: bool,
    /// Extra argument for every consumer (repeatable), e.g. --consumer-arg=--http-timeout=5s.
    #[arg(long, allow_hyphen_values = true)]
    consumer_arg: Vec<String>,
    /// Extra KEY=VALUE environment variable for every consumer (repeatable), e.g.
    /// --consumer-env MALLOC_ARENA_MAX=2.
    #[arg(long, value_parser = parse_env)]
    consumer_env: Vec<(String, String)>,
    /// Postgres setting of the run's database (repeatable), applied with ALTER DATABASE, e.g.
    /// --db-setting synchronous_commit=off to see what commit flushes cost.
    #[arg(long, value_parser = parse_env)]
    db_setting: Vec<(String, String)>,
    /// Extra argument for the producer (repeatable), e.g. --producer-arg=--concurrency=16.
    #[arg(long, allow_hyphen_values = true)]
    producer_arg: Vec<String>,
    /// Results file.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/results.jsonl"))]
    results: PathBuf,
    /// Print the markdown table of the latest results and the targets, then exit.
    #[arg(long)]
    table: bool,
    /// Rewrite the results section of bench/README.md from the results file, then exit.
    #[arg(long)]
    update_readme: bool,
}

#[derive(Debug, clap::Subcommand)]
enum Tool {
    /// transform's JSON decode (serde_json) against sonic-rs, per payload, in this process (no
    /// services needed). Prints a markdown table.
    Scan(scan::Args),
}

const README: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Tool::Scan(args)) = &cli.command {
        return match scan::main(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("bench scan: {error:#}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("bench: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(main_async(cli)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `Ok(false)` when some run failed.
async fn main_async(cli: Cli) -> anyhow::Result<bool> {
    if cli.table || cli.update_readme {
        let records = report::load(&cli.results)?;
        if cli.table {
            print!("{}", report::table(&records));
            println!(
                "\nTargets (latest successful matching run):\n\n{}",
                report::targets(&records)
            );
        }
        if cli.update_readme {
            report::update_readme(Path::new(README), &records)?;
            println!("updated {README}");
        }
        return Ok(true);
    }

    let specs = specs(&cli)?;
    let bin_dir = match &cli.bin_dir {
        Some(dir) => dir.clone(),
        None => {
            let exe = std::env::current_exe().context("cannot find this executable")?;
            let dir = exe
                .parent()
                .context("this executable has no directory")?
                .to_owned();
            if !cli.no_build {
                build_binaries(&dir)?;
            }
            dir
        }
    };
    for binary in ["producer", "consumer", "pokeapi-stub"] {
        let path = bin_dir.join(binary);
        if !path.is_file() {
            bail!(
                "{} is missing: build with `cargo build --release --workspace` or pass --bin-dir",
                path.display()
            );
        }
    }
    let settings = Settings {
        bin_dir,
        amqp_url: cli.amqp_url.clone(),
        postgres_url: cli.postgres_url.clone(),
        mgmt: Management::new(cli.management_url.expose())?,
        queue_type: cli.queue_type.clone(),
        stall: Duration::from_secs(cli.stall_secs),
        stub_secs: Duration::from_secs(cli.stub_secs),
        stub_clients: cli.stub_clients,
        rerun: !cli.no_rerun,
        stub_rate: cli.stub_secs > 0,
        keep: cli.keep,
        consumer_args: cli.consumer_arg.clone(),
        consumer_env: cli.consumer_env.clone(),
        db_settings: cli.db_setting.clone(),
        producer_args: cli.producer_arg.clone(),
        registry: Registry::default(),
    };
    let context = context();

    let work = async {
        let mut all_ok = true;
        for spec in &specs {
            let record = match run::run(&settings, spec).await {
                Ok(record) => {
                    report::print_run(&record);
                    record
                }
                Err(error) => {
                    eprintln!("   run {} FAILED: {error:#}", spec.name());
                    json!({
                        "scenario": spec.name(), "group": spec.group, "items": spec.items,
                        "consumers": spec.consumers, "prefetch": spec.prefetch,
                        "api_concurrency": spec.api_concurrency,
                        "added_latency_ms": spec.latency_ms, "payload": spec.payload(),
                        "queue_type": settings.queue_type, "ok": false,
                        "error": format!("{error:#}"),
                    })
                }
            };
            all_ok &= record["ok"].as_bool().unwrap_or(false);
            if !cli.no_record {
                let mut line = context.clone();
                if let (Some(line), Some(fields)) = (line.as_object_mut(), record.as_object()) {
                    line.extend(fields.clone());
                }
                report::append(&cli.results, &line)?;
            }
        }
        anyhow::Ok(all_ok)
    };

    let interrupted = async {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                },
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    };
    let outcome = tokio::select! {
        outcome = work => outcome,
        () = interrupted => Err(anyhow::anyhow!("interrupted")),
    };
    // The run futures are dropped by now, and with them every child (killed and reaped).
    let leftovers = settings.registry.take();
    if !leftovers.is_empty() {
        eprintln!("bench: cleaning up {} run(s)", leftovers.len());
        let admin = services::pg_connect(&services::database_url(
            cli.postgres_url.expose(),
            "postgres",
        )?)
        .await?;
        for (db, prefix) in leftovers {
            if !cli.keep {
                run::cleanup(&settings, &admin, &db, &prefix).await;
            }
        }
    }
    let all_ok = outcome?;
    if !cli.no_record {
        let records = report::load(&cli.results)?;
        println!(
            "\nTargets (latest successful matching run in {}):\n",
            cli.results.display()
        );
        print!("{}", report::targets(&records));
    }
    Ok(all_ok)
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

/// (prefetch, API concurrency) of the consumers by default: the binaries' own defaults.
pub const DEFAULT_SHAPE: (u16, u16) = (64, 16);
/// (prefetch, API concurrency) with added latency: 64 requests in flight per consumer make
/// 1,280 items/s at 50 ms, and twice as many deliveries in hand keep them all busy while
/// finished jobs wait for their commit and ack.
pub const LATENCY_SHAPE: (u16, u16) = (128, 64);

fn specs(cli: &Cli) -> anyhow::Result<Vec<Spec>> {
    let consumers = cli.consumers.unwrap_or(2);
    let samples_dir = || {
        cli.samples_dir
            .clone()
            .context("samples runs need --samples-dir or POKEAPI_SAMPLES")
    };
    let spec = |group: &str, items: u32, consumers: u32, latency_ms: u64| {
        let latency_ms = cli.latency_ms.unwrap_or(latency_ms);
        // The binaries' defaults; with latency, sized to it (see LATENCY_SHAPE).
        let (prefetch, api) = if latency_ms > 0 {
            LATENCY_SHAPE
        } else {
            DEFAULT_SHAPE
        };
        Spec {
            group: group.to_owned(),
            items: cli.items.unwrap_or(items),
            consumers: cli.consumers.unwrap_or(consumers),
            prefetch: cli.prefetch.unwrap_or(prefetch),
            api_concurrency: cli.api_concurrency.unwrap_or(api),
            latency_ms,
            samples: None,
            flaky_percent: 0,
            crawl: false,
        }
    };
    let with_samples = |mut s: Spec| -> anyhow::Result<Spec> {
        s.samples = Some(samples_dir()?);
        Ok(s)
    };
    let mut specs = match cli.scenario {
        Scenario::Default | Scenario::D => vec![spec("a", 1351, consumers, 0)],
        Scenario::A => vec![
            spec("a", 1351, consumers, 0),
            spec("a", 20000, consumers, 0),
        ],
        Scenario::B => vec![spec("b", 20000, consumers, 50)],
        Scenario::C => vec![
            spec("c", 20000, 1, 0),
            spec("c", 20000, 2, 0),
            spec("c", 20000, 4, 0),
        ],
        Scenario::Samples => vec![with_samples(spec("samples", 1351, consumers, 0))?],
        Scenario::All => {
            let mut all = vec![
                spec("a", 1351, 2, 0),
                spec("a", 20000, 2, 0),
                spec("b", 20000, 2, 50),
                spec("c", 20000, 1, 0),
                spec("c", 20000, 4, 0),
            ];
            if cli.samples_dir.is_some() {
                all.push(with_samples(spec("samples", 1351, 2, 0))?);
            }
            all
        }
        Scenario::Flaky => vec![
            spec("flaky", 20000, consumers, 0),
            Spec {
                flaky_percent: 15,
                ..spec("flaky", 20000, consumers, 0)
            },
        ],
        Scenario::Crawl => vec![
            spec("a", 1351, consumers, 0),
            Spec {
                crawl: true,
                ..spec("crawl", 1351, consumers, 0)
            },
        ],
        Scenario::Custom => {
            let custom = spec(&cli.label, 1351, consumers, 0);
            vec![if cli.samples {
                with_samples(custom)?
            } else {
                custom
            }]
        }
    };
    specs.dedup();
    let repeat = cli.repeat as usize;
    Ok(specs
        .into_iter()
        .flat_map(|spec| std::iter::repeat_n(spec, repeat))
        .collect())
}

/// Builds producer, consumer and pokeapi-stub into the target directory of this binary, so a
/// benchmark never measures stale binaries. Only when run through cargo (`CARGO` is set).
fn build_binaries(bin_dir: &Path) -> anyhow::Result<()> {
    let Some(cargo) = std::env::var_os("CARGO") else {
        return Ok(());
    };
    let Some(target_dir) = bin_dir.parent() else {
        return Ok(());
    };
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--bins",
        "-p",
        "pokeq-producer",
        "-p",
        "pokeq-consumer",
        "-p",
        "pokeapi-stub",
    ])
    .env("CARGO_TARGET_DIR", target_dir)
    .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    if bin_dir.file_name().is_some_and(|name| name == "release") {
        cmd.arg("--release");
    }
    eprintln!(
        "bench: building producer, consumer and pokeapi-stub ({})",
        bin_dir.display()
    );
    let status = cmd.status().context("cannot run cargo build")?;
    if !status.success() {
        bail!("cargo build of the binaries failed ({status})");
    }
    Ok(())
}

/// Commit, time and machine, common to every record of this invocation.
fn context() -> Value {
    let repo = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let git = |args: &[&str]| -> Option<String> {
        let output = Command::new("git")
            .args(["--no-optional-locks", "-C", repo])
            .args(args)
            .output()
            .ok()?;
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
    };
    let commit = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty = git(&["status", "--porcelain"]).is_some_and(|s| !s.is_empty());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_default();
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    json!({
        "timestamp": pokeq_shared::worker::utc_rfc3339(now),
        "commit": commit,
        "dirty": dirty,
        "machine": { "nproc": nproc, "model": model },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_crawl_runs_a_crawl_beside_the_pokemon_only_run() {
        let cli = Cli::parse_from(["bench", "--scenario", "crawl"]);
        let runs: Vec<(String, bool)> = specs(&cli)
            .unwrap()
            .iter()
            .map(|spec| (spec.name(), spec.crawl))
            .collect();
        assert_eq!(
            runs,
            [
                ("a-1351-k2-p64-api16".to_owned(), false),
                ("crawl-1351-k2-p64-api16".to_owned(), true),
            ]
        );
        assert_eq!(run::CRAWL_ARGS, ["--resources", "pokemon", "--follow"]);
    }

    #[test]
    fn scenario_all_lists_the_issue_runs() {
        let cli = Cli::parse_from(["bench", "--scenario", "all"]);
        let names: Vec<String> = specs(&cli).unwrap().iter().map(Spec::name).collect();
        assert!(
            names.contains(&"b-20000-k2-p128-api64-50ms".to_owned()),
            "{names:?}"
        );
        assert!(
            names.contains(&"c-20000-k4-p64-api16".to_owned()),
            "{names:?}"
        );
    }
}
