//! `pokeq topology`: what is declared under the prefix, and which retry wait queues nobody uses.
//!
//! Each consumer declares a durable `<prefix>.retry.<delay>` queue per delay of its
//! `--retry-delays`, so every schedule ever tried leaves its queues behind. A wait queue is
//! *unused* when no live consumer of the prefix uses its delay (each one advertises its delays in
//! its connection properties, see `pokeq_shared::worker`) and it holds no message; `prune`
//! deletes exactly those, after asking. Deleting one is never a loss: a consumer declares its
//! wait queues each time it connects, so one started later with that delay gets its queue back.
//! When a live consumer does not say which delays it uses (an older build), no queue is called
//! unused.
//!
//! Names and declarations come from the management API (AMQP cannot list anything); the depths
//! and consumer counts shown, and the emptiness `prune` relies on, are exact ones from passive
//! declares, and the delete itself is conditional (`if-empty`, `if-unused`), so the broker has
//! the last word.

use std::collections::HashSet;
use std::time::Duration;

use clap::{Args, Subcommand};
use lapin::Connection;
use lapin::options::QueueDeleteOptions;
use lapin::types::ShortString;
use pokeq_shared::broker;
use pokeq_shared::config::{Common, ConfigError, parse_duration};
use pokeq_shared::shutdown::CancellationToken;
use pokeq_shared::topology::Topology;
use pokeq_shared::worker;
use serde::Serialize;
use serde_json::Value;

use crate::inspect;
use crate::management::{Management, ManagementArgs, ManagementConfig};
use crate::table::{Align, Table};
use crate::{Console, UsageError};

#[derive(Debug, Clone, Args)]
pub struct TopologyArgs {
    #[command(subcommand)]
    pub action: Option<TopologyAction>,

    /// One JSON document instead of tables.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub management: ManagementArgs,
}

#[derive(Debug, Clone, Subcommand)]
pub enum TopologyAction {
    /// Delete the retry wait queues that no live consumer uses and that are empty, after
    /// asking (a consumer started later with such a delay declares its queue again).
    Prune(PruneArgs),
}

#[derive(Debug, Clone, Args)]
pub struct PruneArgs {
    /// Do not ask; required when stdin is not a terminal.
    #[arg(long)]
    pub yes: bool,
}

#[derive(Debug, Clone)]
pub struct TopologyConfig {
    pub json: bool,
    /// `None` shows; `Some` prunes.
    pub prune: Option<PruneArgs>,
    pub management: ManagementConfig,
}

impl TopologyArgs {
    pub fn validate(&self, common: &Common) -> Result<TopologyConfig, ConfigError> {
        Ok(TopologyConfig {
            json: self.json,
            prune: self
                .action
                .as_ref()
                .map(|TopologyAction::Prune(args)| args.clone()),
            management: self.management.validate(common.amqp_url.expose())?,
        })
    }
}

/// What is declared under the prefix; this is also the `--json` document.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub prefix: String,
    pub vhost: String,
    /// Unix time (seconds) the report was made.
    pub at: u64,
    pub exchanges: Vec<ExchangeRow>,
    /// The jobs queue, the wait queues shortest delay first, the dead queue and its ledger, then
    /// any other.
    pub queues: Vec<QueueRow>,
    /// The live consumers of the prefix and the delays each uses.
    pub consumers: Vec<ConsumerDelays>,
    /// The wait queues `prune` deletes.
    pub unused: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExchangeRow {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub durable: bool,
    pub auto_delete: bool,
    pub arguments: serde_json::Map<String, Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct QueueRow {
    pub name: String,
    /// `jobs`, `retry`, `dead`, `ledger` (the dead letters' copy consumers read) or `other`.
    pub role: &'static str,
    #[serde(rename = "type")]
    pub queue_type: Option<String>,
    pub durable: bool,
    pub auto_delete: bool,
    pub arguments: serde_json::Map<String, Value>,
    /// Exact, from a passive declare.
    pub messages_ready: u64,
    /// From the broker's last statistics sample (`None` before the first).
    pub messages_unacknowledged: Option<u64>,
    /// Exact, from a passive declare.
    pub consumers: u64,
    /// A wait queue's delay label.
    pub delay: Option<String>,
    /// Whether live consumers use a wait queue.
    pub usage: Option<Usage>,
    /// How many live consumers use this wait queue's delay.
    pub used_by: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Usage {
    /// Some live consumer retries through it.
    Used,
    /// No live consumer uses its delay and it is empty: `prune` deletes it.
    Unused,
    /// No live consumer uses its delay, but messages still wait in it: kept until they left.
    UnusedNotEmpty,
    /// A live consumer does not say which delays it uses.
    Unknown,
}

impl Usage {
    fn text(self, used_by: Option<usize>) -> String {
        match self {
            Usage::Used => {
                let n = used_by.unwrap_or(0);
                format!("used by {n} consumer{}", if n == 1 { "" } else { "s" })
            }
            Usage::Unused => "UNUSED (empty: prune deletes it)".to_owned(),
            Usage::UnusedNotEmpty => "unused, not empty (kept)".to_owned(),
            Usage::Unknown => "unknown".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ConsumerDelays {
    /// The connection's name (`pokeq-consumer@<host>:<pid>`).
    pub name: String,
    /// `None`: the consumer does not advertise them.
    pub retry_delays: Option<Vec<String>>,
}

pub async fn run(
    common: &Common,
    config: &TopologyConfig,
    _shutdown: &CancellationToken,
    console: &mut Console<'_>,
) -> anyhow::Result<()> {
    let management = Management::new(config.management.clone())?;
    let connection = broker::connect(
        common.amqp_url.expose(),
        "pokeq-ctl",
        common.extra_ca.as_deref(),
    )
    .await?;
    let result = match &config.prune {
        None => show(common, config, &management, &connection, console).await,
        Some(args) => prune(common, args, &management, &connection, console).await,
    };
    broker::close(&connection).await;
    result
}

async fn show(
    common: &Common,
    config: &TopologyConfig,
    management: &Management,
    connection: &Connection,
    console: &mut Console<'_>,
) -> anyhow::Result<()> {
    let report = collect(common, management, connection).await?;
    if config.json {
        serde_json::to_writer_pretty(&mut *console.out, &report)?;
        writeln!(console.out)?;
    } else {
        write!(console.out, "{}", render(&report))?;
    }
    Ok(())
}

async fn prune(
    common: &Common,
    args: &PruneArgs,
    management: &Management,
    connection: &Connection,
    console: &mut Console<'_>,
) -> anyhow::Result<()> {
    if !args.yes && console.input.is_none() {
        return Err(UsageError(
            "refusing to prune: stdin is not a terminal, so nobody can confirm; pass --yes".into(),
        )
        .into());
    }
    let report = collect(common, management, connection).await?;
    if report.unused.is_empty() {
        writeln!(console.out, "no unused empty wait queue; nothing to prune")?;
        writeln!(console.out, "pruned=0 kept=0")?;
        return Ok(());
    }
    if !args.yes
        && let Some(input) = console.input.as_mut()
    {
        writeln!(
            console.out,
            "Unused and empty (no live consumer uses their delays): {}",
            report.unused.join(", ")
        )?;
        write!(
            console.out,
            "Delete these {} wait queues? [y/N] ",
            report.unused.len()
        )?;
        console.out.flush()?;
        let mut answer = String::new();
        input.read_line(&mut answer)?;
        if !matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
            anyhow::bail!("not confirmed; nothing deleted");
        }
    }
    // Asked again right before deleting: a consumer started while the question was open may
    // use one of them now, and deleting its wait queue would make its retries unroutable.
    let now_unused: HashSet<String> = collect(common, management, connection)
        .await?
        .unused
        .into_iter()
        .collect();
    let mut pruned = 0usize;
    let mut kept = 0usize;
    for name in &report.unused {
        if !now_unused.contains(name) {
            kept += 1;
            writeln!(console.out, "kept {name}: in use or not empty any more")?;
            continue;
        }
        match delete_if_empty(connection, name).await {
            Ok(()) => {
                pruned += 1;
                writeln!(console.out, "deleted {name}")?;
            }
            Err(error) => {
                kept += 1;
                writeln!(console.out, "kept {name}: {error}")?;
            }
        }
    }
    writeln!(console.out, "pruned={pruned} kept={kept}")?;
    Ok(())
}

/// Deletes `queue` only if it has neither a message nor a consumer, on a channel of its own
/// (a refused delete closes the channel).
async fn delete_if_empty(connection: &Connection, queue: &str) -> Result<(), lapin::Error> {
    let channel = connection.create_channel().await?;
    let deleted = channel
        .queue_delete(
            ShortString::from(queue),
            QueueDeleteOptions {
                if_unused: true,
                if_empty: true,
                nowait: false,
            },
        )
        .await;
    if deleted.is_ok() {
        broker::close_channel(&channel).await;
    }
    deleted.map(|_| ())
}

/// The report, or an error when the management API cannot be read or nothing at all is
/// declared under the prefix (a mistyped `POKEQ_PREFIX`).
pub async fn collect(
    common: &Common,
    management: &Management,
    connection: &Connection,
) -> anyhow::Result<Report> {
    let prefix = &common.prefix;
    let names = Topology::without_retries(prefix, common.queue_type);
    let vhost = management.config().vhost.clone();
    let (exchanges, queues, consumers, connections) = tokio::join!(
        management.exchanges(prefix),
        management.queue_details(prefix),
        management.consumers(),
        management.connections(),
    );
    let (exchanges, queues, consumers, connections) =
        (exchanges?, queues?, consumers?, connections?);
    if exchanges.is_empty() && queues.is_empty() {
        anyhow::bail!(
            "nothing is declared under prefix {prefix} on vhost {vhost} (no producer or consumer \
             has run with POKEQ_PREFIX={prefix} there; check the prefix and AMQP_URL)"
        );
    }

    // Live consumers: connections consuming the jobs queue, and those advertising this prefix
    // (a consumer that connected and is about to consume has declared its wait queues already).
    let jobs = names.jobs();
    let consuming: HashSet<&str> = consumers
        .iter()
        .filter(|c| c.queue.name == jobs)
        .filter_map(|c| Some(c.channel_details.as_ref()?.connection_name.as_str()))
        .collect();
    let live: Vec<ConsumerDelays> = connections
        .iter()
        .filter(|c| {
            consuming.contains(c.name.as_str())
                || c.property(worker::PREFIX).as_deref() == Some(prefix.as_str())
        })
        .map(|c| ConsumerDelays {
            name: c
                .user_provided_name
                .clone()
                .unwrap_or_else(|| c.name.clone()),
            retry_delays: c
                .property(worker::RETRY_DELAYS)
                .map(|labels| labels.split(',').map(str::to_owned).collect()),
        })
        .collect();
    let everyone_says = live.iter().all(|c| c.retry_delays.is_some());

    let mut rows = Vec::new();
    for queue in queues {
        // Exact figures now; a queue deleted since it was listed is left out.
        let Some(now) = inspect::queue(connection, &queue.name).await? else {
            continue;
        };
        let delay = names.retry_label(&queue.name).map(str::to_owned);
        let role = if queue.name == jobs {
            "jobs"
        } else if queue.name == names.dead() {
            "dead"
        } else if queue.name == names.ledger() {
            "ledger"
        } else if delay.is_some() {
            "retry"
        } else {
            "other"
        };
        let (usage, used_by) = match &delay {
            Some(label) => {
                let used_by = live
                    .iter()
                    .filter(|c| {
                        c.retry_delays
                            .as_ref()
                            .is_some_and(|labels| labels.iter().any(|l| same_delay(l, label)))
                    })
                    .count();
                let empty = now.ready == 0
                    && now.consumers == 0
                    && queue.messages_unacknowledged.unwrap_or(0) == 0;
                let usage = match (used_by, everyone_says, empty) {
                    (1.., _, _) => Usage::Used,
                    (0, false, _) => Usage::Unknown,
                    (0, true, true) => Usage::Unused,
                    (0, true, false) => Usage::UnusedNotEmpty,
                };
                (Some(usage), Some(used_by))
            }
            None => (None, None),
        };
        rows.push(QueueRow {
            name: queue.name,
            role,
            queue_type: queue.queue_type,
            durable: queue.durable,
            auto_delete: queue.auto_delete,
            arguments: queue.arguments,
            messages_ready: u64::from(now.ready),
            messages_unacknowledged: queue.messages_unacknowledged,
            consumers: u64::from(now.consumers),
            delay,
            usage,
            used_by,
        });
    }
    rows.sort_by_key(|row| {
        let rank = match row.role {
            "jobs" => 0,
            "retry" => 1,
            "dead" => 2,
            "ledger" => 3,
            _ => 4,
        };
        let delay = row
            .delay
            .as_deref()
            .and_then(|label| parse_duration(label).ok())
            .unwrap_or(Duration::ZERO);
        (rank, delay, row.name.clone())
    });
    let unused = rows
        .iter()
        .filter(|row| row.usage == Some(Usage::Unused))
        .map(|row| row.name.clone())
        .collect();
    let mut exchanges: Vec<ExchangeRow> = exchanges
        .into_iter()
        .map(|e| ExchangeRow {
            name: e.name,
            kind: e.exchange_type,
            durable: e.durable,
            auto_delete: e.auto_delete,
            arguments: e.arguments,
        })
        .collect();
    exchanges.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Report {
        prefix: prefix.clone(),
        vhost,
        at: now(),
        exchanges,
        queues: rows,
        consumers: live,
        unused,
    })
}

/// Whether two delay labels name the same delay (`60s` and `1m` do).
fn same_delay(a: &str, b: &str) -> bool {
    match (parse_duration(a), parse_duration(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// The report as people read it.
pub fn render(report: &Report) -> String {
    let mut text = format!(
        "pokeq topology: prefix {}, vhost {}\n",
        report.prefix, report.vhost
    );
    text.push_str("\nExchanges\n");
    if report.exchanges.is_empty() {
        text.push_str("  none\n");
    } else {
        let mut table = Table::new(&[
            ("EXCHANGE", Align::Left),
            ("TYPE", Align::Left),
            ("DURABLE", Align::Left),
            ("ARGUMENTS", Align::Left),
        ]);
        for exchange in &report.exchanges {
            table.row(vec![
                exchange.name.clone(),
                exchange.kind.clone(),
                yes_no(exchange.durable),
                arguments(&exchange.arguments),
            ]);
        }
        text.push_str(&table.render("  "));
    }

    text.push_str("\nQueues\n");
    if report.queues.is_empty() {
        text.push_str("  none\n");
    } else {
        let mut table = Table::new(&[
            ("QUEUE", Align::Left),
            ("TYPE", Align::Left),
            ("READY", Align::Right),
            ("UNACKED", Align::Right),
            ("CONSUMERS", Align::Right),
            ("USE", Align::Left),
            ("ARGUMENTS", Align::Left),
        ]);
        for queue in &report.queues {
            table.row(vec![
                queue.name.clone(),
                queue.queue_type.clone().unwrap_or_else(|| "?".into()),
                queue.messages_ready.to_string(),
                queue
                    .messages_unacknowledged
                    .map_or_else(|| "?".to_owned(), |n| n.to_string()),
                queue.consumers.to_string(),
                queue
                    .usage
                    .map_or_else(|| "-".to_owned(), |usage| usage.text(queue.used_by)),
                arguments(&queue.arguments),
            ]);
        }
        text.push_str(&table.render("  "));
        if report
            .queues
            .iter()
            .any(|q| q.messages_unacknowledged.is_none())
        {
            text.push_str("  (? = no statistics from the broker yet)\n");
        }
    }

    text.push_str("\nLive consumers' retry delays\n");
    if report.consumers.is_empty() {
        text.push_str("  no live consumer: no wait queue is in use\n");
    }
    for consumer in &report.consumers {
        let delays = consumer.retry_delays.as_ref().map_or_else(
            || "not advertised (an older consumer?): no wait queue is called unused".to_owned(),
            |labels| labels.join(","),
        );
        text.push_str(&format!("  {}: {delays}\n", consumer.name));
    }
    match report.unused.len() {
        0 => text.push_str("\nNo unused empty wait queue.\n"),
        n => text.push_str(&format!(
            "\n{n} unused empty wait queue{}: `pokeq topology prune` deletes {}.\n",
            if n == 1 { "" } else { "s" },
            if n == 1 { "it" } else { "them" },
        )),
    }
    text
}

fn yes_no(value: bool) -> String {
    if value { "yes" } else { "no" }.to_owned()
}

/// Arguments as `key=value` pairs, strings without quotes.
fn arguments(arguments: &serde_json::Map<String, Value>) -> String {
    arguments
        .iter()
        .map(|(key, value)| match value {
            Value::String(text) => format!("{key}={text}"),
            other => format!("{key}={other}"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn now() -> u64 {
    pokeq_shared::job::unix_seconds()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_compare_by_duration() {
        assert!(same_delay("60s", "1m"));
        assert!(same_delay("1500ms", "1500ms"));
        assert!(!same_delay("1s", "5s"));
    }
}
