//! The producer: one request for the list's `count`, a plan of pages, pages fetched concurrently,
//! and one confirmed job published for every listed resource that is not already handled.
//!
//! Crash safety comes from the order of writes: items are recorded `pending` before their job is
//! published and move to `queued` only after the broker confirmed it. Killed at any moment, a
//! rerun finds the unconfirmed items still `pending` and publishes them again. Items `queued`
//! for longer than `--requeue-after` are published again too: their job may have been lost in
//! the broker, and a duplicate is harmless. Postgres going away mid-run is waited out
//! ([`patience`]); SIGTERM ends every wait, for the database, the broker or the API, within a
//! few seconds.

mod patience;
mod progress;
mod record;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use backon::Retryable;
use clap::Parser;
use futures_util::{StreamExt, TryStreamExt, stream};
use lapin::PublisherConfirm;
use lapin::options::BasicPublishOptions;
use lapin::types::ShortString;
use pokeq_shared::broker;
use pokeq_shared::config::{Common, CommonArgs, ConfigError, parse_duration};
use pokeq_shared::job::Job;
use pokeq_shared::metrics;
use pokeq_shared::pokeapi::{ClientOptions, FetchError, ListEntry, ListPage, PokeApi};
use pokeq_shared::rate::{Gate, Politeness, PolitenessArgs};
use pokeq_shared::retry;
use pokeq_shared::shutdown::CancellationToken;
use pokeq_shared::store::{RunProgress, Store};
use pokeq_shared::topology::Topology;

use crate::patience::{Patience, after_shutdown};
use crate::progress::Progress;

/// Command line of `producer`; every flag also reads an environment variable.
#[derive(Debug, Parser)]
#[command(
    name = "producer",
    version,
    about = "List PokeAPI and publish one job per resource not yet done",
    after_help = pokeq_shared::config::ENVIRONMENT_HELP
)]
pub struct Cli {
    #[command(flatten)]
    pub common: CommonArgs,

    #[command(flatten)]
    pub politeness: PolitenessArgs,

    /// Results asked for per list request.
    #[arg(long, env = "POKEQ_PAGE_SIZE", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub page_size: u64,

    /// Take only the first N resources of the list.
    #[arg(long, env = "POKEQ_LIMIT")]
    pub limit: Option<u64>,

    /// List pages fetched and published at once.
    #[arg(long, env = "POKEQ_CONCURRENCY", default_value_t = 8,
          value_parser = clap::value_parser!(u64).range(1..=256))]
    pub concurrency: u64,

    /// Also publish items that failed before (they go back to `queued`).
    #[arg(long, env = "POKEQ_RETRY_FAILED")]
    pub retry_failed: bool,

    /// Also publish items already done, to pick up changes: consumers ask the API whether each
    /// changed (ETag / Last-Modified) and rewrite only those that did.
    #[arg(long, env = "POKEQ_REFRESH")]
    pub refresh: bool,

    /// Also publish again items `queued` for longer than this (`0`: every queued item), counted
    /// from their last touch: when they were queued or a consumer last recorded a retry of
    /// their job. A job lost in the broker (a purged queue, a message a classic queue lost)
    /// then gets a new one. A job still on its way (a long backlog, a long retry delay or
    /// `Retry-After`) gets a duplicate, which is harmless: the consumer finds its item done
    /// and acknowledges it without an API call. Keep it above the longest such wait.
    #[arg(long, env = "POKEQ_REQUEUE_AFTER", default_value = "1h", value_parser = parse_requeue_after)]
    pub requeue_after: Duration,

    /// The resources to list and publish jobs for, comma-separated: any of pokemon,
    /// pokemon-species, evolution-chain, type, ability, move. Each is listed in turn.
    #[arg(
        long,
        env = "POKEQ_RESOURCES",
        default_value = "pokemon",
        value_delimiter = ','
    )]
    pub resources: Vec<String>,

    /// Crawl by links: the jobs published carry `"follow":true`, and the consumer storing such
    /// a job's document enqueues the documents it links to (pokemon → species, types,
    /// abilities, moves; species → evolution chain; chain → species), each once.
    #[arg(long, env = "POKEQ_FOLLOW")]
    pub follow: bool,

    /// Address of /metrics, /healthz and /readyz while the run lasts, or `off`.
    #[arg(long, env = "METRICS_ADDR", default_value = "off", value_parser = metrics::parse_addr)]
    pub metrics_addr: metrics::Endpoint,

    /// Whole-request timeout of one list request.
    #[arg(long, env = "POKEQ_HTTP_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub http_timeout: Duration,

    /// How long to wait for Postgres while it is away, at start or in the middle of the run,
    /// before failing the run (exit 1). A rerun carries on where it stopped.
    #[arg(long, env = "POKEQ_PATIENCE", default_value = "5m", value_parser = parse_duration)]
    pub patience: Duration,
}

/// The producer's validated settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub common: Common,
    pub page_size: u64,
    pub limit: Option<u64>,
    pub concurrency: usize,
    pub retry_failed: bool,
    pub refresh: bool,
    pub requeue_after: Duration,
    pub http: ClientOptions,
    pub politeness: Politeness,
    pub metrics_addr: metrics::Listen,
    pub patience: Duration,
    /// Resources listed, in the order given, each once.
    pub resources: Vec<String>,
    pub follow: bool,
}

impl Cli {
    pub fn validate(&self) -> Result<Config, ConfigError> {
        let mut resources: Vec<String> = Vec::new();
        for name in &self.resources {
            let name = name.trim();
            if !pokeq_shared::resources::is_known(name) {
                let known: Vec<&str> = pokeq_shared::resources::names().collect();
                return Err(ConfigError::new(
                    "POKEQ_RESOURCES",
                    &self.resources.join(","),
                    format!("unknown resource {name:?}; known: {}", known.join(", ")),
                ));
            }
            if !resources.iter().any(|r| r == name) {
                resources.push(name.to_owned());
            }
        }
        if resources.is_empty() {
            return Err(ConfigError::new(
                "POKEQ_RESOURCES",
                "",
                "name at least one resource",
            ));
        }
        Ok(Config {
            resources,
            follow: self.follow,
            common: self.common.validate()?,
            page_size: self.page_size,
            limit: self.limit,
            concurrency: self.concurrency as usize,
            retry_failed: self.retry_failed,
            refresh: self.refresh,
            requeue_after: self.requeue_after,
            politeness: self.politeness.politeness(),
            http: ClientOptions {
                timeout: self.http_timeout,
                ..ClientOptions::default()
            },
            metrics_addr: metrics::Listen::resolve(Some(self.metrics_addr), None)?,
            patience: self.patience,
        })
    }
}

/// What a run did; its `Display` is the contract's last line on stdout.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Resources the list returned (within `--limit`).
    pub listed: u64,
    /// Jobs published and confirmed by the broker.
    pub published: u64,
    /// Listed resources not published: done, queued (for less than `--requeue-after`), failed
    /// without `--retry-failed`, or refused by the database.
    pub skipped: u64,
    /// List pages in the plan.
    pub pages: u64,
    /// Of `skipped`, list entries the database refused to record (a name it cannot store).
    pub refused: u64,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "listed={} published={} skipped={} pages={}",
            self.listed, self.published, self.skipped, self.pages
        )
    }
}

/// Longest wait to record the end of a run in `producer_runs`.
const FINISH_WAIT: Duration = Duration::from_secs(10);
/// Longest wait for the broker to confirm one publish.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

struct Producer {
    api: PokeApi,
    store: Store,
    /// Waits out Postgres outages; holds the run's shutdown token.
    patience: Patience,
    /// This run's `producer_runs` row.
    run: i64,
    link: broker::Link,
    exchange: String,
    retry_failed: bool,
    refresh: bool,
    requeue_after: Duration,
    /// Whether the jobs published carry `follow`.
    follow: bool,
    progress: Arc<Progress>,
}

/// Runs once: plan, list, publish, and return when every publish is confirmed. A cancelled
/// `shutdown` fails the run within a few seconds: pages stop waiting for the API, the broker
/// or the database, and only the store calls and confirms already under way get a moment to
/// finish, so that what was confirmed is marked `queued`.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<Summary> {
    let (health, _) = metrics::serve_health(&config.metrics_addr, &shutdown).await?;
    metrics::preregister(metrics::Binary::Producer);
    let opening = Store::open_patiently(
        &config.common.database,
        config.common.database_url.expose(),
        config.concurrency.min(4) + 1,
        config.common.extra_ca.as_deref(),
        config.patience,
    );
    let store = tokio::select! {
        () = shutdown.cancelled() => anyhow::bail!("interrupted while waiting for Postgres"),
        store = opening => store?,
    };
    health.set_database(true);
    let gate = Gate::new(&config.politeness, Some(store.clone()));
    let api = PokeApi::new(config.common.pokeapi_url.expose(), &config.http, gate)
        .context("cannot build the HTTP client")?;
    // Only what publishing needs: the wait queues are the consumers' to declare, with their
    // own delays.
    let topology = Topology::without_retries(&config.common.prefix, config.common.queue_type);
    // The first connection waits for a broker that is still starting; later ones (after a
    // loss) are made by the link as publishing needs them.
    let connecting = broker::connect(
        config.common.amqp_url.expose(),
        "pokeq-producer",
        config.common.extra_ca.as_deref(),
    );
    let connection = tokio::select! {
        () = shutdown.cancelled() => anyhow::bail!("interrupted while waiting for RabbitMQ"),
        connection = connecting => connection?,
    };
    let link = broker::Link::new(
        config.common.amqp_url.expose(),
        "pokeq-producer",
        topology.clone(),
        config.common.extra_ca.as_deref(),
    );
    link.adopt(connection)
        .await
        .context("cannot declare the RabbitMQ topology")?;
    health.set_broker(true);

    let patience = Patience {
        limit: config.patience,
        shutdown: shutdown.clone(),
        health: Arc::clone(&health),
    };
    let run = patience.run("start the run", || store.start_run()).await?;
    let producer = Arc::new(Producer {
        api,
        store,
        patience,
        run,
        link,
        exchange: topology.jobs(),
        retry_failed: config.retry_failed,
        refresh: config.refresh,
        requeue_after: config.requeue_after,
        follow: config.follow,
        progress: Arc::new(Progress::default()),
    });

    let result = produce(&producer, &config, &shutdown).await;
    producer.link.close().await;
    let error = result.as_ref().err().map(pokeq_shared::exit::describe);
    // Briefly: the run's outcome is this function's result, the row only mirrors it, and a run
    // that failed for want of Postgres must not wait for it all over again.
    let finishing = producer.patience.run("record the end of the run", || {
        producer.store.finish_run(run, error.as_deref())
    });
    match tokio::time::timeout(FINISH_WAIT, finishing).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot record the end of this run"),
        Err(_) => tracing::warn!("cannot record the end of this run: no answer from Postgres"),
    }
    let summary = result?;
    tracing::info!(%summary, refused = summary.refused, "all jobs published");
    Ok(summary)
}

async fn produce(
    producer: &Arc<Producer>,
    config: &Config,
    shutdown: &CancellationToken,
) -> anyhow::Result<Summary> {
    let first_limit = config
        .limit
        .map_or(config.page_size, |limit| limit.min(config.page_size));
    // Every resource's count first, so that the run's plan covers them all.
    let mut plans = Vec::with_capacity(config.resources.len());
    for resource in &config.resources {
        let first = producer.fetch_page(resource, 0, first_limit.max(1)).await?;
        let total = believed_total(first.count, config.limit);
        if total < first.count && config.limit.is_none() {
            tracing::warn!(
                resource,
                count = first.count,
                believed = total,
                "the list claims more items than any PokeAPI holds; planning for fewer (--limit plans more)"
            );
        }
        let pages = plan(total, config.page_size);
        tracing::info!(
            resource,
            count = first.count,
            total,
            pages = pages.len(),
            "planned"
        );
        plans.push((resource.as_str(), total, first.results, pages));
    }
    let total: u64 = plans.iter().map(|(_, total, _, _)| total).sum();
    let page_count: usize = plans.iter().map(|(_, _, _, pages)| pages.len()).sum();
    producer
        .patience
        .run("plan the run", || {
            producer
                .store
                .plan_run(producer.run, total as i64, page_count as i64)
        })
        .await?;
    let reporting = CancellationToken::new();
    let reporter = progress::report(
        Arc::clone(&producer.progress),
        page_count as u64,
        reporting.clone(),
    );
    let mut published = Ok(());
    for (resource, _, first, pages) in plans {
        published = publish_pages(producer, config, shutdown, resource, first, &pages).await;
        if published.is_err() || shutdown.is_cancelled() {
            break;
        }
    }
    if config.follow && published.is_ok() && !shutdown.is_cancelled() {
        let listed: Vec<&str> = config.resources.iter().map(String::as_str).collect();
        published = producer.republish_stale_links(&listed).await;
    }
    reporting.cancel();
    let _ = reporter.await;

    let summary = Summary {
        listed: producer.progress.listed.load(Ordering::Relaxed),
        published: producer.progress.published.load(Ordering::Relaxed),
        skipped: producer.progress.skipped.load(Ordering::Relaxed),
        pages: page_count as u64,
        refused: producer.progress.refused.load(Ordering::Relaxed),
    };
    if shutdown.is_cancelled() {
        anyhow::bail!("interrupted before every page was published ({summary})");
    }
    published?;
    Ok(summary)
}

/// Publishes the first page (already fetched with the count) and then every other page,
/// `concurrency` at a time, until done or `shutdown`.
async fn publish_pages(
    producer: &Arc<Producer>,
    config: &Config,
    shutdown: &CancellationToken,
    resource: &str,
    mut first_results: Vec<ListEntry>,
    pages: &[(u64, u64)],
) -> anyhow::Result<()> {
    first_results.truncate(pages.first().map_or(0, |(_, limit)| *limit as usize));
    producer.publish_page(resource, first_results).await?;
    let rest = stream::iter(pages.iter().skip(1).copied())
        .take_until(shutdown.cancelled())
        .map(|(offset, limit)| {
            let producer = Arc::clone(producer);
            async move {
                let page = producer.fetch_page(resource, offset, limit).await?;
                let mut results = page.results;
                results.truncate(limit as usize);
                producer.publish_page(resource, results).await
            }
        })
        .buffer_unordered(config.concurrency);
    rest.try_collect::<Vec<()>>().await?;
    Ok(())
}

/// The whole `producer` binary after argument parsing: runs `cli` and prints the summary line,
/// with the contract's exit status.
pub fn main(cli: Cli) -> std::process::ExitCode {
    pokeq_shared::exit::main(
        "producer",
        cli.validate(),
        |config| config.common.log_format,
        |config, shutdown| async move {
            let summary = run(config, shutdown).await?;
            println!("{summary}");
            Ok(())
        },
    )
}

/// The most items a run believes the list holds when no `--limit` says otherwise. PokeAPI lists
/// about 1,350 pokemon and the stub at most 1,000,000; a `count` beyond this is a broken or
/// hostile API, and believing it would plan (and then request, one by one) millions of empty
/// pages. 100,000 is 70 times the real list; `--limit` asks for more on purpose.
pub const MAX_BELIEVED_COUNT: u64 = 100_000;

/// How many items to plan for: the list's `count`, capped by `limit` or else by
/// [`MAX_BELIEVED_COUNT`].
pub fn believed_total(count: u64, limit: Option<u64>) -> u64 {
    match limit {
        Some(limit) => limit.min(count),
        None => count.min(MAX_BELIEVED_COUNT),
    }
}

/// A `--requeue-after` value: a duration, or a bare `0` for "now".
fn parse_requeue_after(text: &str) -> Result<Duration, String> {
    if text.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    parse_duration(text)
}

/// `(offset, limit)` of every page of a list of `total` items.
pub fn plan(total: u64, page_size: u64) -> Vec<(u64, u64)> {
    (0..total)
        .step_by(page_size.max(1) as usize)
        .map(|offset| (offset, page_size.min(total - offset)))
        .collect()
}

impl Producer {
    /// One list page, retried while the failure is transient ([`retry::LIST_PAGE`]), until
    /// shutdown.
    async fn fetch_page(
        &self,
        resource: &str,
        offset: u64,
        limit: u64,
    ) -> anyhow::Result<ListPage> {
        let fetching = (|| self.api.list_of(resource, offset, limit))
            .retry(retry::LIST_PAGE)
            .when(FetchError::is_transient)
            .adjust(|error, delay| match error {
                FetchError::Transient {
                    retry_after: Some(wait),
                    ..
                } => delay.map(|d| d.max(*wait)),
                _ => delay,
            })
            .notify(|error, wait| tracing::warn!(resource, offset, %error, ?wait, "list request failed"));
        tokio::select! {
            page = fetching => page
                .with_context(|| format!("cannot fetch the {resource} list page at offset {offset}")),
            () = self.patience.shutdown.cancelled() => {
                anyhow::bail!("interrupted while fetching the {resource} list page at offset {offset}")
            }
        }
    }

    /// Records a page's items, publishes a job for each one to publish, and marks the confirmed
    /// ones `queued`.
    async fn publish_page(
        &self,
        resource: &str,
        results: Vec<pokeq_shared::pokeapi::ListEntry>,
    ) -> anyhow::Result<()> {
        let mut items = Vec::with_capacity(results.len());
        for entry in results {
            match entry.id() {
                Some(id) => items.push((id, entry.name.unwrap_or_default())),
                None => {
                    tracing::warn!(resource, url = %entry.url, name = ?entry.name, "list entry without an id; ignored")
                }
            }
        }
        items.sort_unstable_by_key(|(id, _)| *id);
        items.dedup_by_key(|(id, _)| *id);
        let record::Recorded {
            items,
            inserted,
            refused,
        } = record::record_listed(&self.store, &self.patience, resource, items).await?;
        let ids: Vec<i32> = items.iter().map(|(id, _)| *id).collect();
        // New items are claimed by their insert; only those known before (a rerun, or a list
        // that overlaps another run's) are asked about, in a second statement.
        let mut claimed: std::collections::HashSet<i32> = inserted.into_iter().collect();
        let known: Vec<i32> = ids
            .iter()
            .copied()
            .filter(|id| !claimed.contains(id))
            .collect();
        if !known.is_empty() {
            let again = self
                .patience
                .run("claim items to publish", || {
                    self.store.claim_for_publish(
                        resource,
                        &known,
                        self.retry_failed,
                        self.refresh,
                        self.requeue_after,
                    )
                })
                .await?;
            claimed.extend(again);
        }
        let jobs: Vec<Job> = items
            .into_iter()
            .filter(|(id, _)| claimed.contains(id))
            .map(|(id, name)| Job::of(resource, id, name).following(self.follow))
            .collect();
        self.publish_jobs(resource, jobs).await?;
        metrics::counter!(metrics::PAGES).increment(1);
        let listed = ids.len() as u64 + refused;
        let skipped = listed - claimed.len() as u64;
        let progress = &self.progress;
        progress.listed.fetch_add(listed, Ordering::Relaxed);
        progress.skipped.fetch_add(skipped, Ordering::Relaxed);
        progress.refused.fetch_add(refused, Ordering::Relaxed);
        progress.pages_done.fetch_add(1, Ordering::Relaxed);
        let totals = RunProgress {
            pages_done: progress.pages_done.load(Ordering::Relaxed) as i64,
            listed: progress.listed.load(Ordering::Relaxed) as i64,
            published: progress.published.load(Ordering::Relaxed) as i64,
            skipped: progress.skipped.load(Ordering::Relaxed) as i64,
        };
        self.patience
            .run("record the page", || self.store.page_done(self.run, totals))
            .await?;
        Ok(())
    }

    /// With `--follow`, after the lists: publishes again the links of other resources that
    /// consumers enqueued and whose jobs may be lost ([`Store::claim_stale_links`]).
    async fn republish_stale_links(&self, listed: &[&str]) -> anyhow::Result<()> {
        let claimed = self
            .patience
            .run("claim stale links", || {
                self.store.claim_stale_links(listed, self.requeue_after)
            })
            .await?;
        let mut by_resource: std::collections::BTreeMap<String, Vec<Job>> = Default::default();
        for (resource, id, name) in claimed {
            let job = Job::of(&resource, id, name).following(true);
            by_resource.entry(resource).or_default().push(job);
        }
        for (resource, jobs) in by_resource {
            tracing::info!(
                resource,
                jobs = jobs.len(),
                "publishing links whose jobs may be lost"
            );
            for chunk in jobs.chunks(1000) {
                self.publish_jobs(&resource, chunk.to_vec()).await?;
            }
        }
        Ok(())
    }

    /// Publishes `jobs`, all of `resource`, until the broker confirmed each (retrying with
    /// [`retry::PAGE_PUBLISH`]), and marks the confirmed ones `queued`.
    async fn publish_jobs(&self, resource: &str, jobs: Vec<Job>) -> anyhow::Result<()> {
        let shutdown = &self.patience.shutdown;
        let mut unconfirmed = jobs;
        let mut delays = retry::PAGE_PUBLISH.waits();
        loop {
            if shutdown.is_cancelled() {
                anyhow::bail!("interrupted with {} jobs unpublished", unconfirmed.len());
            }
            let (confirmed, failed) = self.publish_batch(&unconfirmed).await;
            if !confirmed.is_empty() {
                self.patience
                    .run("mark jobs queued", || {
                        self.store.mark_queued(resource, &confirmed)
                    })
                    .await?;
                self.progress
                    .published
                    .fetch_add(confirmed.len() as u64, Ordering::Relaxed);
                metrics::counter!(metrics::PUBLISHED).increment(confirmed.len() as u64);
            }
            match failed {
                None => return Ok(()),
                Some(error) if pokeq_shared::exit::misconfiguration(&error).is_some() => {
                    // A reconnect the broker refused (a password changed, a queue redeclared
                    // differently) stays refused: no point in the remaining tries.
                    return Err(error);
                }
                Some(error) => {
                    unconfirmed.retain(|job| !confirmed.contains(&job.id));
                    let Some(wait) = delays.next() else {
                        return Err(error).context(format!(
                            "{} jobs still unconfirmed after {} tries",
                            unconfirmed.len(),
                            retry::PAGE_PUBLISH_TRIES
                        ));
                    };
                    tracing::warn!(
                        error = pokeq_shared::exit::describe(&error),
                        unconfirmed = unconfirmed.len(),
                        ?wait,
                        "publish failed; retrying"
                    );
                    tokio::select! {
                        () = shutdown.cancelled() => {}
                        () = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }

    /// Publishes every job, then awaits every confirm: the ids the broker confirmed, and the
    /// first error if any job was not confirmed. After shutdown, what is under way gets
    /// [`patience::LAST_ANSWER`]; jobs unconfirmed by then stay `pending` for a rerun.
    async fn publish_batch(&self, jobs: &[Job]) -> (Vec<i32>, Option<anyhow::Error>) {
        let interrupted = || anyhow::anyhow!("interrupted");
        let last_answer = after_shutdown(&self.patience.shutdown);
        tokio::pin!(last_answer);
        let channel = tokio::select! {
            channel = self.link.channel() => match channel {
                Ok(channel) => channel,
                Err(error) => return (Vec::new(), Some(error.into())),
            },
            () = &mut last_answer => return (Vec::new(), Some(interrupted())),
        };
        let mut pending: Vec<(i32, PublisherConfirm)> = Vec::with_capacity(jobs.len());
        let mut error = None;
        for job in jobs {
            let body = job.encode();
            let publish = channel.basic_publish(
                ShortString::from(self.exchange.as_str()),
                ShortString::from(job.resource.as_str()),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &body,
                job.properties(),
            );
            let publish = tokio::select! {
                publish = publish => publish,
                () = &mut last_answer => {
                    error = Some(interrupted());
                    break;
                }
            };
            match publish {
                Ok(confirm) => pending.push((job.id, confirm)),
                Err(e) => {
                    error = Some(e.into());
                    break;
                }
            }
        }
        let mut confirmed = Vec::with_capacity(pending.len());
        // A batch is one page, of one resource: the routing key of all its jobs.
        let routing_key = jobs.first().map_or("", |job| job.resource.as_str());
        for (id, confirm) in pending {
            let outcome = tokio::select! {
                outcome = tokio::time::timeout(CONFIRM_TIMEOUT, confirm) => outcome,
                () = &mut last_answer => {
                    error.get_or_insert_with(interrupted);
                    break;
                }
            };
            let outcome = match outcome {
                Ok(Ok(confirmation)) => broker::check(confirmation, &self.exchange, routing_key),
                Ok(Err(e)) => Err(e.into()),
                Err(_) => Err(broker::BrokerError::ConfirmTimeout(CONFIRM_TIMEOUT)),
            };
            match outcome {
                Ok(()) => confirmed.push(id),
                Err(e) => {
                    error.get_or_insert(e.into());
                }
            }
        }
        (confirmed, error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn requeue_after_takes_a_duration_or_zero() {
        assert_eq!(parse_requeue_after("0"), Ok(Duration::ZERO));
        assert_eq!(parse_requeue_after("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_requeue_after("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_requeue_after("5").is_err());
        let cli = Cli::try_parse_from(["producer"]).expect("defaults");
        assert_eq!(cli.requeue_after, Duration::from_secs(3600));
    }

    #[test]
    fn resources_are_known_names_each_once_and_pokemon_by_default() {
        let base = [
            "producer",
            "--amqp-url",
            "amqp://localhost",
            "--database-url",
            "postgres://localhost/pokeq",
        ];
        let parse = |extra: &[&str]| {
            let args: Vec<&str> = base.iter().chain(extra).copied().collect();
            Cli::try_parse_from(args).expect("flags").validate()
        };
        let config = parse(&[]).expect("defaults");
        assert_eq!(config.resources, ["pokemon"]);
        assert!(!config.follow);
        let config = parse(&["--resources", "pokemon,type,pokemon", "--follow"]).expect("valid");
        assert_eq!(config.resources, ["pokemon", "type"]);
        assert!(config.follow);
        let error = parse(&["--resources", "pokemon,berry"])
            .expect_err("berry is no resource")
            .to_string();
        assert!(
            error.contains("POKEQ_RESOURCES") && error.contains("berry"),
            "{error}"
        );
    }

    #[test]
    fn plan_covers_every_item_once() {
        assert_eq!(plan(0, 100), vec![]);
        assert_eq!(plan(250, 100), vec![(0, 100), (100, 100), (200, 50)]);
        assert_eq!(plan(100, 100), vec![(0, 100)]);
        let pages = plan(1351, 100);
        assert_eq!(pages.len(), 14);
        assert_eq!(pages.iter().map(|(_, l)| l).sum::<u64>(), 1351);
    }

    #[test]
    fn an_absurd_count_is_not_believed() {
        assert_eq!(believed_total(1351, None), 1351);
        assert_eq!(believed_total(u64::MAX, None), MAX_BELIEVED_COUNT);
        assert_eq!(plan(believed_total(u64::MAX, None), 100).len(), 1000);
        assert_eq!(
            believed_total(u64::MAX, Some(500_000)),
            500_000,
            "--limit asks for more"
        );
        assert_eq!(believed_total(1351, Some(2_000_000)), 1351);
        assert_eq!(believed_total(1351, Some(10)), 10);
    }

    #[test]
    fn summary_is_the_contract_line() {
        let summary = Summary {
            listed: 3,
            published: 2,
            skipped: 1,
            pages: 1,
            refused: 1,
        };
        assert_eq!(
            summary.to_string(),
            "listed=3 published=2 skipped=1 pages=1"
        );
    }
}
