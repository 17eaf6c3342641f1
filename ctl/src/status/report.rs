//! What `status` knows at one moment (also the `--json` document), gathered from its sources.

use std::collections::BTreeMap;
use std::time::Duration;

use pokeq_shared::config::{Common, Misconfigured};
use pokeq_shared::exit;
use pokeq_shared::store::Store;
use pokeq_shared::topology::{RetryDelays, Topology};
use serde::Serialize;

use super::database::database_part;
use super::queues::queue_part;
use super::throughput::Throughput;
use crate::management::Management;
use crate::probe::QueueProbe;

/// How old a management API figure can be with RabbitMQ's default
/// `collect_statistics_interval` of 5 s: a queue reports its figures every interval, and the
/// management database collects them every interval. (The timestamps of the API's samples are
/// aligned to the request, not to the collection, so they cannot tell a figure's real age.)
pub const MANAGEMENT_MAX_AGE: Duration = Duration::from_secs(10);

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

/// Item counts, over every resource (the top level) or one (an entry of `resources`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Items {
    pub pending: i64,
    pub queued: i64,
    pub done: i64,
    pub failed: i64,
    pub total: i64,
    /// Failed items by `error_kind` (`unknown` when none was recorded).
    pub failed_by_kind: BTreeMap<String, i64>,
    /// The same counts per resource present in `ingest_items`, pokemon first.
    pub resources: Vec<ResourceItems>,
}

impl Items {
    /// Counts `n` items of `status` (failed ones of `kind`).
    pub(super) fn add(&mut self, status: &str, kind: &str, n: i64) {
        match status {
            "pending" => self.pending += n,
            "queued" => self.queued += n,
            "done" => self.done += n,
            "failed" => {
                self.failed += n;
                *self.failed_by_kind.entry(kind.to_owned()).or_default() += n;
            }
            _ => return,
        }
        self.total += n;
    }
}

/// One resource's item counts, as [`Items`] counts them all.
#[derive(Debug, Clone, Serialize)]
pub struct ResourceItems {
    pub resource: String,
    pub pending: i64,
    pub queued: i64,
    pub done: i64,
    pub failed: i64,
    pub total: i64,
    pub failed_by_kind: BTreeMap<String, i64>,
}

impl ResourceItems {
    pub(super) fn new(resource: String, items: Items) -> Self {
        Self {
            resource,
            pending: items.pending,
            queued: items.queued,
            done: items.done,
            failed: items.failed,
            total: items.total,
            failed_by_kind: items.failed_by_kind,
        }
    }
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
pub(super) struct Sources<'a> {
    pub(super) common: &'a Common,
    pub(super) store: Option<Store>,
    pub(super) probe: Option<QueueProbe>,
    pub(super) management: Management,
}

impl Sources<'_> {
    pub(super) async fn collect(&mut self) -> Report {
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

    pub(super) async fn close(&mut self) {
        if let Some(probe) = self.probe.take() {
            probe.close().await;
        }
    }
}

fn now() -> u64 {
    pokeq_shared::job::unix_seconds()
}
