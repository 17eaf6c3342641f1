//! `pokeq status`: where the pipeline stands, from its sources of truth.
//!
//! Item counts, throughput and the producer runs come from Postgres. Ready messages and
//! consumers are counted now over AMQP ([`crate::probe`]); the RabbitMQ management API adds what
//! AMQP cannot tell (unacknowledged messages, the retry queues that exist, queue types), from
//! samples it takes every few seconds, so those figures are marked as such. Any source may be
//! down while the others answer, and an operator needs whatever is known at that moment most,
//! so each part is collected on its own, printed if it could be, and a missing part is named
//! with the reason (exit 1 at the end, or 2 if the part is missing because a source refused a
//! setting, such as a wrong password).
//!
//! Status only reads: it declares nothing (passive declares only ask), so a mistyped prefix
//! shows queues that are "not declared" (and fails) instead of creating them. `--wait`
//! ([`crate::wait`]) blocks until the run is over.
//!
//! Here are the command and its settings; `report.rs` gathers a report from its sources
//! (`database.rs`: Postgres, `queues.rs`: AMQP and the management API), `throughput.rs`
//! measures the pace and `render.rs` prints it for people.

use std::time::Duration;

use clap::Args;
use pokeq_shared::config::{Common, ConfigError, parse_duration};
use pokeq_shared::shutdown::CancellationToken;

use crate::Console;
use crate::management::{Management, ManagementArgs, ManagementConfig};

mod database;
mod queues;
mod render;
mod report;
#[cfg(test)]
mod tests;
mod throughput;

pub(crate) use database::{items_and_throughput, with_store};
pub use render::render;
pub(crate) use report::Missing;
use report::Sources;
pub use report::{
    ApiCircuit, Items, MANAGEMENT_MAX_AGE, ProducerRun, QueueRow, Report, ResourceItems,
};
pub use throughput::Throughput;

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Print one JSON document instead of tables (one per line with --watch; with --wait, one
    /// at the end and no progress lines).
    #[arg(long)]
    pub json: bool,

    /// Refresh until Ctrl-C.
    #[arg(long)]
    pub watch: bool,

    /// Time between refreshes with --watch (e.g. 500ms, 2s, 1m).
    #[arg(long, default_value = "2s", value_parser = parse_duration, requires = "watch")]
    pub interval: Duration,

    /// Block until no item is pending or queued and the jobs queue holds no ready job, showing
    /// progress; exit 0 when every item is done, 1 when some failed (counts by kind), 2 on
    /// --timeout. For scripts: `producer && pokeq status --wait`.
    #[arg(long, conflicts_with = "watch")]
    pub wait: bool,

    /// With --wait: give up after this long (exit 2), e.g. 90s, 10m, 2h. Default: no limit.
    #[arg(long, value_parser = parse_duration, requires = "wait")]
    pub timeout: Option<Duration>,

    #[command(flatten)]
    pub management: ManagementArgs,
}

#[derive(Debug, Clone)]
pub struct StatusConfig {
    pub json: bool,
    /// Refresh interval; `None` prints once.
    pub watch: Option<Duration>,
    /// `--wait`, with its time limit if any.
    pub wait: Option<crate::wait::WaitConfig>,
    pub management: ManagementConfig,
}

impl StatusArgs {
    pub fn validate(&self, common: &Common) -> Result<StatusConfig, ConfigError> {
        if self.watch && self.interval.is_zero() {
            return Err(ConfigError::new(
                "--interval",
                "0",
                "must be longer than zero",
            ));
        }
        if self.timeout.is_some_and(|t| t.is_zero()) {
            return Err(ConfigError::new(
                "--timeout",
                "0",
                "must be longer than zero",
            ));
        }
        Ok(StatusConfig {
            json: self.json,
            watch: self.watch.then_some(self.interval),
            wait: self.wait.then_some(crate::wait::WaitConfig {
                timeout: self.timeout,
            }),
            management: self.management.validate(common.amqp_url.expose())?,
        })
    }
}

pub async fn run(
    common: &Common,
    config: &StatusConfig,
    shutdown: &CancellationToken,
    console: &mut Console<'_>,
) -> anyhow::Result<()> {
    if let Some(wait) = &config.wait {
        return crate::wait::run(common, wait, config.json, console).await;
    }
    let mut sources = Sources {
        common,
        store: None,
        probe: None,
        management: Management::new(config.management.clone())?,
    };
    let Some(interval) = config.watch else {
        let report = sources.collect().await;
        sources.close().await;
        if config.json {
            serde_json::to_writer_pretty(&mut *console.out, &report)?;
            writeln!(console.out)?;
        } else {
            write!(console.out, "{}", render(&report, common))?;
        }
        if let Some(refused) = report.misconfigured {
            return Err(anyhow::Error::new(refused).context("status incomplete"));
        }
        let mut missing: Vec<String> = [
            ("database unavailable", &report.database_error),
            ("queue figures unavailable", &report.queues_error),
            ("exact queue counts unavailable", &report.broker_error),
        ]
        .into_iter()
        .filter_map(|(what, error)| error.as_ref().map(|e| format!("{what}: {e}")))
        .collect();
        // A jobs or dead queue that does not exist: a mistyped prefix, or nothing ran yet.
        for queue in report.queues.iter().flatten() {
            if !queue.exists && matches!(queue.role, "jobs" | "dead") {
                missing.push(format!("queue {} does not exist", queue.name));
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        anyhow::bail!("status incomplete: {}", missing.join("; "));
    };
    loop {
        let report = tokio::select! {
            _ = shutdown.cancelled() => break,
            report = sources.collect() => report,
        };
        if config.json {
            serde_json::to_writer(&mut *console.out, &report)?;
            writeln!(console.out)?;
        } else {
            if console.terminal {
                // Home and clear: the table is redrawn in place, like watch(1).
                write!(console.out, "\x1b[H\x1b[2J")?;
            }
            write!(console.out, "{}", render(&report, common))?;
            writeln!(
                console.out,
                "\nevery {}; Ctrl-C to stop",
                pokeq_shared::config::format_duration(interval)
            )?;
            if !console.terminal {
                writeln!(console.out)?;
            }
        }
        console.out.flush()?;
        if let Some(refused) = report.misconfigured {
            sources.close().await;
            return Err(anyhow::Error::new(refused).context("status stopped"));
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(interval) => {}
        }
    }
    sources.close().await;
    Ok(())
}
