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

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use pokeq_shared::config::{Common, ConfigError, Misconfigured, parse_duration};
use pokeq_shared::exit;
use pokeq_shared::job::RESOURCE;
use pokeq_shared::shutdown::CancellationToken;
use pokeq_shared::store::{StatusCounts, Store};
use pokeq_shared::topology::{RetryDelays, Topology};
use serde::Serialize;
use tokio_postgres::error::SqlState;

use crate::Console;
use crate::management::{Management, ManagementArgs, ManagementConfig, QueueStats};
use crate::probe::{Counts, ProbeError, QueueProbe};
use crate::table::{Align, Table, age};

/// Longest wait for the database part of one report (connecting included).
pub(crate) const DATABASE_TIMEOUT: Duration = Duration::from_secs(10);
/// How old a management API figure can be with RabbitMQ's default
/// `collect_statistics_interval` of 5 s: a queue reports its figures every interval, and the
/// management database collects them every interval. (The timestamps of the API's samples are
/// aligned to the request, not to the collection, so they cannot tell a figure's real age.)
pub const MANAGEMENT_MAX_AGE: Duration = Duration::from_secs(10);
/// The window throughput is measured over.
const THROUGHPUT_WINDOW: Duration = Duration::from_secs(60);
/// Producer runs shown, latest first.
const PRODUCER_RUNS: i64 = 5;

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

/// Everything `status` knows at one moment; this is also the `--json` document.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub prefix: String,
    pub vhost: String,
    /// Unix time (seconds) the report was made.
    pub at: u64,
    pub items: Option<Items>,
    /// Items finished over the last minute, and when the rest will be at that pace.
    pub throughput: Option<Throughput>,
    /// The latest producer run (the first of `producer_runs`).
    pub producer_run: Option<ProducerRun>,
    /// The last few producer runs, latest first.
    pub producer_runs: Vec<ProducerRun>,
    /// Consumers whose API circuit is open (`None`: unknown, the database part failed).
    pub api_circuit: Option<ApiCircuit>,
    pub database_error: Option<String>,
    /// The queues, from whichever of AMQP and the management API answered (`None`: neither).
    pub queues: Option<Vec<QueueRow>>,
    /// Why the management API's figures are missing (unacknowledged counts, retry queues).
    pub queues_error: Option<String>,
    /// Why the exact AMQP counts are missing (ready and consumers then come from the management
    /// API's sample).
    pub broker_error: Option<String>,
    /// How old a management API figure can be (see [`MANAGEMENT_MAX_AGE`]).
    pub management_max_age_seconds: u64,
    /// A setting a source refused: waiting will not bring that part back, so `status` ends
    /// with exit 2 after printing the report.
    #[serde(skip)]
    pub misconfigured: Option<Misconfigured>,
}

/// Why a part of the report is missing: the reason shown, and the refused setting if that is it.
#[derive(Debug, Clone)]
pub(crate) struct Missing {
    pub reason: String,
    pub misconfigured: Option<Misconfigured>,
}

impl Missing {
    pub fn outage(reason: String) -> Self {
        Self {
            reason,
            misconfigured: None,
        }
    }

    /// From an error whose chain may hold a refused setting.
    pub fn of(error: &anyhow::Error) -> Self {
        Self {
            reason: format!("{error:#}"),
            misconfigured: exit::misconfiguration(error).cloned(),
        }
    }
}

/// Items that reached `done` or `failed` over the last minute (by `ingest_items.updated_at`,
/// which the consumer sets in the statement that finishes the item), and the time the items
/// still `pending` or `queued` would take at that pace. Failed items count too: they leave the
/// work left just as done ones do.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Throughput {
    /// Seconds the rate is measured over: the last minute, or less if the first item of that
    /// minute finished later (a run that started 10 s ago is measured over those 10 s).
    pub window_seconds: f64,
    pub done: i64,
    pub failed: i64,
    /// Items finished per second over the window.
    pub per_second: f64,
    /// Seconds since the latest item finished (`None`: none in the last minute).
    pub last_finished_seconds_ago: Option<f64>,
    /// Items `pending` or `queued`.
    pub remaining: i64,
    /// `remaining / per_second`, rounded up; `None` when nothing remains or nothing finished.
    pub eta_seconds: Option<u64>,
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
    /// Ready messages: exact and current when `counts_source` is `amqp`.
    pub messages_ready: Option<u64>,
    /// A management API sample (AMQP cannot count them), up to `management_max_age_seconds`
    /// old.
    pub messages_unacknowledged: Option<u64>,
    /// Consumers: exact and current when `counts_source` is `amqp`.
    pub consumers: Option<u64>,
    /// `amqp` (a passive declare, now) or `management` (its sample, when AMQP failed).
    pub counts_source: Option<&'static str>,
    /// The management API's own ready figure: where it differs from the exact one, its sample
    /// is behind.
    pub management_messages_ready: Option<u64>,
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

/// The sources one report reads; the store and the AMQP connection are opened on first use and
/// kept, so `--watch` reconnects after a service comes back without keeping a failed
/// connection.
struct Sources<'a> {
    common: &'a Common,
    store: Option<Store>,
    probe: Option<QueueProbe>,
    management: Management,
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

impl Sources<'_> {
    async fn collect(&mut self) -> Report {
        let topology = Topology::new(
            &self.common.prefix,
            self.common.queue_type,
            RetryDelays::default(),
        );
        let common = self.common;
        let (database, (queues, queues_error, broker_error)) = tokio::join!(
            database_part(common, &mut self.store),
            queue_part(common, &self.management, &mut self.probe, &topology),
        );
        let (items, throughput, producer_runs, api_circuit, database_error) = match database {
            Ok(part) => (
                Some(part.items),
                Some(part.throughput),
                part.producer_runs,
                Some(part.api_circuit),
                None,
            ),
            Err(missing) => (None, None, Vec::new(), None, Some(missing)),
        };
        let misconfigured = [&database_error, &queues_error, &broker_error]
            .into_iter()
            .find_map(|missing| missing.as_ref()?.misconfigured.clone());
        let reason = |missing: Option<Missing>| missing.map(|m| m.reason);
        Report {
            prefix: common.prefix.clone(),
            vhost: self.management.config().vhost.clone(),
            at: now(),
            items,
            throughput,
            producer_run: producer_runs.first().cloned(),
            producer_runs,
            api_circuit,
            database_error: reason(database_error),
            queues,
            queues_error: reason(queues_error),
            broker_error: reason(broker_error),
            management_max_age_seconds: MANAGEMENT_MAX_AGE.as_secs(),
            misconfigured,
        }
    }

    async fn close(&mut self) {
        if let Some(probe) = self.probe.take() {
            probe.close().await;
        }
    }
}

/// What Postgres tells about the run.
struct DatabasePart {
    items: Items,
    throughput: Throughput,
    producer_runs: Vec<ProducerRun>,
    api_circuit: ApiCircuit,
}

async fn database_part(
    common: &Common,
    store: &mut Option<Store>,
) -> Result<DatabasePart, Missing> {
    with_store(common, store, async |client| {
        let (items, throughput) = items_and_throughput(client).await?;
        Ok(DatabasePart {
            items,
            throughput,
            producer_runs: producer_runs(client).await?,
            api_circuit: api_circuit(client).await?,
        })
    })
    .await
}

/// Runs `work` on a client of `store`, opening the store first if needed, within
/// [`DATABASE_TIMEOUT`]. A store whose database failed is dropped, to be rebuilt on the next
/// call, so a command that refreshes reconnects once Postgres is back.
pub(crate) async fn with_store<T>(
    common: &Common,
    store: &mut Option<Store>,
    work: impl AsyncFnOnce(&tokio_postgres::Client) -> anyhow::Result<T>,
) -> Result<T, Missing> {
    let attempt = async {
        if store.is_none() {
            *store = Some(crate::open_store(common).await?);
        }
        let Some(open) = store.as_ref() else {
            anyhow::bail!("no store");
        };
        let client = open.pool().get().await?;
        work(&client).await
    };
    match tokio::time::timeout(DATABASE_TIMEOUT, attempt).await {
        Ok(Ok(part)) => Ok(part),
        Ok(Err(error)) => {
            *store = None;
            Err(Missing::of(&error))
        }
        Err(_) => {
            *store = None;
            Err(Missing::outage(format!(
                "no answer from Postgres within {DATABASE_TIMEOUT:?}"
            )))
        }
    }
}

/// Item counts by status (failed ones by kind) and the throughput of the last minute.
pub(crate) async fn items_and_throughput(
    client: &tokio_postgres::Client,
) -> anyhow::Result<(Items, Throughput)> {
    let counts = StatusCounts::from_rows(
        &client
            .query(
                "select status, count(*) from ingest_items where resource = $1 group by status",
                &[&RESOURCE],
            )
            .await
            .context("counting items")?,
    );
    let failed_by_kind = client
        .query(
            "select coalesce(error_kind, 'unknown'), count(*) from ingest_items
             where resource = $1 and status = 'failed' group by 1",
            &[&RESOURCE],
        )
        .await
        .context("counting failed items")?
        .iter()
        .map(|row| (row.get::<_, String>(0), row.get::<_, i64>(1)))
        .collect();
    let items = Items {
        total: counts.pending + counts.queued + counts.done + counts.failed,
        pending: counts.pending,
        queued: counts.queued,
        done: counts.done,
        failed: counts.failed,
        failed_by_kind,
    };
    let window = THROUGHPUT_WINDOW.as_secs_f64();
    let row = client
        .query_one(
            "select count(*) filter (where status = 'done'),
                    count(*) filter (where status = 'failed'),
                    greatest(extract(epoch from now() - min(updated_at)), 0)::float8,
                    greatest(extract(epoch from now() - max(updated_at)), 0)::float8
             from ingest_items
             where resource = $1 and status in ('done', 'failed')
               and updated_at > now() - make_interval(secs => $2)",
            &[&RESOURCE, &window],
        )
        .await
        .context("measuring throughput")?;
    let throughput = Throughput::new(
        row.get(0),
        row.get(1),
        row.get(2),
        row.get(3),
        items.pending + items.queued,
    );
    Ok((items, throughput))
}

impl Throughput {
    /// From the items finished within the window (`done`, `failed`), the age of the oldest and
    /// the newest of them (`None` when there are none), and the items left.
    pub fn new(
        done: i64,
        failed: i64,
        oldest: Option<f64>,
        newest: Option<f64>,
        remaining: i64,
    ) -> Self {
        let finished = done + failed;
        let full = THROUGHPUT_WINDOW.as_secs_f64();
        // At least a second: a handful of items finished in the same instant is no measure of
        // an infinite rate.
        let window_seconds = oldest.map_or(full, |age| age.clamp(1.0, full));
        let per_second = if finished > 0 {
            finished as f64 / window_seconds
        } else {
            0.0
        };
        // remaining / per_second, without the rounding error of the division.
        let eta_seconds = (remaining > 0 && finished > 0)
            .then(|| (remaining as f64 * window_seconds / finished as f64).ceil() as u64);
        Self {
            window_seconds,
            done,
            failed,
            per_second,
            last_finished_seconds_ago: newest,
            remaining,
            eta_seconds,
        }
    }

    /// One line for people: the rate and, while work remains, the ETA.
    pub fn describe(&self) -> String {
        if self.done + self.failed == 0 {
            return if self.remaining > 0 {
                format!(
                    "nothing finished in the last minute; {} remaining, no ETA",
                    self.remaining
                )
            } else {
                "nothing finished in the last minute".to_owned()
            };
        }
        let mut text = format!(
            "{}/s over the last {} ({} done, {} failed)",
            rate(self.per_second),
            age(self.window_seconds.round() as u64),
            self.done,
            self.failed
        );
        if let Some(eta) = self.eta_seconds {
            text.push_str(&format!(
                "; ETA {} for {} remaining",
                age(eta),
                self.remaining
            ));
        }
        if let Some(ago) = self.last_finished_seconds_ago.filter(|ago| *ago >= 10.0) {
            text.push_str(&format!(
                "; latest finished {} ago",
                age(ago.round() as u64)
            ));
        }
        text
    }
}

/// A rate for people: one decimal below 10/s, whole numbers above.
fn rate(per_second: f64) -> String {
    if per_second < 10.0 {
        format!("{per_second:.1}")
    } else {
        format!("{per_second:.0}")
    }
}

/// The last few producer runs, latest first; none when none was recorded (or the schema
/// predates the table).
async fn producer_runs(client: &tokio_postgres::Client) -> anyhow::Result<Vec<ProducerRun>> {
    const ISO: &str = r#"'YYYY-MM-DD"T"HH24:MI:SS"Z"'"#;
    let sql = format!(
        "select id, state, total, pages_planned, pages_done, listed, published, skipped, error,
                to_char(started_at at time zone 'UTC', {ISO}),
                to_char(updated_at at time zone 'UTC', {ISO}),
                to_char(finished_at at time zone 'UTC', {ISO}),
                greatest(extract(epoch from now() - updated_at), 0)::float8
         from producer_runs order by id desc limit {PRODUCER_RUNS}"
    );
    let rows = match client.query(&sql, &[]).await {
        Ok(rows) => rows,
        Err(error) if error.code() == Some(&SqlState::UNDEFINED_TABLE) => return Ok(Vec::new()),
        Err(error) => return Err(error).context("reading the producer runs"),
    };
    Ok(rows
        .iter()
        .map(|row| ProducerRun {
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
        })
        .collect())
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

/// The queues, the management API's errors and the broker's. The management API is asked
/// first, for what only it knows (which queues exist, which retry queues there are, types,
/// unacknowledged counts; its list of queues is current, only its figures are samples); then
/// the queues it listed are counted over AMQP. When it fails, the jobs and dead queues are
/// counted over AMQP all the same.
async fn queue_part(
    common: &Common,
    management: &Management,
    probe: &mut Option<QueueProbe>,
    topology: &Topology,
) -> (Option<Vec<QueueRow>>, Option<Missing>, Option<Missing>) {
    let (found, queues_error) = match management.queues(&topology.prefix).await {
        Ok(found) => (Some(found), None),
        Err(error) => (
            None,
            Some(Missing {
                misconfigured: error.misconfiguration(management.config()),
                reason: error.to_string(),
            }),
        ),
    };
    let names = queue_names(topology, found.as_deref().unwrap_or_default());
    // A queue the management API does not list does not exist: asking the broker about it would
    // only earn a 404 (which lapin logs as an error).
    let listed: Vec<&str> = names
        .iter()
        .map(|(_, name)| name.as_str())
        .filter(|name| {
            found
                .as_ref()
                .is_none_or(|found| found.iter().any(|stats| stats.name == *name))
        })
        .collect();
    let (exact, broker_error) = match count_all(common, probe, &listed).await {
        Ok(mut exact) => {
            for (_, name) in &names {
                exact.entry(name.clone()).or_insert(None);
            }
            (Some(exact), None)
        }
        Err(error) => {
            // Reconnect on the next refresh.
            if let Some(failed) = probe.take() {
                failed.close().await;
            }
            (None, Some(error))
        }
    };
    if found.is_none() && exact.is_none() {
        return (None, queues_error, broker_error);
    }
    let rows = queue_rows(&names, found.as_deref(), exact.as_ref());
    (Some(rows), queues_error, broker_error)
}

/// Exact counts of each queue, `None` for a queue the broker does not have. Connects only if
/// there is something to count.
async fn count_all(
    common: &Common,
    probe: &mut Option<QueueProbe>,
    names: &[&str],
) -> Result<HashMap<String, Option<Counts>>, Missing> {
    let mut exact = HashMap::new();
    if names.is_empty() {
        return Ok(exact);
    }
    if probe.as_ref().is_some_and(|p| !p.connected()) {
        *probe = None;
    }
    if probe.is_none() {
        *probe = Some(
            QueueProbe::open(common)
                .await
                .map_err(ProbeError::missing)?,
        );
    }
    let Some(open) = probe.as_mut() else {
        return Err(Missing::outage("no connection".to_owned()));
    };
    for name in names {
        let counts = open.counts(name).await.map_err(ProbeError::missing)?;
        exact.insert((*name).to_owned(), counts);
    }
    Ok(exact)
}

/// The jobs queue, the retry wait queues the management API found, shortest delay first, the
/// dead queue, then the dead-letter ledger if there is one (consumers empty it; letters piling
/// up there mean none reads it), each with its role. Jobs and dead are always listed.
fn queue_names(topology: &Topology, found: &[QueueStats]) -> Vec<(&'static str, String)> {
    let retry_prefix = format!("{}.", topology.retry());
    let mut retries: Vec<(Duration, String)> = found
        .iter()
        .filter_map(|stats| {
            let label = stats.name.strip_prefix(&retry_prefix)?;
            Some((
                parse_duration(label).unwrap_or(Duration::MAX),
                stats.name.clone(),
            ))
        })
        .collect();
    retries.sort();
    let mut names = vec![("jobs", topology.jobs())];
    names.extend(retries.into_iter().map(|(_, name)| ("retry", name)));
    names.push(("dead", topology.dead()));
    if found.iter().any(|stats| stats.name == topology.ledger()) {
        names.push(("ledger", topology.ledger()));
    }
    names
}

/// One row per name, the exact counts (when AMQP answered) over the management API's sample.
fn queue_rows(
    names: &[(&'static str, String)],
    found: Option<&[QueueStats]>,
    exact: Option<&HashMap<String, Option<Counts>>>,
) -> Vec<QueueRow> {
    names
        .iter()
        .map(|(role, name)| {
            let stats = found.and_then(|found| found.iter().find(|s| &s.name == name));
            let counts = exact.map(|exact| exact.get(name).copied().flatten());
            let exists = match counts {
                Some(counts) => counts.is_some(),
                None => stats.is_some(),
            };
            let (messages_ready, consumers, counts_source) = match (counts, stats) {
                (Some(Some(counts)), _) => (
                    Some(u64::from(counts.ready)),
                    Some(u64::from(counts.consumers)),
                    Some("amqp"),
                ),
                (None, Some(stats)) => (stats.messages_ready, stats.consumers, Some("management")),
                _ => (None, None, None),
            };
            QueueRow {
                name: name.clone(),
                role,
                exists,
                queue_type: stats.and_then(|s| s.queue_type.clone()),
                messages_ready,
                messages_unacknowledged: stats
                    .filter(|_| exists)
                    .and_then(|s| s.messages_unacknowledged),
                consumers,
                counts_source,
                management_messages_ready: stats.filter(|_| exists).and_then(|s| s.messages_ready),
            }
        })
        .collect()
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
    if let Some(throughput) = &report.throughput {
        text.push_str(&format!("\nThroughput: {}\n", throughput.describe()));
    }

    if let Some(circuit) = &report.api_circuit {
        text.push_str(&render_circuit(circuit));
    }

    text.push_str("\nQueues\n");
    match &report.queues {
        Some(queues) => text.push_str(&render_queues(report, queues)),
        None => text.push_str(&format!(
            "  queue figures unavailable: {}\n  counts over AMQP unavailable: {}\n",
            report.queues_error.as_deref().unwrap_or("unknown error"),
            report.broker_error.as_deref().unwrap_or("unknown error"),
        )),
    }

    text.push_str("\nProducer runs (latest first)\n");
    if report.producer_runs.is_empty() {
        match &report.database_error {
            None => text.push_str("  none recorded\n"),
            Some(_) => text.push_str("  unavailable (database)\n"),
        }
    }
    for run in &report.producer_runs {
        text.push_str(&render_run(run));
    }
    text
}

fn render_queues(report: &Report, queues: &[QueueRow]) -> String {
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
    let mut text = table.render("  ");
    let max_age = age(report.management_max_age_seconds);
    match (&report.broker_error, &report.queues_error) {
        (None, None) => text.push_str(&format!(
            "  READY and CONSUMERS are exact, counted now; UNACKED is the management API's \
             sample, up to ~{max_age} old\n"
        )),
        (None, Some(error)) => text.push_str(&format!(
            "  READY and CONSUMERS are exact, counted now; management API: queue figures \
             unavailable (UNACKED, retry queues): {error}\n"
        )),
        (Some(error), _) => text.push_str(&format!(
            "  counts over AMQP unavailable ({error}): every figure is the management API's \
             sample, up to ~{max_age} old\n"
        )),
    }
    let behind: Vec<String> = queues
        .iter()
        .filter(|q| q.counts_source == Some("amqp"))
        .filter_map(|q| match (q.management_messages_ready, q.messages_ready) {
            (Some(sampled), Some(exact)) if sampled != exact => {
                Some(format!("{} ready in {}", sampled, q.name))
            }
            _ => None,
        })
        .collect();
    if !behind.is_empty() {
        text.push_str(&format!(
            "  the management API is behind: it still shows {}\n",
            behind.join(", ")
        ));
    }
    if queues
        .iter()
        .any(|q| q.exists && q.messages_unacknowledged.is_none() && report.queues_error.is_none())
    {
        text.push_str("  (? = no statistics from the broker yet)\n");
    }
    text
}

fn render_run(run: &ProducerRun) -> String {
    let planned = run
        .pages_planned
        .map_or_else(|| "?".to_owned(), |n| n.to_string());
    let total = run
        .total
        .map_or_else(String::new, |n| format!(" of {n} in the API"));
    let mut text = format!(
        "  #{} {}: pages {}/{}, listed {}, published {}, skipped {}{}\n",
        run.id, run.state, run.pages_done, planned, run.listed, run.published, run.skipped, total
    );
    text.push_str(&format!(
        "     started {}, last update {} ({} ago)",
        run.started_at,
        run.updated_at,
        age(run.seconds_since_update)
    ));
    if let Some(finished) = &run.finished_at {
        text.push_str(&format!(", finished {finished}"));
    }
    text.push('\n');
    if let Some(error) = &run.error {
        text.push_str(&format!("     error: {error}\n"));
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
    pokeq_shared::job::unix_seconds()
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

    fn found() -> Vec<QueueStats> {
        vec![
            stats("p.dead", 4),
            stats("p.dead.ledger", 0),
            stats("p.retry.10m", 0),
            stats("p.retry.5s", 1),
            stats("p.retry.30s", 2),
        ]
    }

    #[test]
    fn queues_are_ordered_jobs_retries_by_delay_dead() {
        let topology = Topology::new("p", QueueType::Quorum, RetryDelays::default());
        let found = found();
        let names = queue_names(&topology, &found);
        let rows = queue_rows(&names, Some(&found), None);
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
        assert_eq!(rows[4].counts_source, Some("management"));
    }

    #[test]
    fn exact_counts_win_over_the_management_sample() {
        let topology = Topology::new("p", QueueType::Quorum, RetryDelays::default());
        let found = found();
        let names = queue_names(&topology, &found);
        let mut exact = HashMap::new();
        exact.insert("p.jobs".to_owned(), None);
        exact.insert(
            "p.dead".to_owned(),
            Some(Counts {
                ready: 0,
                consumers: 1,
            }),
        );
        let rows = queue_rows(&names, Some(&found), Some(&exact));
        let dead = rows.iter().find(|r| r.name == "p.dead").expect("dead row");
        assert_eq!(dead.messages_ready, Some(0));
        assert_eq!(dead.consumers, Some(1));
        assert_eq!(dead.management_messages_ready, Some(4));
        assert_eq!(dead.counts_source, Some("amqp"));
        // A queue the management API listed but AMQP did not find is gone, whatever the
        // sample says.
        let retry = rows.iter().find(|r| r.name == "p.retry.5s").expect("row");
        assert!(!retry.exists);
        assert_eq!(retry.messages_ready, None);
        assert!(!rows[0].exists);
    }

    fn report(queues: Vec<QueueRow>, broker_error: Option<&str>) -> Report {
        Report {
            prefix: "p".into(),
            vhost: "/".into(),
            at: 0,
            items: None,
            throughput: None,
            producer_run: None,
            producer_runs: Vec::new(),
            api_circuit: None,
            database_error: None,
            queues: Some(queues),
            queues_error: None,
            broker_error: broker_error.map(str::to_owned),
            management_max_age_seconds: 10,
            misconfigured: None,
        }
    }

    #[test]
    fn the_table_says_which_figures_are_exact_and_when_the_sample_is_behind() {
        let topology = Topology::new("p", QueueType::Quorum, RetryDelays::default());
        let mut found = found();
        found.push(QueueStats {
            messages_ready: Some(636),
            messages_unacknowledged: Some(128),
            ..stats("p.jobs", 0)
        });
        let names = queue_names(&topology, &found);
        let exact: HashMap<String, Option<Counts>> = names
            .iter()
            .map(|(_, name)| {
                let ready = found
                    .iter()
                    .find(|s| &s.name == name)
                    .and_then(|s| s.messages_ready)
                    .unwrap_or(0);
                let ready = if name == "p.jobs" { 0 } else { ready as u32 };
                (
                    name.clone(),
                    Some(Counts {
                        ready,
                        consumers: 2,
                    }),
                )
            })
            .collect();
        let rows = queue_rows(&names, Some(&found), Some(&exact));
        let text = render_queues(&report(rows.clone(), None), &rows);
        assert!(
            text.contains("  p.jobs         classic      0      128          2\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "READY and CONSUMERS are exact, counted now; UNACKED is the management API's \
                 sample, up to ~10s old\n"
            ),
            "{text}"
        );
        assert!(
            text.ends_with("the management API is behind: it still shows 636 ready in p.jobs\n"),
            "{text}"
        );

        let sampled = queue_rows(&names, Some(&found), None);
        let text = render_queues(
            &report(sampled.clone(), Some("connection refused")),
            &sampled,
        );
        assert!(
            text.contains("  p.jobs         classic    636      128          0\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "counts over AMQP unavailable (connection refused): every figure is the \
                 management API's sample, up to ~10s old"
            ),
            "{text}"
        );
        assert!(!text.contains("behind"), "{text}");
    }

    #[test]
    fn throughput_is_measured_from_the_first_item_of_the_window() {
        // 30 items over the last 10 s of a run that started then: 3/s, not 30/60.
        let young = Throughput::new(27, 3, Some(10.0), Some(0.2), 60);
        assert_eq!(young.window_seconds, 10.0);
        assert_eq!(young.per_second, 3.0);
        assert_eq!(young.eta_seconds, Some(20));
        // A long run: the full minute.
        let steady = Throughput::new(600, 0, Some(59.9), Some(0.0), 0);
        assert!((steady.per_second - 600.0 / 59.9).abs() < 1e-9);
        assert_eq!(steady.eta_seconds, None, "nothing remains");
        // Two items in the same instant do not make an infinite rate.
        let instant = Throughput::new(2, 0, Some(0.0), Some(0.0), 10);
        assert_eq!(instant.per_second, 2.0);
        assert_eq!(instant.eta_seconds, Some(5));
        // Nothing finished: no rate, no ETA.
        let stalled = Throughput::new(0, 0, None, None, 10);
        assert_eq!(stalled.per_second, 0.0);
        assert_eq!(stalled.eta_seconds, None);
        assert_eq!(
            stalled.describe(),
            "nothing finished in the last minute; 10 remaining, no ETA"
        );
        assert_eq!(
            young.describe(),
            "3.0/s over the last 10s (27 done, 3 failed); ETA 20s for 60 remaining"
        );
        let quiet = Throughput::new(5, 0, Some(50.0), Some(40.0), 1);
        assert!(
            quiet.describe().ends_with("; latest finished 40s ago"),
            "{}",
            quiet.describe()
        );
    }
}
