//! One scenario's run: a fresh database and queue prefix on the suite's services, the stub, the
//! producer and consumers as processes, a monitor that watches them and Postgres, and the final
//! verification straight from Postgres and the broker.

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use lapin::options::QueueDeclareOptions;
use lapin::types::{FieldTable, ShortString};
use pokeq_shared::config::QueueType;
use pokeq_shared::store::StatusCounts;
use pokeq_shared::topology::{RetryDelays, Topology};
use tokio_postgres::{Client, NoTls};

use crate::counter::Counter;
use crate::infra::{Postgres, Rabbit, spare_port, tail};

/// A broker node lost mid-run, at the database's clock, for the recovery figures.
pub struct Loss {
    pub what: String,
    /// `clock_timestamp()` of the scenario's database just before the node went, in seconds.
    pub at: f64,
}
use crate::proc::{Bins, Proc, describe};

/// The services and settings every scenario shares.
pub struct Infra {
    pub bins: Bins,
    pub root: PathBuf,
    /// One node, or the nodes of a cluster (`--cluster`).
    pub rabbits: Vec<Rabbit>,
    pub pg: Postgres,
    pub http: reqwest::Client,
    pub seed: u64,
    /// Longest wait for any one phase of a scenario.
    pub timeout: Duration,
}

impl Infra {
    /// Brings back whatever a previous scenario left stopped.
    pub async fn ensure_up(&mut self) -> Result<()> {
        if !self.pg.running() {
            self.pg.start_again().await?;
        }
        for rabbit in &mut self.rabbits {
            if !rabbit.running() {
                rabbit.start_again().await?;
            }
        }
        Ok(())
    }

    /// `AMQP_URL` of the broker: its node's URL, or every node's, comma-separated.
    pub fn amqp_url(&self) -> String {
        crate::cluster::url(&self.rabbits)
    }
}

/// What the stub serves in a scenario.
pub struct Spec {
    pub count: u32,
    pub latency: Duration,
    pub fault_rate: f64,
    /// The consumers' `--retry-delays` (their wait queues are checked empty at the end).
    pub retry_delays: &'static str,
    /// Flags every consumer of the scenario gets (but `--retry-delays`, `--shutdown-grace`).
    pub consumer_args: Vec<String>,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    pub pending: i64,
    pub queued: i64,
    pub done: i64,
    pub failed: i64,
    pub total: i64,
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "done {} queued {} pending {} failed {}",
            self.done, self.queued, self.pending, self.failed
        )
    }
}

/// A scenario's figures and verdict.
pub struct Report {
    pub name: &'static str,
    pub items: i64,
    pub kills: u32,
    pub sigterms: u32,
    pub restarts: String,
    /// Detail requests the stub received, counted on the wire by the suite's proxy: exact.
    pub api_requests: u64,
    /// The same as the consumers count them (`pokeq_api_requests_total` from their `/metrics`).
    pub consumer_counted: u64,
    /// False when some consumer died or stopped mid-run after its last scrape: then
    /// `consumer_counted` is a lower bound.
    pub consumer_counted_exact: bool,
    /// Faults the stub injected (counted from its debug log).
    pub faults: u64,
    pub wall: Duration,
    pub failures: Vec<String>,
    /// The ends of the relevant logs, when the scenario failed.
    pub logs: String,
    /// Per node lost: from the loss to the first commit after it, and the longest pause in
    /// commits after it.
    pub recoveries: Vec<String>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// Detail requests beyond one per item.
    pub fn extra(&self) -> i64 {
        self.api_requests as i64 - self.items
    }

    pub fn consumer_counted(&self) -> String {
        if self.consumer_counted_exact {
            self.consumer_counted.to_string()
        } else {
            format!(">={}", self.consumer_counted)
        }
    }

    pub fn setup_failed(name: &'static str, error: anyhow::Error, started: Instant) -> Self {
        Self {
            name,
            items: 0,
            kills: 0,
            sigterms: 0,
            restarts: "-".into(),
            api_requests: 0,
            consumer_counted: 0,
            consumer_counted_exact: false,
            faults: 0,
            wall: started.elapsed(),
            failures: vec![format!("setup: {error:#}")],
            logs: String::new(),
            recoveries: Vec::new(),
        }
    }
}

pub struct Run<'a> {
    pub infra: &'a mut Infra,
    pub name: &'static str,
    pub n: i64,
    count: u32,
    logs: PathBuf,
    prefix: String,
    db_url: String,
    api_url: String,
    retry_delays: &'static str,
    consumer_args: Vec<String>,
    stub: Proc,
    counter: Counter,
    producer: Option<Proc>,
    producer_checked: bool,
    pub consumers: Vec<Proc>,
    retired: Vec<Proc>,
    serial: u32,
    pub started: Instant,
    pub failures: Vec<String>,
    pub kills: u32,
    pub sigterms: u32,
    pub restarts: String,
    /// Server logs worth showing if the scenario fails.
    pub infra_logs: Vec<PathBuf>,
    pub counts: Counts,
    pub db_up: bool,
    /// Broker nodes lost mid-run.
    pub losses: Vec<Loss>,
    last_progress: Instant,
    last_scrape: Instant,
    recoveries: Vec<String>,
}

/// Counts every write to `pokemon`, so that each row can be shown written exactly once.
const COUNT_WRITES: &str = "
    create table if not exists pokemon_writes (id integer not null, at timestamptz default now());
    create or replace function chaos_count_pokemon_write() returns trigger language plpgsql as $$
    begin insert into pokemon_writes (id) values (new.id); return new; end $$;
    drop trigger if exists chaos_count_writes on pokemon;
    create trigger chaos_count_writes after insert or update on pokemon
    for each row execute function chaos_count_pokemon_write();";

async fn connect(url: &str) -> Result<Client> {
    let (client, connection) =
        tokio::time::timeout(Duration::from_secs(3), tokio_postgres::connect(url, NoTls))
            .await
            .context("no answer from Postgres within 3 s")??;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

impl<'a> Run<'a> {
    /// A fresh database (migrated, with the write counter) and prefix, and the stub running.
    pub async fn start(infra: &'a mut Infra, name: &'static str, spec: Spec) -> Result<Self> {
        let tag = format!("{:08x}", rand::random::<u32>());
        let logs = infra.root.join(name);
        std::fs::create_dir_all(&logs)?;
        let prefix = format!("chaos-{name}-{tag}");
        let db_url = infra
            .pg
            .url(&format!("chaos_{}_{tag}", name.replace('-', "_")));
        let config = pokeq_shared::store::parse_url(&db_url)?;
        let store = pokeq_shared::store::Store::open(&config, &db_url, 1, None)
            .await
            .context("cannot create and migrate the scenario's database")?;
        drop(store);
        connect(&db_url)
            .await?
            .batch_execute(COUNT_WRITES)
            .await
            .context("cannot install the write counter")?;

        let port = spare_port()?;
        let args: Vec<String> = [
            "--listen".to_owned(),
            format!("127.0.0.1:{port}"),
            "--count".into(),
            spec.count.to_string(),
            "--seed".into(),
            infra.seed.to_string(),
            "--latency".into(),
            format!("{}ms", spec.latency.as_millis()),
            "--fault-rate".into(),
            spec.fault_rate.to_string(),
        ]
        .into();
        let stub = Proc::spawn(
            &infra.bins,
            "pokeapi-stub",
            "stub",
            &args,
            // Injected faults are logged at debug: the suite counts them.
            &[("RUST_LOG", "info,pokeapi_stub=debug".to_owned())],
            &logs,
            None,
        )?;
        let counter = Counter::start(std::net::SocketAddr::from(([127, 0, 0, 1], port))).await?;
        let api_url = format!("http://{}/api/v2", counter.addr);
        let mut run = Self {
            infra,
            name,
            n: i64::from(spec.count),
            count: spec.count,
            logs,
            prefix,
            db_url,
            api_url,
            retry_delays: spec.retry_delays,
            consumer_args: spec.consumer_args,
            stub,
            counter,
            producer: None,
            producer_checked: false,
            consumers: Vec::new(),
            retired: Vec::new(),
            serial: 0,
            started: Instant::now(),
            failures: Vec::new(),
            kills: 0,
            sigterms: 0,
            restarts: "-".into(),
            infra_logs: Vec::new(),
            counts: Counts::default(),
            db_up: true,
            losses: Vec::new(),
            last_progress: Instant::now(),
            last_scrape: Instant::now(),
            recoveries: Vec::new(),
        };
        run.wait_stub().await?;
        run.say(&format!(
            "{} items, stub latency {:?}, fault rate {}, database {}, prefix {}",
            spec.count,
            spec.latency,
            spec.fault_rate,
            run.db_url.rsplit('/').next().unwrap_or_default(),
            run.prefix
        ));
        Ok(run)
    }

    async fn wait_stub(&mut self) -> Result<()> {
        let url = format!("{}/pokemon?limit=1", self.api_url);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(response) = self.infra.http.get(&url).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            if let Some(status) = self.stub.poll() {
                bail!(
                    "the stub exited ({})\n{}",
                    describe(status),
                    self.stub.tails(20)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "the stub did not answer within 20 s\n{}",
                    self.stub.tails(20)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The jobs queue of this scenario.
    pub fn jobs_queue(&self) -> String {
        format!("{}.jobs", self.prefix)
    }

    /// Records that a broker node is about to go (`what`), at the database's clock.
    pub async fn node_lost(&mut self, what: String) -> Result<()> {
        let at: f64 = connect(&self.db_url)
            .await?
            .query_one("select extract(epoch from clock_timestamp())::float8", &[])
            .await?
            .get(0);
        self.losses.push(Loss { what, at });
        Ok(())
    }

    /// Waits until some item is `pending`: listed by the producer, its job not yet confirmed
    /// (the window of a page's publishes and confirms), polling one connection as fast as it
    /// answers. Returns the database's clock then, in seconds.
    pub async fn wait_publishing(&mut self) -> Result<f64> {
        let client = connect(&self.db_url).await?;
        let deadline = Instant::now() + self.infra.timeout;
        loop {
            let row = client
                .query_one(
                    "select exists(select 1 from ingest_items where status = 'pending'),
                            extract(epoch from clock_timestamp())::float8",
                    &[],
                )
                .await?;
            if row.get::<_, bool>(0) {
                return Ok(row.get(1));
            }
            if Instant::now() > deadline || !self.producer_running() {
                bail!("the producer had no job unconfirmed to catch");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Lines of the producer's log that contain `text`.
    pub fn producer_log_lines(&self, text: &str) -> Vec<String> {
        self.producer
            .as_ref()
            .and_then(|producer| std::fs::read_to_string(&producer.stderr).ok())
            .map(|log| {
                log.lines()
                    .filter(|line| line.contains(text))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// For each node lost: seconds from the loss to the first write of a `pokemon` row after
    /// it, and the longest pause between writes in the minute after it (the loss included as
    /// the first point). Fails the scenario for a loss no write followed.
    pub async fn measure_recoveries(&mut self) -> Result<()> {
        let client = connect(&self.db_url).await?;
        for loss in &self.losses {
            let rows = client
                .query(
                    "select extract(epoch from at)::float8 from pokemon_writes
                     where at > to_timestamp($1) and at <= to_timestamp($1) + interval '60 s'
                     order by at",
                    &[&loss.at],
                )
                .await?;
            let times: Vec<f64> = rows.iter().map(|row| row.get(0)).collect();
            let Some(first) = times.first() else {
                self.failures.push(format!(
                    "{}: no item was stored in the minute after it",
                    loss.what
                ));
                continue;
            };
            let mut longest = first - loss.at;
            for pair in times.windows(2) {
                longest = longest.max(pair[1] - pair[0]);
            }
            let line = format!(
                "{}: first commit after {:.2}s, longest pause {:.2}s",
                loss.what,
                first - loss.at,
                longest
            );
            self.say(&line);
            self.recoveries.push(line);
        }
        Ok(())
    }

    pub fn say(&self, message: &str) {
        println!(
            "[{:<14} {:>6.1}s] {message}",
            self.name,
            self.started.elapsed().as_secs_f64()
        );
    }

    fn env(&self, metrics: String) -> Vec<(&'static str, String)> {
        vec![
            ("AMQP_URL", self.infra.amqp_url()),
            ("DATABASE_URL", self.db_url.clone()),
            ("POKEAPI_URL", self.api_url.clone()),
            ("POKEQ_PREFIX", self.prefix.clone()),
            ("POKEQ_RATE", "0".into()),
            ("METRICS_ADDR", metrics),
        ]
    }

    /// Starts a consumer with the scenario's flags and the given `--shutdown-grace`.
    pub fn spawn_consumer(&mut self, grace: Duration) -> Result<()> {
        self.serial += 1;
        let port = spare_port()?;
        let mut args = self.consumer_args.clone();
        args.extend([
            "--retry-delays".to_owned(),
            self.retry_delays.to_owned(),
            "--shutdown-grace".to_owned(),
            format!("{}ms", grace.as_millis()),
        ]);
        let env = self.env(format!("127.0.0.1:{port}"));
        let mut consumer = Proc::spawn(
            &self.infra.bins,
            "consumer",
            &format!("consumer-{}", self.serial),
            &args,
            &env,
            &self.logs,
            Some(port),
        )?;
        consumer.grace = grace;
        self.consumers.push(consumer);
        Ok(())
    }

    pub fn spawn_producer(&mut self, args: &[&str]) -> Result<()> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let env = self.env("off".into());
        self.producer = Some(Proc::spawn(
            &self.infra.bins,
            "producer",
            "producer",
            &args,
            &env,
            &self.logs,
            None,
        )?);
        self.say(&format!("producer started ({})", args.join(" ")));
        Ok(())
    }

    pub fn producer_running(&mut self) -> bool {
        self.producer
            .as_mut()
            .is_some_and(|producer| producer.poll().is_none())
    }

    pub async fn counts(&self) -> Result<Counts> {
        let client = connect(&self.db_url).await?;
        let rows = client
            .query(
                "select status, count(*) from ingest_items group by status",
                &[],
            )
            .await?;
        let s = StatusCounts::from_rows(&rows);
        let counts = Counts {
            pending: s.pending,
            queued: s.queued,
            done: s.done,
            failed: s.failed,
            total: s.pending + s.queued + s.done + s.failed,
        };
        Ok(counts)
    }

    /// One round of watching: item counts, unexpected exits, metrics, a progress line.
    pub async fn tick(&mut self) {
        match self.counts().await {
            Ok(counts) => {
                self.counts = counts;
                self.db_up = true;
            }
            Err(_) => self.db_up = false,
        }
        self.check_exits();
        if self.last_scrape.elapsed() >= Duration::from_secs(1) {
            self.last_scrape = Instant::now();
            for consumer in &mut self.consumers {
                consumer.scrape(&self.infra.http).await;
            }
        }
        if self.last_progress.elapsed() >= Duration::from_secs(3) {
            self.last_progress = Instant::now();
            let db = if self.db_up { "" } else { " (Postgres down)" };
            let producer = if self.producer_running() {
                ", producer running"
            } else {
                ""
            };
            self.say(&format!(
                "{}/{} done, {} queued, {} pending, {} failed{db} | {} consumers{producer} | {} API requests",
                self.counts.done,
                self.n,
                self.counts.queued,
                self.counts.pending,
                self.counts.failed,
                self.consumers.len(),
                self.counter.detail_requests()
            ));
        }
    }

    fn check_exits(&mut self) {
        if let Some(status) = self.stub.poll()
            && !self.failures.iter().any(|f| f.starts_with("the stub"))
        {
            self.failures
                .push(format!("the stub exited by itself ({})", describe(status)));
        }
        if !self.producer_checked
            && let Some(producer) = self.producer.as_mut()
            && let Some(status) = producer.poll()
        {
            self.producer_checked = true;
            let line = producer.last_stdout_line().unwrap_or_default();
            let took = producer.started.elapsed();
            let expected = format!("listed={n} published={n} ", n = self.n);
            if !status.success() {
                self.failures.push(format!(
                    "the producer failed ({}) after {took:.1?}",
                    describe(status)
                ));
            } else if !line.starts_with(&expected) {
                self.failures.push(format!(
                    "the producer's summary is {line:?}, expected it to start with {expected:?}"
                ));
            }
            self.say(&format!(
                "producer finished: {} after {took:.1?}: {line}",
                describe(status)
            ));
        }
        let mut index = 0;
        while index < self.consumers.len() {
            let consumer = &mut self.consumers[index];
            match consumer.poll() {
                Some(status) if consumer.signalled.is_none() => {
                    self.failures.push(format!(
                        "{} exited by itself ({}) after {:.1?}",
                        consumer.name,
                        describe(status),
                        consumer.started.elapsed()
                    ));
                    let consumer = self.consumers.remove(index);
                    self.say(&format!(
                        "{} exited by itself ({})",
                        consumer.name,
                        describe(status)
                    ));
                    self.retired.push(consumer);
                }
                _ => index += 1,
            }
        }
    }

    /// Detail requests the stub has received so far.
    pub fn stub_requests(&self) -> u64 {
        self.counter.detail_requests()
    }

    /// Detail requests counted so far by every consumer, live or gone.
    pub fn consumer_counted(&self) -> u64 {
        self.consumers
            .iter()
            .chain(&self.retired)
            .map(|c| c.api_requests)
            .sum()
    }

    /// Watches until `done` holds for the item counts (with Postgres up), or fails after the
    /// suite's timeout.
    pub async fn wait_for(&mut self, what: &str, done: impl Fn(&Counts) -> bool) -> Result<()> {
        let deadline = Instant::now() + self.infra.timeout;
        loop {
            self.tick().await;
            if self.db_up && done(&self.counts) {
                return Ok(());
            }
            if self.failures.iter().any(|f| f.starts_with("the stub")) {
                bail!("waiting for {what}: the stub is gone");
            }
            if Instant::now() > deadline {
                bail!(
                    "waiting for {what}: not reached within {:?} ({})",
                    self.infra.timeout,
                    self.counts
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Keeps watching for `duration`.
    pub async fn idle(&mut self, duration: Duration) {
        let until = Instant::now() + duration;
        while Instant::now() < until {
            self.tick().await;
            tokio::time::sleep(Duration::from_millis(250).min(until - Instant::now())).await;
        }
    }

    /// Fails the scenario if the fault came after the work was over.
    pub fn check_mid_run(&mut self, fault: &str) -> i64 {
        let done = self.counts.done;
        if done >= self.n {
            self.failures.push(format!(
                "{fault} came after every item was done: the scenario tested nothing \
                 (raise --count)"
            ));
        }
        done
    }

    /// SIGKILL of one consumer, its metrics scraped just before.
    pub async fn kill_consumer(&mut self, index: usize) {
        let mut consumer = self.consumers.remove(index);
        consumer.scrape(&self.infra.http).await;
        consumer.signal(libc::SIGKILL);
        consumer.wait(Duration::from_secs(10)).await;
        self.kills += 1;
        self.say(&format!(
            "SIGKILL {} ({} API requests counted before)",
            consumer.name, consumer.api_requests
        ));
        self.retired.push(consumer);
    }

    /// SIGTERM to every consumer at once, their metrics scraped just before; each must exit 0
    /// within its `--shutdown-grace` (plus a little for the process to wind down). `settled`:
    /// nothing is left to do, so the scraped request counts are final.
    pub async fn terminate_consumers(&mut self, settled: bool) {
        let slack = Duration::from_secs(3);
        let mut consumers = std::mem::take(&mut self.consumers);
        for consumer in &mut consumers {
            consumer.api_final = consumer.scrape(&self.infra.http).await && settled;
        }
        for consumer in &mut consumers {
            consumer.signal(libc::SIGTERM);
        }
        if !settled {
            self.sigterms += consumers.len() as u32;
        }
        for consumer in &mut consumers {
            let grace = consumer.grace;
            let status = consumer.wait(grace + Duration::from_secs(30)).await;
            let after = consumer.exited_after.unwrap_or_default();
            match status {
                Some(status) if status.success() && after <= grace + slack => {}
                Some(status) => self.failures.push(format!(
                    "{} answered SIGTERM with {} after {after:.1?} (--shutdown-grace {grace:?}): \
                     expected exit 0 within the grace period",
                    consumer.name,
                    describe(status)
                )),
                None => {
                    self.failures.push(format!(
                        "{} still running {:?} after SIGTERM (--shutdown-grace {grace:?}); killed",
                        consumer.name,
                        grace + Duration::from_secs(30)
                    ));
                    consumer.signal(libc::SIGKILL);
                    consumer.wait(Duration::from_secs(10)).await;
                }
            }
        }
        let exits: Vec<String> = consumers
            .iter()
            .map(|c| {
                format!(
                    "{} {} after {:.2}s",
                    c.name,
                    c.status.map_or_else(|| "no exit".into(), describe),
                    c.exited_after.unwrap_or_default().as_secs_f64()
                )
            })
            .collect();
        if let Some(first) = consumers.first() {
            self.say(&format!(
                "SIGTERM (--shutdown-grace {:?}): {}",
                first.grace,
                exits.join(", ")
            ));
        }
        self.retired.extend(consumers);
    }

    /// The queues of this scenario's topology: the consumers' wait queues, and the default ones
    /// a producer of an older version declared (`depths` reports a missing one as `None`).
    fn queues(&self) -> Result<Vec<String>> {
        let mut queues = Vec::new();
        for delays in [
            RetryDelays::default(),
            RetryDelays::parse(self.retry_delays).map_err(anyhow::Error::msg)?,
        ] {
            for queue in Topology::new(&self.prefix, QueueType::Quorum, delays).queues() {
                if !queues.contains(&queue) {
                    queues.push(queue);
                }
            }
        }
        Ok(queues)
    }

    /// Messages in each queue (ready ones; unacknowledged ones too once no consumer holds them),
    /// `None` for a queue that does not exist.
    pub async fn depths(&self) -> Result<Vec<(String, Option<u32>)>> {
        let connection =
            pokeq_shared::broker::connect_once(&self.infra.amqp_url(), "chaos-check", None).await?;
        let mut depths = Vec::new();
        for queue in self.queues()? {
            let channel = connection.create_channel().await?;
            let declared = channel
                .queue_declare(
                    ShortString::from(queue.as_str()),
                    QueueDeclareOptions {
                        passive: true,
                        ..QueueDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await;
            let depth = declared.ok().map(|q| q.message_count());
            let _ = channel.close(200, ShortString::from("ok")).await;
            depths.push((queue, depth));
        }
        let _ = connection.close(200, ShortString::from("ok")).await;
        Ok(depths)
    }

    /// Waits for every item done, the producer finished and the queues drained (duplicates
    /// acknowledged), then stops the consumers with SIGTERM, their counts final.
    pub async fn settle(&mut self) -> Result<()> {
        let n = self.n;
        self.wait_for("every item done", |c| c.done + c.failed >= n)
            .await?;
        let deadline = Instant::now() + self.infra.timeout;
        while self.producer_running() {
            if Instant::now() > deadline {
                bail!("the producer still runs after every item is done");
            }
            self.idle(Duration::from_millis(500)).await;
        }
        self.check_exits();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut empty_rounds = 0;
        while empty_rounds < 2 {
            let depths = self.depths().await?;
            // Dead letters stay until an operator acts: verify() reports any.
            let work_left = depths
                .iter()
                .filter(|(queue, _)| !queue.ends_with(".dead"))
                .any(|(_, depth)| depth.unwrap_or(0) > 0);
            if !work_left {
                empty_rounds += 1;
            } else {
                empty_rounds = 0;
                if Instant::now() > deadline {
                    break; // verify() reports what is left
                }
            }
            self.idle(Duration::from_millis(500)).await;
        }
        self.say(&format!("settled: {}", self.counts));
        self.terminate_consumers(true).await;
        Ok(())
    }

    /// Everything checked straight from Postgres and the broker.
    pub async fn verify(&mut self) -> Result<()> {
        let client = connect(&self.db_url).await?;
        let n = self.n;

        let counts = self.counts().await?;
        if (counts.done, counts.total) != (n, n) {
            self.failures.push(format!(
                "items: {counts} of {} rows; expected all {n} done",
                counts.total
            ));
        }
        if counts.failed > 0 {
            let rows = client
                .query(
                    "select id, error_kind, attempts, last_error from ingest_items
                     where status = 'failed' order by id limit 5",
                    &[],
                )
                .await?;
            for row in rows {
                let (id, kind, attempts, error): (i32, Option<String>, i32, Option<String>) =
                    (row.get(0), row.get(1), row.get(2), row.get(3));
                self.failures.push(format!(
                    "item {id} failed: {} after {attempts} attempts: {}",
                    kind.unwrap_or_default(),
                    error.unwrap_or_default()
                ));
            }
        }

        // Every row exactly as the stub serves it.
        let dataset = pokeapi_stub::Dataset::synthetic(self.count, self.infra.seed);
        let rows = client
            .query(
                "select id, name, height_m::text, weight_kg::text, base_experience, types,
                        abilities, stats, sprite_url, species
                 from pokemon order by id",
                &[],
            )
            .await?;
        let mut stored = std::collections::HashMap::new();
        for row in &rows {
            stored.insert(row.get::<_, i32>(0), row);
        }
        let mut wrong = Vec::new();
        let mut missing = 0;
        for &id in dataset.ids() {
            let Some(row) = stored.get(&id) else {
                missing += 1;
                continue;
            };
            let Some(want) = dataset.record(id) else {
                continue;
            };
            let stats: serde_json::Value = row.get(7);
            let stats: Vec<(String, i64)> = stats
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|s| {
                            (
                                s["name"].as_str().unwrap_or_default().to_owned(),
                                s["base_stat"].as_i64().unwrap_or(-1),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            let tenths = |v: i32| format!("{}.{}", v / 10, v % 10);
            let checks = [
                ("name", row.get::<_, String>(1) == want.name),
                ("height_m", row.get::<_, String>(2) == tenths(want.height)),
                ("weight_kg", row.get::<_, String>(3) == tenths(want.weight)),
                (
                    "base_experience",
                    row.get::<_, Option<i32>>(4) == want.base_experience,
                ),
                ("types", row.get::<_, Vec<String>>(5) == want.types),
                ("abilities", row.get::<_, Vec<String>>(6) == want.abilities),
                (
                    "stats",
                    stats
                        == want
                            .stats
                            .iter()
                            .map(|(name, base)| (name.clone(), i64::from(*base)))
                            .collect::<Vec<_>>(),
                ),
                ("sprite_url", row.get::<_, Option<String>>(8) == want.sprite),
                (
                    "species",
                    row.get::<_, Option<String>>(9).as_deref() == Some(want.species.as_str()),
                ),
            ];
            for (field, ok) in checks {
                if !ok {
                    wrong.push(format!("{id}.{field}"));
                }
            }
        }
        let extra = rows.len() as i64 - (dataset.len() as i64 - missing);
        if missing > 0 || extra != 0 || !wrong.is_empty() {
            wrong.truncate(10);
            self.failures.push(format!(
                "pokemon rows: {missing} missing, {extra} unexpected, fields differing from the \
                 stub: {}",
                if wrong.is_empty() {
                    "none".into()
                } else {
                    wrong.join(", ")
                }
            ));
        }

        // Each row written exactly once.
        let row = client
            .query_one(
                "select count(*), count(distinct id) from pokemon_writes",
                &[],
            )
            .await?;
        let (writes, ids): (i64, i64) = (row.get(0), row.get(1));
        if (writes, ids) != (n, n) {
            let twice = client
                .query(
                    "select id, count(*) from pokemon_writes group by id having count(*) > 1
                     order by id limit 10",
                    &[],
                )
                .await?;
            let twice: Vec<String> = twice
                .iter()
                .map(|r| format!("{}x{}", r.get::<_, i32>(0), r.get::<_, i64>(1)))
                .collect();
            let twice = if twice.is_empty() {
                "none".to_owned()
            } else {
                twice.join(" ")
            };
            self.failures.push(format!(
                "writes: {writes} writes of {ids} ids, expected exactly one per item ({n}); \
                 written more than once (id x writes): {twice}"
            ));
        }

        // No outage, kill or signal is charged to a job: without API faults every item is done
        // at its first attempt.
        let row = client
            .query_one(
                "select coalesce(max(attempts), 0), count(*) filter (where attempts > 1)
                 from ingest_items",
                &[],
            )
            .await?;
        let (max_attempts, retried): (i32, i64) = (row.get(0), row.get(1));
        let faults = self.faults();
        if faults == 0 && max_attempts > 1 {
            self.failures.push(format!(
                "{retried} items needed more than one attempt (max {max_attempts}) although the \
                 API never failed: an infrastructure fault was charged to jobs"
            ));
        }

        // The broker: nothing left anywhere.
        for (queue, depth) in self.depths().await? {
            match depth {
                Some(0) => {}
                Some(depth) => self
                    .failures
                    .push(format!("queue {queue} holds {depth} messages at the end")),
                None if queue.ends_with(".jobs") || queue.ends_with(".dead") => {
                    self.failures.push(format!("queue {queue} does not exist"));
                }
                None => {}
            }
        }
        if !self.producer_checked {
            self.failures.push("the producer never finished".into());
        }
        Ok(())
    }

    /// Faults the stub injected so far.
    pub fn faults(&self) -> u64 {
        std::fs::read_to_string(&self.stub.stderr)
            .map(|text| {
                text.lines()
                    .filter(|line| line.contains("injecting fault"))
                    .count() as u64
            })
            .unwrap_or(0)
    }

    /// The verdict, with the ends of the relevant logs when the scenario failed.
    pub fn finish(mut self) -> Report {
        for consumer in &mut self.consumers {
            consumer.signal(libc::SIGKILL);
        }
        self.stub.signal(libc::SIGTERM);
        let mut report = Report {
            name: self.name,
            items: self.n,
            kills: self.kills,
            sigterms: self.sigterms,
            restarts: self.restarts.clone(),
            api_requests: self.counter.detail_requests(),
            consumer_counted: self.consumer_counted(),
            consumer_counted_exact: self.consumers.is_empty()
                && !self.retired.is_empty()
                && self.retired.iter().all(|c| c.api_final),
            faults: self.faults(),
            wall: self.started.elapsed(),
            failures: self.failures.clone(),
            logs: String::new(),
            recoveries: self.recoveries.clone(),
        };
        if !report.passed() {
            report.logs = self.logs();
        }
        report
    }

    fn logs(&self) -> String {
        let mut text = format!("  logs of {} (in {}):\n", self.name, self.logs.display());
        if let Some(producer) = &self.producer {
            text.push_str(&producer.tails(10));
        }
        text.push_str(&self.stub.tails(5));
        // Consumers that misbehaved, or else the last two.
        let all: Vec<&Proc> = self.retired.iter().chain(&self.consumers).collect();
        let mut shown: Vec<&Proc> = all
            .iter()
            .copied()
            .filter(|c| {
                self.failures
                    .iter()
                    .any(|f| f.contains(&format!("{} ", c.name)))
            })
            .collect();
        if shown.is_empty() {
            shown = all.iter().rev().take(2).copied().collect();
        }
        for consumer in shown.into_iter().take(4) {
            text.push_str(&consumer.tails(15));
        }
        for log in &self.infra_logs {
            text.push_str(&format!("  --- {}\n", log.display()));
            text.push_str(&tail(log, 15));
        }
        text
    }
}
