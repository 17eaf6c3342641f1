//! One benchmark run: a fresh database and prefix, the stub, K consumers and the producer as
//! processes, measured from the producer's start to the last commit, then a rerun, the stub's
//! own serving rate, and cleanup.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use pokeq_shared::secret::SecretUrl;
use serde_json::{Value, json};
use tokio_postgres::Client;

use crate::children::{self, Child, Exit};
use crate::procfs::{self, Sampler};
use crate::services::{self, Management, PgCounters, QueueProbe};
use crate::stubrate;

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// The scenario letter (a, b, c), `samples`, or a custom label.
    pub group: String,
    pub items: u32,
    pub consumers: u32,
    pub prefetch: u16,
    pub latency_ms: u64,
    /// The consumers' (and producer's) API requests in flight per process.
    pub api_concurrency: u16,
    /// Serve real payload files from this directory instead of synthetic ones.
    pub samples: Option<PathBuf>,
    /// Percent of ids whose first two requests answer 503 (a flaky backend behind the API).
    pub flaky_percent: u8,
    /// Crawl the Pokédex: the producer lists pokemon only and consumers follow their links
    /// ([`CRAWL_ARGS`]), so the run's items are those of every resource reached, unknown until
    /// the crawl is over.
    pub crawl: bool,
}

/// The producer's flags of a crawl: pokemon listed, every linked resource (species, evolution
/// chains, types, abilities, moves) enqueued by the consumers that fetch what links to them.
pub const CRAWL_ARGS: [&str; 3] = ["--resources", "pokemon", "--follow"];

/// Ticks in a row a crawl must look finished (nothing pending or queued, no job ready) before it
/// is: a consumer enqueues the links of a document it fetched, so a moment with nothing left
/// can precede the next resource's jobs.
const CRAWL_SETTLE_TICKS: u32 = 10;

impl Spec {
    /// API requests one consumer can have in flight: one per delivery held, up to its cap.
    pub fn in_flight(&self) -> u16 {
        self.prefetch.min(self.api_concurrency)
    }

    pub fn name(&self) -> String {
        let mut name = format!(
            "{}-{}-k{}-p{}",
            self.group, self.items, self.consumers, self.prefetch
        );
        if self.api_concurrency != self.prefetch {
            name.push_str(&format!("-api{}", self.api_concurrency));
        }
        if self.latency_ms > 0 {
            name.push_str(&format!("-{}ms", self.latency_ms));
        }
        if self.samples.is_some() {
            name.push_str("-samples");
        }
        if self.flaky_percent > 0 {
            name.push_str(&format!("-flaky{}", self.flaky_percent));
        }
        name
    }

    pub fn payload(&self) -> &'static str {
        if self.samples.is_some() {
            "samples"
        } else {
            "synthetic"
        }
    }
}

/// Databases and prefixes created and not yet cleaned up, for cleanup after Ctrl-C.
#[derive(Clone, Default)]
pub struct Registry(Arc<Mutex<Vec<(String, String)>>>);

impl Registry {
    fn add(&self, db: &str, prefix: &str) {
        if let Ok(mut list) = self.0.lock() {
            list.push((db.to_owned(), prefix.to_owned()));
        }
    }

    fn remove(&self, db: &str) {
        if let Ok(mut list) = self.0.lock() {
            list.retain(|(d, _)| d != db);
        }
    }

    pub fn take(&self) -> Vec<(String, String)> {
        self.0
            .lock()
            .map(|mut list| std::mem::take(&mut *list))
            .unwrap_or_default()
    }
}

/// Settings shared by every run.
pub struct Settings {
    pub bin_dir: PathBuf,
    pub amqp_url: SecretUrl,
    /// Any database on the server; runs use `pokeq_bench_<tag>` and `postgres` for admin.
    pub postgres_url: SecretUrl,
    pub mgmt: Management,
    pub queue_type: String,
    pub stall: Duration,
    pub stub_secs: Duration,
    pub stub_clients: Option<usize>,
    pub rerun: bool,
    pub stub_rate: bool,
    pub keep: bool,
    pub consumer_args: Vec<String>,
    pub consumer_env: Vec<(String, String)>,
    pub db_settings: Vec<(String, String)>,
    pub producer_args: Vec<String>,
    pub registry: Registry,
}

const TICK: Duration = Duration::from_millis(100);
const CONSUMER_GRACE: Duration = Duration::from_secs(40);
const START_TIMEOUT: Duration = Duration::from_secs(120);
const RERUN_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `spec` and returns its result record (the caller adds commit, time and machine).
pub async fn run(settings: &Settings, spec: &Spec) -> anyhow::Result<Value> {
    let tag = random_tag();
    let db = format!("pokeq_bench_{tag}");
    let prefix = format!("bench-{tag}");
    let dir = std::env::temp_dir().join(format!("pokeq-bench-{tag}"));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let admin = services::pg_connect(&services::database_url(
        settings.postgres_url.expose(),
        "postgres",
    )?)
    .await?;
    settings.registry.add(&db, &prefix);
    services::create_database(&admin, &db).await?;
    for (name, value) in &settings.db_settings {
        let valid = |t: &str| {
            t.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.".contains(c))
        };
        if !valid(name) || !valid(value) {
            bail!("--db-setting {name}={value}: use letters, digits, _ and .");
        }
        admin
            .batch_execute(&format!("alter database \"{db}\" set {name} = '{value}'"))
            .await
            .with_context(|| format!("cannot set {name}={value} on {db}"))?;
    }
    println!(
        "== {} : {} {}, {} consumer(s) x prefetch {}, added latency {} ms, {} payloads",
        spec.name(),
        spec.items,
        if spec.crawl {
            "pokemon listed and their links followed"
        } else {
            "items"
        },
        spec.consumers,
        spec.prefetch,
        spec.latency_ms,
        spec.payload()
    );
    println!(
        "   database {db}, prefix {prefix}, logs in {}",
        dir.display()
    );
    if let Ok(row) = admin
        .query_one(
            "select current_setting('max_connections')::int8,
                    (select count(*) from pg_stat_activity where backend_type = 'client backend')",
            &[],
        )
        .await
    {
        let (max, used): (i64, i64) = (row.get(0), row.get(1));
        println!(
            "   Postgres connections: {used} of {max} in use before the run (the producer and each consumer open their own pool)"
        );
    }
    let result = Run {
        settings,
        spec,
        db: db.clone(),
        prefix: prefix.clone(),
        dir,
    }
    .execute()
    .await;
    if settings.keep {
        println!("   kept database {db} and queues {prefix}.* (--keep)");
    } else {
        cleanup(settings, &admin, &db, &prefix).await;
    }
    settings.registry.remove(&db);
    result
}

/// Drops the database and deletes the queues and exchanges; failures are reported, not fatal.
pub async fn cleanup(settings: &Settings, admin: &Client, db: &str, prefix: &str) {
    if let Err(error) = services::drop_database(admin, db).await {
        eprintln!("   warning: {error:#}");
    }
    if let Err(error) = settings.mgmt.delete_prefix(prefix).await {
        eprintln!("   warning: cannot delete queues {prefix}.*: {error:#}");
    }
}

struct Run<'a> {
    settings: &'a Settings,
    spec: &'a Spec,
    db: String,
    prefix: String,
    dir: PathBuf,
}

/// Item counts by status.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    done: i64,
    failed: i64,
    queued: i64,
    pending: i64,
}

impl Counts {
    async fn read(pg: &Client) -> anyhow::Result<Self> {
        let row = pg
            .query_one(
                "select count(*) filter (where status = 'done'),
                        count(*) filter (where status = 'failed'),
                        count(*) filter (where status = 'queued'),
                        count(*) filter (where status = 'pending')
                 from ingest_items",
                &[],
            )
            .await
            .context("cannot count ingest_items")?;
        Ok(Self {
            done: row.get(0),
            failed: row.get(1),
            queued: row.get(2),
            pending: row.get(3),
        })
    }

    fn describe(&self) -> String {
        format!(
            "done={} failed={} queued={} pending={}",
            self.done, self.failed, self.queued, self.pending
        )
    }
}

/// What was sampled while the pipeline ran.
#[derive(Default)]
struct Samples {
    ready: Vec<u32>,
    /// Ready samples taken while items were still unfinished and the queue was empty.
    starved: u32,
    unacked: Vec<i64>,
    activity: BTreeMap<String, u64>,
    /// Active backends by `[wait kind] statement text`: where database time goes.
    statements: BTreeMap<String, u64>,
    activity_samples: u64,
    bench_queries: i64,
    timeline: Vec<Value>,
}

impl Run<'_> {
    fn command(&self, binary: &str) -> Command {
        let mut cmd = Command::new(self.settings.bin_dir.join(binary));
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy().into_owned();
            if key.starts_with("POKEQ_")
                || key.starts_with("STUB_")
                || matches!(
                    key.as_str(),
                    "POKEAPI_URL" | "DATABASE_URL" | "AMQP_URL" | "LOG_FORMAT"
                )
            {
                cmd.env_remove(key);
            }
        }
        let db_url = services::database_url(self.settings.postgres_url.expose(), &self.db)
            .unwrap_or_else(|_| self.settings.postgres_url.expose().to_owned());
        cmd.env("AMQP_URL", self.settings.amqp_url.expose())
            .env("DATABASE_URL", db_url)
            .env("POKEQ_PREFIX", &self.prefix)
            .env("POKEQ_QUEUE_TYPE", &self.settings.queue_type)
            // The stub is local: no politeness rate; API concurrency as the run asks.
            .env("POKEQ_RATE", "0")
            .env(
                "POKEQ_API_CONCURRENCY",
                self.spec.api_concurrency.to_string(),
            )
            .env("METRICS_ADDR", "off")
            .env("RUST_LOG", "info")
            .env("LOG_FORMAT", "text");
        cmd
    }

    async fn start_stub(&self) -> anyhow::Result<(Child, String)> {
        let mut cmd = self.command("pokeapi-stub");
        cmd.args(["--listen", "127.0.0.1:0", "--seed", "1"])
            .arg("--count")
            .arg(self.spec.items.to_string())
            .arg("--latency")
            .arg(format!("{}ms", self.spec.latency_ms));
        if let Some(samples) = &self.spec.samples {
            cmd.arg("--samples-dir").arg(samples);
        }
        if self.spec.flaky_percent > 0 {
            cmd.arg("--flaky-share")
                .arg(format!("{}", f64::from(self.spec.flaky_percent) / 100.0))
                .args(["--flaky-times", "2"]);
        }
        let (stub, stdout) = children::spawn("stub", cmd, &self.dir.join("stub.log"))?;
        let line = tokio::time::timeout(START_TIMEOUT, children::first_line(stdout))
            .await
            .map_err(|_| anyhow!("the stub printed no address within {START_TIMEOUT:?}"))?
            .map_err(|_| anyhow!("the stub exited before listening\n{}", stub.log_tail(20)))?;
        let base = line
            .split_whitespace()
            .find(|word| word.starts_with("http://"))
            .with_context(|| format!("no URL in the stub's first line {line:?}"))?
            .to_owned();
        Ok((stub, base))
    }

    async fn execute(self) -> anyhow::Result<Value> {
        let spec = self.spec;
        let settings = self.settings;
        let items = i64::from(spec.items);
        let (mut stub, base) = self.start_stub().await?;

        let mut consumers = Vec::new();
        for i in 1..=spec.consumers {
            let mut cmd = self.command("consumer");
            cmd.env("POKEAPI_URL", &base)
                .arg("--prefetch")
                .arg(spec.prefetch.to_string())
                .args(&settings.consumer_args)
                .envs(settings.consumer_env.iter().map(|(k, v)| (k, v)));
            let name = format!("consumer-{i}");
            let (child, stdout) =
                children::spawn(&name, cmd, &self.dir.join(format!("{name}.log")))?;
            drop(children::all_output(stdout));
            consumers.push(child);
        }

        // Wait until every consumer consumes, so the producer starts against a ready pipeline.
        let jobs = format!("{}.jobs", self.prefix);
        let mut probe = QueueProbe::connect(settings.amqp_url.expose(), jobs.clone()).await?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            check_alive(&mut consumers, "during start-up")?;
            if let Some(depth) = probe.depth().await?
                && depth.consumers >= spec.consumers
            {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "the consumers were not all consuming {jobs} within {START_TIMEOUT:?}\n{}",
                    consumers[0].log_tail(20)
                );
            }
            tokio::time::sleep(TICK).await;
        }

        let db_url = services::database_url(settings.postgres_url.expose(), &self.db)?;
        let pg = services::pg_connect(&db_url).await?;
        let bench_backend: i32 = pg.query_one("select pg_backend_pid()", &[]).await?.get(0);
        let synchronous_commit: String = pg.query_one("show synchronous_commit", &[]).await?.get(0);
        // The machine's broker runs at the default priority; a niced Erlang node is someone
        // else's (another session's test cluster) and counts as foreign load below.
        let beam: Vec<i32> = procfs::scan_all()
            .into_iter()
            .filter(|(_, stat)| stat.comm == "beam.smp" && stat.nice <= 0)
            .map(|(pid, _)| pid)
            .collect();
        let pg_before = PgCounters::read(&pg, &self.db).await?;

        // t0: the producer starts.
        let mut sampler = Sampler::start();
        let machine_before = procfs::machine_cpu();
        let self_before = procfs::self_cpu_s();
        let t0 = Instant::now();
        let t0_unix = unix_now();
        let mut cmd = self.command("producer");
        cmd.env("POKEAPI_URL", &base).args(&settings.producer_args);
        if spec.crawl {
            cmd.args(CRAWL_ARGS);
        }
        let (mut producer, stdout) =
            children::spawn("producer", cmd, &self.dir.join("producer.log"))?;
        let producer_stdout = children::all_output(stdout);

        let mut samples = Samples::default();
        let mut producer_exit: Option<Exit> = None;
        let mut producer_hwm_kb = 0;
        let mut last_progress = (-1_i64, Instant::now());
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n: u64 = 0;
        let mut settled_ticks = 0;
        let counts = loop {
            tick.tick().await;
            n += 1;
            sampler.tick();
            if producer_exit.is_none() {
                if let Some(kb) = procfs::vm_hwm_kb(producer.pid) {
                    producer_hwm_kb = producer_hwm_kb.max(kb);
                }
                if let Some(exit) = producer.try_wait()? {
                    if !exit.success() {
                        bail!(
                            "the producer failed ({})\n{}",
                            exit.describe(),
                            producer.log_tail(30)
                        );
                    }
                    producer_exit = Some(exit);
                }
            }
            check_alive(&mut consumers, "while items were pending")?;
            if let Some(exit) = stub.try_wait()? {
                bail!(
                    "the stub exited ({})\n{}",
                    exit.describe(),
                    stub.log_tail(20)
                );
            }
            let counts = Counts::read(&pg).await?;
            samples.bench_queries += 1;
            let finished = counts.done + counts.failed;
            let unfinished = if spec.crawl {
                counts.pending + counts.queued > 0
            } else {
                finished < items
            };
            let mut jobs_ready = None;
            if let Some(depth) = probe.depth().await? {
                samples.ready.push(depth.ready);
                jobs_ready = Some(depth.ready);
                if depth.ready == 0 && unfinished {
                    samples.starved += 1;
                }
            }
            sample_activity(&pg, &self.db, &mut samples).await?;
            if n.is_multiple_of(10) {
                let mgmt = settings.mgmt.queue_depth(&jobs).await.unwrap_or_default();
                samples.unacked.push(mgmt.unacked);
                samples.timeline.push(json!({
                    "t": round(t0.elapsed().as_secs_f64(), 1),
                    "done": counts.done,
                    "queued": counts.queued,
                    "pending": counts.pending,
                    "ready": samples.ready.last(),
                    "mgmt_ready": mgmt.ready,
                    "mgmt_unacked": mgmt.unacked,
                }));
            }
            if finished != last_progress.0 {
                last_progress = (finished, Instant::now());
            }
            if spec.crawl {
                let quiet = producer_exit.is_some() && !unfinished && jobs_ready == Some(0);
                settled_ticks = if quiet { settled_ticks + 1 } else { 0 };
                if settled_ticks >= CRAWL_SETTLE_TICKS {
                    break counts;
                }
            } else if producer_exit.is_some()
                && (finished >= items || counts.pending + counts.queued == 0)
            {
                break counts;
            }
            if last_progress.1.elapsed() > settings.stall {
                bail!(
                    "stalled: no item finished for {:?}: {} of {items}; jobs ready={}; producer {}; \
                     logs in {}",
                    settings.stall,
                    counts.describe(),
                    samples.ready.last().map_or("?".to_owned(), u32::to_string),
                    match producer_exit {
                        Some(exit) => format!("exited ({})", exit.describe()),
                        None => "still running".to_owned(),
                    },
                    self.dir.display()
                );
            }
        };

        // t1: everything finished.
        let window_s = t0.elapsed().as_secs_f64();
        sampler.tick();
        let machine_after = procfs::machine_cpu();
        let bench_cpu_s = procfs::self_cpu_s() - self_before;
        let tck = procfs::clk_tck();
        let secs = |ticks: u64| ticks as f64 / tck;
        let consumer_cpu: Vec<f64> = consumers
            .iter()
            .map(|c| secs(sampler.ticks_of(c.pid)))
            .collect();
        let consumer_hwm_kb: Vec<u64> = consumers
            .iter()
            .map(|c| procfs::vm_hwm_kb(c.pid).unwrap_or(0))
            .collect();
        let stub_cpu = secs(sampler.ticks_of(stub.pid));
        let postgres_cpu = secs(sampler.ticks_named("postgres", &[bench_backend]));
        let bench_backend_cpu = secs(sampler.ticks_of(bench_backend));
        let rabbit_cpu = secs(beam.iter().map(|pid| sampler.ticks_of(*pid)).sum());
        let machine_raw = secs(machine_after.busy.saturating_sub(machine_before.busy));
        let mut ours: Vec<i32> = consumers.iter().map(|c| c.pid).collect();
        ours.extend([stub.pid, producer.pid, std::process::id() as i32]);
        let niced_cpu = secs(sampler.ticks_niced(&ours, &["postgres"]));
        let machine_cpu = (machine_raw - niced_cpu).max(0.0);
        let producer_exit = producer_exit.context("the producer has not exited")?;
        let producer_s = producer_exit.at.duration_since(t0).as_secs_f64();
        let producer_summary = tokio::time::timeout(Duration::from_secs(5), producer_stdout)
            .await
            .ok()
            .and_then(Result::ok)
            .and_then(|text| Summary::parse(&text));

        // A crawl ends with whichever resource committed last; every item's `done` edge is its
        // commit.
        let last_commit_sql = if spec.crawl {
            "select extract(epoch from max(updated_at))::float8 from ingest_items
             where status = 'done'"
        } else {
            "select extract(epoch from max(ingested_at))::float8 from pokemon"
        };
        let row = pg.query_one(last_commit_sql, &[]).await?;
        let last_commit: Option<f64> = row.get(0);
        let by_resource: serde_json::Map<String, Value> = pg
            .query(
                "select resource, count(*) from ingest_items where status = 'done'
                 group by 1 order by 1",
                &[],
            )
            .await?
            .iter()
            .map(|row| (row.get::<_, String>(0), json!(row.get::<_, i64>(1))))
            .collect();
        let e2e_s = last_commit.map_or(window_s, |at| at - t0_unix);
        let latency = pg
            .query_one(
                "select count(*) filter (where i.queued_at is not null),
                        count(*) filter (where i.queued_at is null),
                        percentile_cont(array[0.5, 0.95, 0.99]::float8[]) within group
                            (order by extract(epoch from p.ingested_at - i.queued_at)::float8 * 1000)
                            filter (where i.queued_at is not null),
                        max(extract(epoch from p.ingested_at - i.queued_at)::float8 * 1000)
                 from pokemon p join ingest_items i on i.resource = 'pokemon' and i.id = p.id",
                &[],
            )
            .await?;
        let latency_n: i64 = latency.get(0);
        let latency_missing: i64 = latency.get(1);
        let pcts: Option<Vec<f64>> = latency.get(2);
        let latency_max: Option<f64> = latency.get(3);
        let pct = |i: usize| pcts.as_ref().and_then(|p| p.get(i)).map(|v| round(*v, 1));

        // Consumers: VmHWM was read above; now SIGTERM and wait.
        for consumer in &consumers {
            consumer.signal(libc::SIGTERM);
        }
        let mut consumers_clean = true;
        for consumer in &mut consumers {
            let exit = consumer.stop(CONSUMER_GRACE).await?;
            if !exit.success() {
                consumers_clean = false;
                eprintln!(
                    "   warning: {} ended with {}\n{}",
                    consumer.name,
                    exit.describe(),
                    consumer.log_tail(10)
                );
            }
        }
        probe.close().await;
        // Backends flush their statistics when they exit.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let pg_delta = PgCounters::read(&pg, &self.db).await?.since(&pg_before);

        let rerun = if settings.rerun {
            Some(self.rerun(&base).await?)
        } else {
            None
        };

        let stub_alone = if settings.stub_rate {
            let ids = stubrate::listed_ids(&base, spec.items).await?;
            let clients = settings
                .stub_clients
                .unwrap_or(spec.consumers as usize * usize::from(spec.in_flight()));
            Some(stubrate::measure(&base, ids, clients, settings.stub_secs, stub.pid).await?)
        } else {
            None
        };
        let stub_hwm_kb = procfs::vm_hwm_kb(stub.pid).unwrap_or(0);
        stub.stop(Duration::from_secs(10)).await?;

        // Figures.
        let done = counts.done.max(1) as f64;
        let per_1000 = |cpu_s: f64| round(cpu_s * 1000.0 / done, 3);
        let consumers_cpu: f64 = consumer_cpu.iter().sum();
        let bench_total = bench_cpu_s + bench_backend_cpu;
        let attributed = producer_exit.cpu_s
            + consumers_cpu
            + stub_cpu
            + rabbit_cpu
            + postgres_cpu
            + bench_total;
        let items_per_s = counts.done as f64 / e2e_s.max(1e-9);
        let in_flight = spec.consumers as f64 * f64::from(spec.in_flight());
        let bound = (spec.latency_ms > 0).then(|| {
            let rate = in_flight / (spec.latency_ms as f64 / 1000.0);
            json!({
                "in_flight": in_flight,
                "items_per_s": round(rate, 1),
                "achieved": round(items_per_s / rate, 3),
            })
        });
        let xacts = (pg_delta.xact_commit - samples.bench_queries).max(0);
        let busy_backends: f64 = samples
            .activity
            .iter()
            .filter(|(state, _)| state.starts_with("active"))
            .map(|(_, count)| *count as f64)
            .sum::<f64>()
            / samples.activity_samples.max(1) as f64;
        let activity: serde_json::Map<String, Value> = samples
            .activity
            .iter()
            .map(|(key, count)| {
                (
                    key.clone(),
                    json!(round(
                        *count as f64 / samples.activity_samples.max(1) as f64,
                        2
                    )),
                )
            })
            .collect();
        let mut statements: Vec<(&String, &u64)> = samples.statements.iter().collect();
        statements.sort_by(|a, b| b.1.cmp(a.1));
        let statements: Vec<Value> = statements
            .into_iter()
            .take(8)
            .map(|(statement, count)| {
                json!({
                    "statement": statement,
                    "active_backends": round(*count as f64 / samples.activity_samples.max(1) as f64, 3),
                })
            })
            .collect();
        let mean = |values: &[f64]| {
            if values.is_empty() {
                None
            } else {
                Some(round(values.iter().sum::<f64>() / values.len() as f64, 1))
            }
        };
        let ready: Vec<f64> = samples.ready.iter().map(|r| f64::from(*r)).collect();
        let unacked: Vec<f64> = samples.unacked.iter().map(|u| *u as f64).collect();
        let mb = |kb: u64| round(kb as f64 / 1024.0, 1);

        // A crawl's items are those of every resource it reached; `ok` needs more than the
        // pokemon (the links were followed) and no failure.
        let (record_items, ok) = if spec.crawl {
            (
                counts.done + counts.failed,
                counts.failed == 0 && counts.done > items && consumers_clean,
            )
        } else {
            (items, counts.done == items && consumers_clean)
        };
        let mut record = json!({
            "scenario": spec.name(),
            "group": spec.group,
            "items": record_items,
            "consumers": spec.consumers,
            "prefetch": spec.prefetch,
            "api_concurrency": spec.api_concurrency,
            "added_latency_ms": spec.latency_ms,
            "payload": spec.payload(),
            "queue_type": settings.queue_type,
            "consumer_args": settings.consumer_args,
            "consumer_env": settings.consumer_env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
            "producer_args": settings.producer_args,
            "db_settings": settings.db_settings.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
            "ok": ok,
            "done": counts.done,
            "failed": counts.failed,
            "producer": producer_summary.map(|s| json!({
                "listed": s.listed, "published": s.published, "skipped": s.skipped, "pages": s.pages,
            })),
            "producer_s": round(producer_s, 3),
            "foreign_load_cores": round(niced_cpu / window_s.max(1e-9), 2),
            "e2e_s": round(e2e_s, 3),
            "items_per_s": round(items_per_s, 1),
            "publish_to_commit_ms": {
                "p50": pct(0), "p95": pct(1), "p99": pct(2),
                "max": latency_max.map(|v| round(v, 1)),
                "n": latency_n, "missing_queued_at": latency_missing,
            },
            "cpu_s": {
                "window_s": round(window_s, 3),
                "machine": round(machine_cpu, 3),
                "machine_raw": round(machine_raw, 3),
                "foreign_niced": round(niced_cpu, 3),
                "producer": round(producer_exit.cpu_s, 3),
                "consumers": consumer_cpu.iter().map(|c| round(*c, 3)).collect::<Vec<_>>(),
                "stub": round(stub_cpu, 3),
                "rabbitmq": round(rabbit_cpu, 3),
                "postgres": round(postgres_cpu, 3),
                "bench": round(bench_total, 3),
            },
            "cpu_s_per_1000_items": {
                "machine": per_1000(machine_cpu),
                "machine_raw": per_1000(machine_raw),
                "foreign_niced": per_1000(niced_cpu),
                "producer": per_1000(producer_exit.cpu_s),
                "consumers": per_1000(consumers_cpu),
                "stub": per_1000(stub_cpu),
                "rabbitmq": per_1000(rabbit_cpu),
                "postgres": per_1000(postgres_cpu),
                "bench": per_1000(bench_total),
                "other": per_1000((machine_cpu - attributed).max(0.0)),
            },
            "peak_rss_mb": {
                // Not ru_maxrss: across exec it keeps the high-water mark of the forked copy of
                // this (large) process.
                "producer": mb(producer_hwm_kb),
                "consumers": consumer_hwm_kb.iter().map(|kb| mb(*kb)).collect::<Vec<_>>(),
                "consumer_max": mb(consumer_hwm_kb.iter().copied().max().unwrap_or(0)),
                "stub": mb(stub_hwm_kb),
            },
            "concurrency_bound": bound,
            "rerun": rerun.map(|(secs, summary)| json!({
                "s": round(secs, 3),
                "published": summary.map(|s| s.published),
                "listed": summary.map(|s| s.listed),
            })),
            "stub_alone": stub_alone.map(|rate| json!({
                "clients": rate.clients,
                "secs": round(rate.secs, 2),
                "rps": round(rate.rps(), 1),
                "errors": rate.errors,
                "mb_per_s": round(rate.bytes as f64 / rate.secs.max(1e-9) / 1e6, 1),
                "mean_body_kb": round(rate.bytes as f64 / rate.requests.max(1) as f64 / 1e3, 1),
                "stub_cpu_ms_per_req": round(rate.stub_cpu_s * 1000.0 / rate.requests.max(1) as f64, 3),
                "client_cpu_ms_per_req": round(rate.client_cpu_s * 1000.0 / rate.requests.max(1) as f64, 3),
                "pipeline_fraction": round(items_per_s / rate.rps().max(1e-9), 3),
            })),
            "queue": {
                "samples": samples.ready.len(),
                "ready_mean": mean(&ready),
                "ready_max": samples.ready.iter().max(),
                "starved_fraction": round(f64::from(samples.starved) / samples.ready.len().max(1) as f64, 3),
                "mgmt_unacked_mean": mean(&unacked),
            },
            "postgres": {
                "synchronous_commit": synchronous_commit,
                "xacts": xacts,
                "xacts_per_item": round(xacts as f64 / done, 2),
                "active_ms_per_xact": round(pg_delta.active_ms / xacts.max(1) as f64, 3),
                "busy_backends_mean": round(busy_backends, 2),
                "busy_ms_per_item": round(busy_backends * e2e_s * 1000.0 / done, 3),
                "wal_syncs_per_item": round(pg_delta.wal_sync as f64 / done, 3),
                "wal_kb_per_item": round(pg_delta.wal_bytes / 1024.0 / done, 2),
                "activity": activity,
                "statements": statements,
            },
            "timeline": samples.timeline,
        });
        // Beside the json! above, whose nesting is at the macro's recursion limit.
        record["pokemon_served"] = json!(spec.items);
        record["crawl"] = json!(spec.crawl);
        record["done_by_resource"] = Value::Object(by_resource);
        Ok(record)
    }

    /// The producer again on the finished database: it must publish nothing, fast.
    async fn rerun(&self, base: &str) -> anyhow::Result<(f64, Option<Summary>)> {
        let mut cmd = self.command("producer");
        cmd.env("POKEAPI_URL", base)
            .args(&self.settings.producer_args);
        if self.spec.crawl {
            cmd.args(CRAWL_ARGS);
        }
        let start = Instant::now();
        let (mut producer, stdout) =
            children::spawn("producer-rerun", cmd, &self.dir.join("producer-rerun.log"))?;
        let output = children::all_output(stdout);
        let exit = producer
            .wait(RERUN_TIMEOUT)
            .await?
            .with_context(|| format!("the rerun did not finish within {RERUN_TIMEOUT:?}"))?;
        if !exit.success() {
            bail!(
                "the rerun failed ({})\n{}",
                exit.describe(),
                producer.log_tail(30)
            );
        }
        let secs = exit.at.duration_since(start).as_secs_f64();
        let summary = tokio::time::timeout(Duration::from_secs(5), output)
            .await
            .ok()
            .and_then(Result::ok)
            .and_then(|text| Summary::parse(&text));
        Ok((secs, summary))
    }
}

fn check_alive(consumers: &mut [Child], when: &str) -> anyhow::Result<()> {
    for consumer in consumers.iter_mut() {
        if let Some(exit) = consumer.try_wait()? {
            bail!(
                "{} exited {when} ({})\n{}",
                consumer.name,
                exit.describe(),
                consumer.log_tail(20)
            );
        }
    }
    Ok(())
}

/// One look at what this database's client backends are doing.
async fn sample_activity(pg: &Client, db: &str, samples: &mut Samples) -> anyhow::Result<()> {
    let rows = pg
        .query(
            "select coalesce(state, ''), coalesce(wait_event_type, ''), coalesce(wait_event, ''),
                    case when state = 'active'
                         then left(regexp_replace(query, '\\s+', ' ', 'g'), 60) else '' end,
                    count(*)
             from pg_stat_activity
             where datname = $1 and pid <> pg_backend_pid() and backend_type = 'client backend'
             group by 1, 2, 3, 4",
            &[&db],
        )
        .await?;
    samples.bench_queries += 1;
    samples.activity_samples += 1;
    for row in rows {
        let state: String = row.get(0);
        let kind: String = row.get(1);
        let event: String = row.get(2);
        let query: String = row.get(3);
        let count: i64 = row.get(4);
        if state == "active" {
            let on = if kind.is_empty() {
                "CPU"
            } else {
                kind.as_str()
            };
            *samples
                .statements
                .entry(format!("[{on}] {query}"))
                .or_default() += u64::try_from(count).unwrap_or(0);
        }
        let key = if state == "active" {
            if kind.is_empty() {
                "active (CPU)".to_owned()
            } else {
                format!("active {kind}:{event}")
            }
        } else {
            state
        };
        *samples.activity.entry(key).or_default() += u64::try_from(count).unwrap_or(0);
    }
    Ok(())
}

/// The producer's last stdout line: `listed=<n> published=<n> skipped=<n> pages=<n>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    pub listed: u64,
    pub published: u64,
    pub skipped: u64,
    pub pages: u64,
}

impl Summary {
    pub fn parse(text: &str) -> Option<Self> {
        let line = text.lines().rev().find(|l| l.contains("listed="))?;
        let mut summary = Summary::default();
        for pair in line.split_whitespace() {
            let (key, value) = pair.split_once('=')?;
            let value: u64 = value.parse().ok()?;
            match key {
                "listed" => summary.listed = value,
                "published" => summary.published = value,
                "skipped" => summary.skipped = value,
                "pages" => summary.pages = value,
                _ => {}
            }
        }
        Some(summary)
    }
}

pub fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10_f64.powi(decimals);
    (value * scale).round() / scale
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Eight hex digits, different on every call.
fn random_tag() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.write_u32(std::process::id());
    format!("{:08x}", hasher.finish() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producer_summary_line() {
        let text = "something\nlisted=1351 published=0 skipped=1351 pages=14\n";
        assert_eq!(
            Summary::parse(text),
            Some(Summary {
                listed: 1351,
                published: 0,
                skipped: 1351,
                pages: 14
            })
        );
        assert_eq!(Summary::parse("nothing here"), None);
    }

    #[test]
    fn names_and_tags() {
        let spec = Spec {
            group: "b".into(),
            items: 20000,
            consumers: 2,
            prefetch: 64,
            latency_ms: 50,
            api_concurrency: 64,
            samples: None,
            flaky_percent: 0,
            crawl: false,
        };
        assert_eq!(spec.name(), "b-20000-k2-p64-50ms");
        assert_eq!(random_tag().len(), 8);
        assert_ne!(random_tag(), random_tag());
    }
}
