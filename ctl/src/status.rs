//! `pokeq status`: where the pipeline stands, from its two sources of truth.
//!
//! Item counts and the producer's progress come from Postgres; queue depths and consumer counts
//! from the RabbitMQ management API. Either source may be down while the other answers, and an
//! operator needs whatever is known at that moment most, so each part is collected on its own,
//! printed if it could be, and a missing part is named with the reason (exit 1 at the end, or 2
//! if the part is missing because a source refused a setting, such as a wrong password).
//!
//! Status only reads: it does not declare the topology, so a mistyped prefix shows queues that
//! are "not declared" instead of creating them.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Args;
use pokeq_shared::config::{Common, ConfigError, Misconfigured, parse_duration};
use pokeq_shared::exit;
use pokeq_shared::job::RESOURCE;
use pokeq_shared::shutdown::CancellationToken;
use pokeq_shared::store::Store;
use pokeq_shared::topology::{RetryDelays, Topology};
use serde::Serialize;
use tokio_postgres::error::SqlState;

use crate::Console;
use crate::management::{Management, ManagementArgs, ManagementConfig, QueueStats};
use crate::table::{Align, Table, age};

/// Longest wait for the database part of one report (connecting included).
const DATABASE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Print one JSON document (one per line with --watch) instead of tables.
    #[arg(long)]
    pub json: bool,

    /// Refresh until Ctrl-C.
    #[arg(long)]
    pub watch: bool,

    /// Time between refreshes with --watch (e.g. 500ms, 2s, 1m).
    #[arg(long, default_value = "2s", value_parser = parse_duration, requires = "watch")]
    pub interval: Duration,

    #[command(flatten)]
    pub management: ManagementArgs,
}

#[derive(Debug, Clone)]
pub struct StatusConfig {
    pub json: bool,
    /// Refresh interval; `None` prints once.
    pub watch: Option<Duration>,
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
        Ok(StatusConfig {
            json: self.json,
            watch: self.watch.then_some(self.interval),
            management: self.management.validate(&common.amqp_url)?,
        })
    }
}

/// Everything `status` knows at one moment; this is also the `--json` document.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub prefix: String,
    pub vhost: String,
    /// Unix time (seconds) the report was made.
    pub at: u64,
    pub items: Option<Items>,
    pub producer_run: Option<ProducerRun>,
    /// Consumers whose API circuit is open (`None`: unknown, the database part failed).
    pub api_circuit: Option<ApiCircuit>,
    pub database_error: Option<String>,
    pub queues: Option<Vec<QueueRow>>,
    pub queues_error: Option<String>,
    /// A setting a source refused: waiting will not bring that part back, so `status` ends
    /// with exit 2 after printing the report.
    #[serde(skip)]
    pub misconfigured: Option<Misconfigured>,
}

/// Why a part of the report is missing: the reason shown, and the refused setting if that is it.
struct Missing {
    reason: String,
    misconfigured: Option<Misconfigured>,
}

impl Missing {
    fn outage(reason: String) -> Self {
        Self {
            reason,
            misconfigured: None,
        }
    }
}

/// The consumers' view of the API: how many hold their jobs because it fails for everything.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ApiCircuit {
    /// Consumers with an open circuit (a live one refreshes its row every 10 s).
    pub open_consumers: i64,
    /// Which consumers, as `pokeq-consumer@<host>:<pid>`.
    pub processes: Vec<String>,
    /// When the first of them opened, ISO 8601 UTC.
    pub since: Option<String>,
    pub seconds_open: Option<u64>,
    /// The latest failure one of them saw.
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Items {
    pub pending: i64,
    pub queued: i64,
    pub done: i64,
    pub failed: i64,
    pub total: i64,
    /// Failed items by `error_kind` (`unknown` when none was recorded).
    pub failed_by_kind: BTreeMap<String, i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct QueueRow {
    pub name: String,
    /// `jobs`, `retry`, `dead` or `ledger`.
    pub role: &'static str,
    /// False when the broker has no such queue (jobs and dead are always listed).
    pub exists: bool,
    #[serde(rename = "type")]
    pub queue_type: Option<String>,
    pub messages_ready: Option<u64>,
    pub messages_unacknowledged: Option<u64>,
    pub consumers: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProducerRun {
    pub id: i64,
    pub state: String,
    pub total: Option<i64>,
    pub pages_planned: Option<i64>,
    pub pages_done: i64,
    pub listed: i64,
    pub published: i64,
    pub skipped: i64,
    pub error: Option<String>,
    pub started_at: String,
    pub updated_at: String,
    pub finished_at: Option<String>,
    /// Seconds since the run last reported progress: a `running` run that has not been heard of
    /// for long was probably killed.
    pub seconds_since_update: u64,
}

/// The sources one report reads; the store is opened on first use and kept, so `--watch`
/// reconnects after Postgres comes back without keeping a failed connection.
struct Sources<'a> {
    common: &'a Common,
    store: Option<Store>,
    management: Management,
}

pub async fn run(
    common: &Common,
    config: &StatusConfig,
    shutdown: &CancellationToken,
    console: &mut Console<'_>,
) -> anyhow::Result<()> {
    let mut sources = Sources {
        common,
        store: None,
        management: Management::new(config.management.clone())?,
    };
    let Some(interval) = config.watch else {
        let report = sources.collect().await;
        if config.json {
            serde_json::to_writer_pretty(&mut *console.out, &report)?;
            writeln!(console.out)?;
        } else {
            write!(console.out, "{}", render(&report, common))?;
        }
        if let Some(refused) = report.misconfigured {
            return Err(anyhow::Error::new(refused).context("status incomplete"));
        }
        return match (&report.database_error, &report.queues_error) {
            (None, None) => Ok(()),
            (Some(db), None) => anyhow::bail!("status incomplete: database unavailable: {db}"),
            (None, Some(q)) => anyhow::bail!("status incomplete: queue figures unavailable: {q}"),
            (Some(db), Some(q)) => anyhow::bail!(
                "status incomplete: database unavailable: {db}; queue figures unavailable: {q}"
            ),
        };
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
            return Err(anyhow::Error::new(refused).context("status stopped"));
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(interval) => {}
        }
    }
    Ok(())
}

impl Sources<'_> {
    async fn collect(&mut self) -> Report {
        let topology = Topology::new(
            &self.common.prefix,
            self.common.queue_type,
            RetryDelays::default(),
        );
        let common = self.common;
        let (database, queues) = tokio::join!(
            database_part(common, &mut self.store),
            queue_part(&self.management, &topology),
        );
        let mut misconfigured = None;
        let (items, producer_run, api_circuit, database_error) = match database {
            Ok((items, run, circuit)) => (Some(items), run, Some(circuit), None),
            Err(missing) => {
                misconfigured = missing.misconfigured;
                (None, None, None, Some(missing.reason))
            }
        };
        let (queues, queues_error) = match queues {
            Ok(queues) => (Some(queues), None),
            Err(missing) => {
                misconfigured = misconfigured.or(missing.misconfigured);
                (None, Some(missing.reason))
            }
        };
        Report {
            prefix: common.prefix.clone(),
            vhost: self.management.config().vhost.clone(),
            at: now(),
            items,
            producer_run,
            api_circuit,
            database_error,
            queues,
            queues_error,
            misconfigured,
        }
    }
}

async fn database_part(
    common: &Common,
    store: &mut Option<Store>,
) -> Result<(Items, Option<ProducerRun>, ApiCircuit), Missing> {
    let work = async {
        if store.is_none() {
            *store = Some(crate::open_store(common).await?);
        }
        let Some(open) = store.as_ref() else {
            anyhow::bail!("no store");
        };
        let counts = open.status_counts().await?;
        let client = open.pool().get().await?;
        let failed_by_kind = client
            .query(
                "select coalesce(error_kind, 'unknown'), count(*) from ingest_items
                 where resource = $1 and status = 'failed' group by 1",
                &[&RESOURCE],
            )
            .await?
            .iter()
            .map(|row| (row.get::<_, String>(0), row.get::<_, i64>(1)))
            .collect();
        let run = producer_run(&client).await?;
        let circuit = api_circuit(&client).await?;
        let items = Items {
            total: counts.pending + counts.queued + counts.done + counts.failed,
            pending: counts.pending,
            queued: counts.queued,
            done: counts.done,
            failed: counts.failed,
            failed_by_kind,
        };
        Ok((items, run, circuit))
    };
    match tokio::time::timeout(DATABASE_TIMEOUT, work).await {
        Ok(Ok(part)) => Ok(part),
        Ok(Err(error)) => {
            // A pool whose database went away is rebuilt on the next refresh.
            *store = None;
            Err(Missing {
                misconfigured: exit::misconfiguration(&error).cloned(),
                reason: format!("{error:#}"),
            })
        }
        Err(_) => {
            *store = None;
            Err(Missing::outage(format!(
                "no answer from Postgres within {DATABASE_TIMEOUT:?}"
            )))
        }
    }
}

/// The last producer run, or `None` when none was recorded (or the schema predates the table).
async fn producer_run(client: &tokio_postgres::Client) -> anyhow::Result<Option<ProducerRun>> {
    const ISO: &str = r#"'YYYY-MM-DD"T"HH24:MI:SS"Z"'"#;
    let sql = format!(
        "select id, state, total, pages_planned, pages_done, listed, published, skipped, error,
                to_char(started_at at time zone 'UTC', {ISO}),
                to_char(updated_at at time zone 'UTC', {ISO}),
                to_char(finished_at at time zone 'UTC', {ISO}),
                greatest(extract(epoch from now() - updated_at), 0)::float8
         from producer_runs order by id desc limit 1"
    );
    let row = match client.query_opt(&sql, &[]).await {
        Ok(row) => row,
        Err(error) if error.code() == Some(&SqlState::UNDEFINED_TABLE) => return Ok(None),
        Err(error) => return Err(error).context("reading the last producer run"),
    };
    Ok(row.map(|row| ProducerRun {
        id: row.get(0),
        state: row.get(1),
        total: row.get(2),
        pages_planned: row.get(3),
        pages_done: row.get(4),
        listed: row.get(5),
        published: row.get(6),
        skipped: row.get(7),
        error: row.get(8),
        started_at: row.get(9),
        updated_at: row.get(10),
        finished_at: row.get(11),
        seconds_since_update: row.get::<_, f64>(12) as u64,
    }))
}

/// Consumers whose API circuit is open now (rows older than three refreshes belong to
/// processes that are gone). An empty answer on a schema that predates the table.
async fn api_circuit(client: &tokio_postgres::Client) -> anyhow::Result<ApiCircuit> {
    const ISO: &str = r#"'YYYY-MM-DD"T"HH24:MI:SS"Z"'"#;
    let sql = format!(
        "select process, to_char(since at time zone 'UTC', {ISO}),
                greatest(extract(epoch from now() - since), 0)::float8, error
         from api_circuit where updated_at > now() - interval '30 seconds'
         order by since, updated_at desc"
    );
    let rows = match client.query(&sql, &[]).await {
        Ok(rows) => rows,
        Err(error) if error.code() == Some(&SqlState::UNDEFINED_TABLE) => {
            return Ok(ApiCircuit::default());
        }
        Err(error) => return Err(error).context("reading the API circuit"),
    };
    Ok(ApiCircuit {
        open_consumers: rows.len() as i64,
        processes: rows.iter().map(|row| row.get(0)).collect(),
        since: rows.first().map(|row| row.get(1)),
        seconds_open: rows.first().map(|row| row.get::<_, f64>(2) as u64),
        last_error: rows.first().map(|row| row.get(3)),
    })
}

async fn queue_part(
    management: &Management,
    topology: &Topology,
) -> Result<Vec<QueueRow>, Missing> {
    let found = management
        .queues(&topology.prefix)
        .await
        .map_err(|e| Missing {
            misconfigured: e.misconfiguration(management.config()),
            reason: e.to_string(),
        })?;
    Ok(queue_rows(topology, found))
}

/// The jobs queue, the retry wait queues shortest delay first, the dead queue, then the
/// dead-letter ledger if there is one (consumers empty it; letters piling up there mean none
/// reads it). Jobs and dead are always listed, marked missing if the broker has no such queue.
fn queue_rows(topology: &Topology, found: Vec<QueueStats>) -> Vec<QueueRow> {
    let retry_prefix = format!("{}.", topology.retry());
    let row = |role: &'static str, stats: QueueStats| QueueRow {
        name: stats.name,
        role,
        exists: true,
        queue_type: stats.queue_type,
        messages_ready: stats.messages_ready,
        messages_unacknowledged: stats.messages_unacknowledged,
        consumers: stats.consumers,
    };
    let missing = |role: &'static str, name: String| QueueRow {
        name,
        role,
        exists: false,
        queue_type: None,
        messages_ready: None,
        messages_unacknowledged: None,
        consumers: None,
    };
    let mut jobs = None;
    let mut dead = None;
    let mut ledger = None;
    let mut retries = Vec::new();
    for stats in found {
        if stats.name == topology.jobs() {
            jobs = Some(row("jobs", stats));
        } else if stats.name == topology.dead() {
            dead = Some(row("dead", stats));
        } else if stats.name == topology.ledger() {
            ledger = Some(row("ledger", stats));
        } else if let Some(label) = stats.name.strip_prefix(&retry_prefix) {
            let order = parse_duration(label).unwrap_or(Duration::MAX);
            retries.push((order, row("retry", stats)));
        }
    }
    retries.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.name.cmp(&b.1.name)));
    let mut rows = vec![jobs.unwrap_or_else(|| missing("jobs", topology.jobs()))];
    rows.extend(retries.into_iter().map(|(_, row)| row));
    rows.push(dead.unwrap_or_else(|| missing("dead", topology.dead())));
    rows.extend(ledger);
    rows
}

/// The report as people read it.
pub fn render(report: &Report, common: &Common) -> String {
    let mut text = format!(
        "pokeq status: prefix {}, vhost {}, database {}\n\n",
        report.prefix,
        report.vhost,
        common.database.get_dbname().unwrap_or("?")
    );

    text.push_str(&format!("Items ({RESOURCE})\n"));
    match (&report.items, &report.database_error) {
        (Some(items), _) => {
            let mut table = Table::new(&[
                ("STATUS", Align::Left),
                ("ITEMS", Align::Right),
                ("", Align::Left),
            ]);
            let kinds = items
                .failed_by_kind
                .iter()
                .map(|(kind, n)| format!("{kind} {n}"))
                .collect::<Vec<_>>()
                .join(", ");
            for (status, n, detail) in [
                ("pending", items.pending, String::new()),
                ("queued", items.queued, String::new()),
                ("done", items.done, String::new()),
                ("failed", items.failed, kinds),
                ("total", items.total, String::new()),
            ] {
                table.row(vec![status.to_owned(), n.to_string(), detail]);
            }
            text.push_str(&table.render("  "));
        }
        (None, error) => text.push_str(&format!(
            "  unavailable: {}\n",
            error.as_deref().unwrap_or("unknown error")
        )),
    }

    if let Some(circuit) = &report.api_circuit {
        text.push_str(&render_circuit(circuit));
    }

    text.push_str("\nQueues\n");
    match (&report.queues, &report.queues_error) {
        (Some(queues), _) => {
            let mut table = Table::new(&[
                ("QUEUE", Align::Left),
                ("TYPE", Align::Left),
                ("READY", Align::Right),
                ("UNACKED", Align::Right),
                ("CONSUMERS", Align::Right),
            ]);
            let figure = |n: Option<u64>| n.map_or_else(|| "?".to_owned(), |n| n.to_string());
            for queue in queues {
                if queue.exists {
                    table.row(vec![
                        queue.name.clone(),
                        queue.queue_type.clone().unwrap_or_else(|| "?".into()),
                        figure(queue.messages_ready),
                        figure(queue.messages_unacknowledged),
                        figure(queue.consumers),
                    ]);
                } else {
                    table.row(vec![
                        queue.name.clone(),
                        "not declared".into(),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                    ]);
                }
            }
            text.push_str(&table.render("  "));
            if queues
                .iter()
                .any(|q| q.exists && q.messages_ready.is_none())
            {
                text.push_str("  (? = no statistics from the broker yet)\n");
            }
        }
        (None, error) => text.push_str(&format!(
            "  queue figures unavailable: {}\n",
            error.as_deref().unwrap_or("unknown error")
        )),
    }

    text.push_str("\nLast producer run\n");
    match (&report.producer_run, &report.database_error) {
        (Some(run), _) => {
            let planned = run
                .pages_planned
                .map_or_else(|| "?".to_owned(), |n| n.to_string());
            let total = run
                .total
                .map_or_else(String::new, |n| format!(" of {n} in the API"));
            text.push_str(&format!(
                "  #{} {}: pages {}/{}, listed {}, published {}, skipped {}{}\n",
                run.id,
                run.state,
                run.pages_done,
                planned,
                run.listed,
                run.published,
                run.skipped,
                total
            ));
            text.push_str(&format!(
                "  started {}, last update {} ({} ago)",
                run.started_at,
                run.updated_at,
                age(run.seconds_since_update)
            ));
            if let Some(finished) = &run.finished_at {
                text.push_str(&format!(", finished {finished}"));
            }
            text.push('\n');
            if let Some(error) = &run.error {
                text.push_str(&format!("  error: {error}\n"));
            }
        }
        (None, None) => text.push_str("  none recorded\n"),
        (None, Some(_)) => text.push_str("  unavailable (database)\n"),
    }
    text
}

fn render_circuit(circuit: &ApiCircuit) -> String {
    if circuit.open_consumers == 0 {
        return "\nAPI circuit: closed (the API answers)\n".to_owned();
    }
    let mut text = format!(
        "\nAPI circuit: OPEN in {} consumer{} since {} ({}): jobs wait, probing once a second\n",
        circuit.open_consumers,
        if circuit.open_consumers == 1 { "" } else { "s" },
        circuit.since.as_deref().unwrap_or("?"),
        age(circuit.seconds_open.unwrap_or(0)),
    );
    if let Some(error) = &circuit.last_error {
        text.push_str(&format!("  last failure: {error}\n"));
    }
    text
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pokeq_shared::config::QueueType;

    fn stats(name: &str, ready: u64) -> QueueStats {
        QueueStats {
            name: name.into(),
            queue_type: Some("classic".into()),
            messages_ready: Some(ready),
            messages_unacknowledged: Some(0),
            consumers: Some(0),
        }
    }

    #[test]
    fn queues_are_ordered_jobs_retries_by_delay_dead() {
        let topology = Topology::new("p", QueueType::Quorum, RetryDelays::default());
        let rows = queue_rows(
            &topology,
            vec![
                stats("p.dead", 4),
                stats("p.dead.ledger", 0),
                stats("p.retry.10m", 0),
                stats("p.retry.5s", 1),
                stats("p.retry.30s", 2),
            ],
        );
        let names: Vec<_> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "p.jobs",
                "p.retry.5s",
                "p.retry.30s",
                "p.retry.10m",
                "p.dead",
                "p.dead.ledger"
            ]
        );
        assert!(!rows[0].exists, "jobs was not in the answer");
        assert_eq!(rows[4].messages_ready, Some(4));
    }
}
