//! `pokeq workers`: the consumers working for this prefix now, one line each.
//!
//! Each figure comes from the source that knows it, with no registry of pokeq's own to go stale:
//! - **Who is live**: the management API's consumers of `<prefix>.jobs`. A consumer is listed
//!   while its `basic.consume` stands and is gone the moment its connection closes, however it
//!   died. Its prefetch is the broker's own figure.
//! - **What it is** (host, pid, version, started at, retry delays, metrics address): the client
//!   properties its connection was opened with (see `pokeq_shared::worker`).
//! - **Deliveries in hand**: its channel's unacknowledged count, from the broker's last
//!   statistics sample (every 5 s by default), so up to a few seconds old.
//! - **API requests in flight, last job finished**: only the process knows them, and they change
//!   by the millisecond, so they are read from the consumer's own `/metrics`
//!   (`pokeq_api_requests_in_flight`, `pokeq_last_job_finished_timestamp_seconds`) at the address
//!   it advertised. Connection properties are fixed at connect time, and a heartbeat row in
//!   Postgres would cost every consumer a write every few seconds for the odd `workers` call. A
//!   consumer with its endpoint off or unreachable from here shows `?` for these two.
//! - **API circuit**: the `api_circuit` rows consumers keep in Postgres (what `status` reads),
//!   keyed by the same `pokeq-consumer@<host>:<pid>` as the connection, with since when and why.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use pokeq_shared::config::{Common, ConfigError};
use pokeq_shared::secret::http_error;
use pokeq_shared::worker;
use serde::Serialize;

use crate::Console;
use crate::inspect::MissingQueue;
use crate::management::{
    ChannelStats, ConnectionInfo, ConsumerInfo, Management, ManagementArgs, ManagementConfig,
};
use crate::table::{Align, Table, age};

/// Longest wait for one consumer's `/metrics`; they are read concurrently.
const METRICS_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait for the database part (connecting included).
const DATABASE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Args)]
pub struct WorkersArgs {
    /// One JSON document instead of a table.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub management: ManagementArgs,
}

#[derive(Debug, Clone)]
pub struct WorkersConfig {
    pub json: bool,
    pub management: ManagementConfig,
}

impl WorkersArgs {
    pub fn validate(&self, common: &Common) -> Result<WorkersConfig, ConfigError> {
        Ok(WorkersConfig {
            json: self.json,
            management: self.management.validate(common.amqp_url.expose())?,
        })
    }
}

/// Everything `workers` knows; this is also the `--json` document.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub prefix: String,
    pub vhost: String,
    /// The queue whose consumers are listed.
    pub queue: String,
    /// Unix time (seconds) the report was made.
    pub at: u64,
    pub workers: Vec<Worker>,
    /// Why the circuit column is unknown, if it is.
    pub database_error: Option<String>,
}

/// One consumer of the jobs queue.
#[derive(Debug, Clone, Serialize)]
pub struct Worker {
    /// The connection's name: `pokeq-consumer@<host>:<pid>`, or the broker's name for it when
    /// the client gave none (not a pokeq consumer, or an old one).
    pub name: String,
    pub host: Option<String>,
    pub pid: Option<u32>,
    pub version: Option<String>,
    pub prefetch: Option<u64>,
    /// Deliveries taken and not yet acknowledged, at the broker's last statistics sample.
    pub in_hand: Option<u64>,
    pub api_in_flight: Option<u64>,
    /// `None` when unknown (the database part failed).
    pub circuit: Option<Circuit>,
    pub started_at: Option<String>,
    pub last_job_finished_at: Option<String>,
    pub seconds_since_last_job: Option<u64>,
    pub retry_delays: Option<Vec<String>>,
    /// Where its `/metrics` was read, as reached from here.
    pub metrics_url: Option<String>,
    /// Why `api_in_flight` and the last job are unknown, if they are.
    pub metrics_error: Option<String>,
    /// The consumer's address as the broker sees it.
    pub peer: Option<String>,
    pub connected_at: Option<String>,
    pub consumer_tag: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Circuit {
    pub open: bool,
    /// When it opened, ISO 8601 UTC.
    pub since: Option<String>,
    pub seconds_open: Option<u64>,
    pub error: Option<String>,
}

impl Circuit {
    fn closed() -> Self {
        Self {
            open: false,
            since: None,
            seconds_open: None,
            error: None,
        }
    }
}

pub async fn run(
    common: &Common,
    config: &WorkersConfig,
    console: &mut Console<'_>,
) -> anyhow::Result<()> {
    let management = Management::new(config.management.clone())?;
    let report = collect(common, &management).await?;
    if config.json {
        serde_json::to_writer_pretty(&mut *console.out, &report)?;
        writeln!(console.out)?;
    } else {
        write!(console.out, "{}", render(&report))?;
    }
    if let Some(error) = &report.database_error {
        anyhow::bail!("workers incomplete: API circuits unknown: database unavailable: {error}");
    }
    Ok(())
}

/// The report, or an error when there is nothing to report on: the management API cannot be
/// read, or the jobs queue does not exist.
pub async fn collect(common: &Common, management: &Management) -> anyhow::Result<Report> {
    let prefix = &common.prefix;
    let vhost = management.config().vhost.clone();
    let jobs = format!("{prefix}.jobs");
    let (queues, consumers, connections, channels) = tokio::join!(
        management.queues(prefix),
        management.consumers(),
        management.connections(),
        management.channels(),
    );
    if !queues?.iter().any(|queue| queue.name == jobs) {
        return Err(MissingQueue {
            queue: jobs,
            vhost,
            prefix: prefix.clone(),
        }
        .into());
    }
    let (consumers, connections, channels) = (consumers?, connections?, channels?);
    let mut workers = join(&jobs, consumers, &connections, &channels);
    let (circuits, _) = tokio::join!(circuits(common), read_metrics(&mut workers));
    let database_error = match circuits {
        Ok(circuits) => {
            for worker in &mut workers {
                let circuit = circuits.get(&worker.name).cloned();
                worker.circuit = Some(circuit.unwrap_or_else(Circuit::closed));
            }
            None
        }
        Err(error) => Some(format!("{error:#}")),
    };
    Ok(Report {
        prefix: prefix.clone(),
        vhost,
        queue: jobs,
        at: now(),
        workers,
        database_error,
    })
}

/// One [`Worker`] per consumer of `queue`, with what the broker knows of it.
fn join(
    queue: &str,
    consumers: Vec<ConsumerInfo>,
    connections: &[ConnectionInfo],
    channels: &[ChannelStats],
) -> Vec<Worker> {
    let connections: HashMap<&str, &ConnectionInfo> =
        connections.iter().map(|c| (c.name.as_str(), c)).collect();
    let unacked: HashMap<&str, Option<u64>> = channels
        .iter()
        .map(|c| (c.name.as_str(), c.messages_unacknowledged))
        .collect();
    let mut workers: Vec<Worker> = consumers
        .into_iter()
        .filter(|consumer| consumer.queue.name == queue)
        // A consumer without channel details is one whose channel is closing: not live.
        .filter_map(|consumer| Some((consumer.channel_details.clone()?, consumer)))
        .map(|(channel, consumer)| {
            let connection = connections.get(channel.connection_name.as_str()).copied();
            let property = |key: &str| connection.and_then(|c| c.property(key));
            let peer_host = connection.and_then(|c| c.peer_host.clone());
            let metrics_url = property(worker::METRICS_ADDR)
                .and_then(|addr| metrics_url(&addr, peer_host.as_deref()));
            Worker {
                name: connection
                    .and_then(|c| c.user_provided_name.clone())
                    .unwrap_or_else(|| channel.connection_name.clone()),
                host: property(worker::HOST).or(peer_host.clone()),
                pid: property(worker::PID).and_then(|pid| pid.parse().ok()),
                version: property(worker::VERSION),
                prefetch: match consumer.prefetch_count {
                    0 => property(worker::PREFETCH).and_then(|n| n.parse().ok()),
                    n => Some(n),
                },
                in_hand: unacked.get(channel.name.as_str()).copied().flatten(),
                api_in_flight: None,
                circuit: None,
                started_at: property(worker::STARTED_AT),
                last_job_finished_at: None,
                seconds_since_last_job: None,
                retry_delays: property(worker::RETRY_DELAYS)
                    .map(|labels| labels.split(',').map(str::to_owned).collect()),
                metrics_error: if metrics_url.is_none() {
                    Some("no metrics endpoint advertised".to_owned())
                } else {
                    None
                },
                metrics_url,
                peer: connection
                    .and_then(|c| Some(format!("{}:{}", c.peer_host.as_deref()?, c.peer_port?))),
                connected_at: connection
                    .and_then(|c| c.connected_at)
                    .map(|ms| worker::utc_rfc3339(ms / 1000)),
                consumer_tag: consumer.consumer_tag,
            }
        })
        .collect();
    workers.sort_by(|a, b| {
        (&a.name, &a.connected_at, &a.consumer_tag).cmp(&(
            &b.name,
            &b.connected_at,
            &b.consumer_tag,
        ))
    });
    workers
}

/// `http://<addr>/metrics` for an advertised address; an unspecified IP (`0.0.0.0`: every
/// interface) is replaced by the address the consumer connected to the broker from.
fn metrics_url(advertised: &str, peer_host: Option<&str>) -> Option<String> {
    let addr: SocketAddr = advertised.parse().ok()?;
    let addr = if addr.ip().is_unspecified() {
        let peer: IpAddr = peer_host?.parse().ok()?;
        SocketAddr::new(peer, addr.port())
    } else {
        addr
    };
    Some(format!("http://{addr}/metrics"))
}

/// Reads every worker's `/metrics` concurrently, filling in what only the process knows.
async fn read_metrics(workers: &mut [Worker]) {
    let Ok(client) = reqwest::Client::builder()
        .timeout(METRICS_TIMEOUT)
        .connect_timeout(METRICS_TIMEOUT)
        .build()
    else {
        return;
    };
    let mut reads = tokio::task::JoinSet::new();
    for (index, worker) in workers.iter().enumerate() {
        if let Some(url) = worker.metrics_url.clone() {
            let client = client.clone();
            reads.spawn(async move { (index, scrape(&client, &url).await) });
        }
    }
    let now = now();
    while let Some(done) = reads.join_next().await {
        let Ok((index, result)) = done else { continue };
        let Some(worker) = workers.get_mut(index) else {
            continue;
        };
        match result {
            Ok(figures) => {
                worker.metrics_error = None;
                worker.api_in_flight = figures
                    .get(pokeq_shared::metrics::API_IN_FLIGHT)
                    .map(|n| n.max(0.0) as u64);
                let last = figures
                    .get(pokeq_shared::metrics::LAST_JOB_FINISHED)
                    .filter(|t| **t > 0.0)
                    .map(|t| *t as u64);
                worker.last_job_finished_at = last.map(worker::utc_rfc3339);
                worker.seconds_since_last_job = last.map(|t| now.saturating_sub(t));
            }
            Err(error) => worker.metrics_error = Some(error),
        }
    }
}

/// The unlabelled samples of a Prometheus text page, by metric name.
async fn scrape(client: &reqwest::Client, url: &str) -> Result<BTreeMap<String, f64>, String> {
    let response = client.get(url).send().await.map_err(http_error)?;
    if !response.status().is_success() {
        return Err(format!("answered {}", response.status()));
    }
    let text = response.text().await.map_err(http_error)?;
    Ok(parse_samples(&text))
}

fn parse_samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            let name = parts.next()?;
            let value = parts.next()?.parse().ok()?;
            (!name.contains('{')).then(|| (name.to_owned(), value))
        })
        .collect()
}

/// Open circuits by process name, from the rows live consumers keep fresh (every 10 s: a row
/// older than 30 s belongs to a process that is gone; see `consumer/src/circuit.rs`).
async fn circuits(common: &Common) -> anyhow::Result<HashMap<String, Circuit>> {
    let work = async {
        let store = crate::open_store(common).await?;
        let client = store.pool().get().await?;
        let rows = client
            .query(
                r#"select process,
                          to_char(since at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                          greatest(extract(epoch from now() - since), 0)::float8, error
                   from api_circuit
                   where updated_at > now() - interval '30 seconds'"#,
                &[],
            )
            .await
            .context("reading the API circuits")?;
        Ok(rows
            .iter()
            .map(|row| {
                let circuit = Circuit {
                    open: true,
                    since: row.get(1),
                    seconds_open: Some(row.get::<_, f64>(2) as u64),
                    error: row.get(3),
                };
                (row.get::<_, String>(0), circuit)
            })
            .collect())
    };
    tokio::time::timeout(DATABASE_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| {
            Err(anyhow::anyhow!(
                "no answer from Postgres within {DATABASE_TIMEOUT:?}"
            ))
        })
}

/// The report as people read it.
pub fn render(report: &Report) -> String {
    let count = report.workers.len();
    let mut text = format!(
        "pokeq workers: prefix {}, vhost {}, {} consumer{} on {}\n",
        report.prefix,
        report.vhost,
        count,
        if count == 1 { "" } else { "s" },
        report.queue
    );
    if report.workers.is_empty() {
        return text;
    }
    let mut table = Table::new(&[
        ("HOST", Align::Left),
        ("PID", Align::Right),
        ("VERSION", Align::Left),
        ("PREFETCH", Align::Right),
        ("IN HAND", Align::Right),
        ("API", Align::Right),
        ("CIRCUIT", Align::Left),
        ("STARTED", Align::Left),
        ("LAST JOB", Align::Left),
    ]);
    let or_dash = |text: Option<String>| text.unwrap_or_else(|| "-".to_owned());
    let figure = |n: Option<u64>| n.map_or_else(|| "?".to_owned(), |n| n.to_string());
    for worker in &report.workers {
        let circuit = match &worker.circuit {
            None => "?".to_owned(),
            Some(circuit) if circuit.open => {
                format!("open {}", circuit.seconds_open.map(age).unwrap_or_default())
            }
            Some(_) => "closed".to_owned(),
        };
        let last_job = match (&worker.metrics_error, worker.seconds_since_last_job) {
            (Some(_), _) => "?".to_owned(),
            (None, Some(seconds)) => format!("{} ago", age(seconds)),
            (None, None) => "none yet".to_owned(),
        };
        table.row(vec![
            or_dash(worker.host.clone()),
            worker.pid.map_or_else(|| "-".to_owned(), |p| p.to_string()),
            or_dash(worker.version.clone()),
            figure(worker.prefetch),
            figure(worker.in_hand),
            figure(worker.api_in_flight),
            circuit,
            or_dash(worker.started_at.clone()),
            last_job,
        ]);
    }
    text.push('\n');
    text.push_str(&table.render("  "));
    text.push_str(
        "\n  IN HAND: deliveries not yet acknowledged, at the broker's last statistics sample \
         (every 5 s)\n  API: API requests in flight; API and LAST JOB from each consumer's \
         /metrics\n",
    );
    for worker in &report.workers {
        if let Some(error) = &worker.metrics_error {
            let at = worker.metrics_url.as_deref().unwrap_or("-");
            text.push_str(&format!("  ? {}: /metrics {at}: {error}\n", worker.name));
        }
        if let Some(Circuit {
            open: true,
            error: Some(error),
            ..
        }) = &worker.circuit
        {
            text.push_str(&format!("  {}: API circuit open: {error}\n", worker.name));
        }
    }
    if let Some(error) = &report.database_error {
        text.push_str(&format!("  CIRCUIT unknown: {error}\n"));
    }
    text
}

fn now() -> u64 {
    pokeq_shared::job::unix_seconds()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_address_on_every_interface_is_reached_at_the_peer() {
        assert_eq!(
            metrics_url("0.0.0.0:9000", Some("10.1.2.3")).as_deref(),
            Some("http://10.1.2.3:9000/metrics")
        );
        assert_eq!(
            metrics_url("127.0.0.1:9001", Some("10.1.2.3")).as_deref(),
            Some("http://127.0.0.1:9001/metrics")
        );
        assert_eq!(
            metrics_url("[::]:9000", Some("::1")).as_deref(),
            Some("http://[::1]:9000/metrics")
        );
        assert_eq!(metrics_url("0.0.0.0:9000", None), None);
        assert_eq!(metrics_url("not an address", Some("10.1.2.3")), None);
    }

    #[test]
    fn samples_are_read_by_name_and_labelled_ones_skipped() {
        let page = "# HELP pokeq_api_requests_in_flight x\n\
                    # TYPE pokeq_api_requests_in_flight gauge\n\
                    pokeq_api_requests_in_flight 3\n\
                    pokeq_jobs_total{outcome=\"done\"} 12\n\
                    pokeq_last_job_finished_timestamp_seconds 1700000000\n";
        let samples = parse_samples(page);
        assert_eq!(samples.get("pokeq_api_requests_in_flight"), Some(&3.0));
        assert_eq!(
            samples.get("pokeq_last_job_finished_timestamp_seconds"),
            Some(&1_700_000_000.0)
        );
        assert_eq!(samples.len(), 2);
    }
}
