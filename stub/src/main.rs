//! `pokeapi-stub`: serve the local PokeAPI stand-in until SIGINT/SIGTERM.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use pokeapi_stub::parse::{parse_duration, parse_fault_rate, parse_fault_target};
use pokeapi_stub::{FaultRule, Resource, StubConfig, spawn};
use tracing_subscriber::EnvFilter;

/// Local PokeAPI stand-in: deterministic pokemon, and the species, evolution chains, types,
/// abilities and moves they link, under /api/v2, with optional faults.
#[derive(Parser, Debug)]
#[command(name = "pokeapi-stub", version)]
struct Args {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, env = "STUB_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Number of pokemon (ids 1..=1025, then 10001...); as many species as national-dex ids,
    /// and their evolution chains (types, abilities and moves are a fixed set).
    #[arg(long, env = "STUB_COUNT", default_value_t = 1351,
          value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    count: u32,
    /// Seed of the generated data and of rate-based faults.
    #[arg(long, env = "STUB_SEED", default_value_t = 1)]
    seed: u64,
    /// Delay added to every request, e.g. 50ms.
    #[arg(long, env = "STUB_LATENCY", default_value = "0ms", value_parser = parse_duration)]
    latency: Duration,
    /// Fraction (0..=1) of detail requests (of every resource) that get a transient 429, 503 or
    /// dropped body.
    #[arg(long, env = "STUB_FAULT_RATE", default_value_t = 0.0,
          value_parser = parse_fault_rate)]
    fault_rate: f64,
    /// Share (0..=1) of ids whose first --flaky-times requests answer 503, as a flaky backend
    /// behind a healthy API would.
    #[arg(long, env = "STUB_FLAKY_SHARE", default_value_t = 0.0,
          value_parser = parse_fault_rate)]
    flaky_share: f64,
    /// Requests of each flaky id that fail before it succeeds.
    #[arg(long, env = "STUB_FLAKY_TIMES", default_value_t = 2)]
    flaky_times: u32,
    /// [<resource>/]<id>:<kind>[:<times>], kind one of 404, 429, 500-599, malformed, drop,
    /// slow[=<dur>], wrong-id, nul (a valid document whose species name holds U+0000, which
    /// Postgres cannot store). Without a resource the id is a pokemon's; with one, e.g.
    /// pokemon-species/133:500, of that resource. Repeatable (comma-separated in the env var).
    #[arg(long = "fault", env = "STUB_FAULTS", value_name = "[RESOURCE/]ID:KIND[:TIMES]",
          value_delimiter = ',', value_parser = parse_fault_target)]
    faults: Vec<(Resource, i32, FaultRule)>,
    /// Serve the real payloads in <dir>/pokemon/*.json instead of generated ones, and those of
    /// <dir>/<resource>/*.json for the other resources (none where the folder is missing).
    #[arg(long, env = "STUB_SAMPLES_DIR")]
    samples_dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut faults = HashMap::new();
    let mut resource_faults = HashMap::new();
    for (resource, id, rule) in args.faults {
        match resource {
            Resource::Pokemon => faults.insert(id, rule),
            other => resource_faults.insert((other, id), rule),
        };
    }
    let config = StubConfig {
        count: args.count,
        seed: args.seed,
        latency: args.latency,
        fault_rate: args.fault_rate,
        flaky_share: args.flaky_share,
        flaky_times: args.flaky_times,
        faults,
        resource_faults,
        samples_dir: args.samples_dir,
    };
    let handle = spawn(config, args.listen).await?;
    println!("pokeapi-stub listening on http://{}/api/v2", handle.addr());
    shutdown_signal().await;
    tracing::info!("shutting down");
    handle.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
