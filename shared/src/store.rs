//! Postgres: the database itself (created if missing, except by the CLI's read-only opening),
//! migrations, item state and rows.
//!
//! Item state follows DESIGN.md: the producer moves items `pending → queued` (only after the
//! broker confirmed the job), the consumer moves them to `done` in the same statement that
//! writes the row, or to `failed` with the reason. A `done` item is never written again.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::{Misconfigured, mask_url};
use crate::job::{ErrorKind, RESOURCE};
pub use crate::pgerror::ErrorClass;
use crate::pgerror::storable;
use crate::transform::Pokemon;
use crate::validators::Validators;

/// Versioned migrations, embedded so every binary carries the schema it needs.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "init", include_str!("../migrations/0001_init.sql")),
    (
        2,
        "producer_runs",
        include_str!("../migrations/0002_producer_runs.sql"),
    ),
    (
        3,
        "api_rate",
        include_str!("../migrations/0003_api_rate.sql"),
    ),
    (
        4,
        "http_validators",
        include_str!("../migrations/0004_http_validators.sql"),
    ),
    (
        5,
        "ingest_items_fillfactor",
        include_str!("../migrations/0005_ingest_items_fillfactor.sql"),
    ),
    (
        6,
        "api_circuit",
        include_str!("../migrations/0006_api_circuit.sql"),
    ),
    (7, "pokedex", include_str!("../migrations/0007_pokedex.sql")),
];

/// The schema version this build migrates to.
pub fn latest_schema_version() -> i32 {
    MIGRATIONS
        .iter()
        .map(|(version, _, _)| *version)
        .max()
        .unwrap_or(0)
}

/// Advisory lock key that serialises migrations across every process sharing the database.
const MIGRATION_LOCK: i64 = 0x706f_6b65_715f_6d69; // "pokeq_mi"

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot connect to Postgres at {url}: {}", describe(.source))]
    Connect {
        url: String,
        source: tokio_postgres::Error,
    },
    #[error("Postgres error: {}", describe(.0))]
    Sql(#[from] tokio_postgres::Error),
    #[error("Postgres pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("Postgres pool setup: {0}")]
    Build(#[from] deadpool_postgres::BuildError),
    #[error("Postgres TLS setup: {0}")]
    Tls(String),
    /// A group commit this row was part of failed (the cause is in the text), or the batcher
    /// serving it stopped; the class of the cause travels with the text.
    #[error("{message}")]
    Batch { message: String, class: ErrorClass },
    /// Postgres refused `DATABASE_URL`'s login or a right pokeq needs: retrying cannot help, the
    /// binary exits 2.
    #[error(transparent)]
    Misconfigured(#[from] Misconfigured),
    /// [`Store::open_existing`] found no pokeq database to read: missing, without pokeq's
    /// schema, or at an older version than this build's. The text says which and what to run.
    #[error("{0}")]
    NotReady(String),
}

impl StoreError {
    /// Whether waiting cures this error, or the item's data is at fault: see [`ErrorClass`].
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Connect { source, .. } | Self::Sql(source) => ErrorClass::of(source),
            Self::Pool(deadpool_postgres::PoolError::Backend(source)) => ErrorClass::of(source),
            Self::Pool(deadpool_postgres::PoolError::Timeout(_)) => ErrorClass::Transient,
            Self::Pool(_) | Self::Build(_) | Self::Tls(_) => ErrorClass::Operator,
            Self::Batch { class, .. } => *class,
            // Nothing an item did; the binary exits 2 before any item is touched.
            Self::Misconfigured(_) => ErrorClass::Operator,
            Self::NotReady(_) => ErrorClass::Operator,
        }
    }

    /// The database refused the data: trying again fails the same way.
    pub fn is_permanent(&self) -> bool {
        self.class().is_permanent()
    }
}

/// The step of [`Store::open`] a refusal happened in: each needs something else granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Connect,
    CreateDatabase,
    Migrate,
}

/// What Postgres refusing `error` means for `DATABASE_URL` (`url`), or `None` if it did not
/// refuse: a login refused (class 28: wrong password, unknown user, no `pg_hba.conf` entry, no
/// LOGIN right) or a right missing (42501). Outages, a server starting or stopping, and a full
/// server are no refusals.
fn refused(url: &str, step: Step, error: &tokio_postgres::Error) -> Option<Misconfigured> {
    let code = error.code()?;
    let (what, advice) = refusal_advice(code, step)?;
    Some(Misconfigured::new(
        "DATABASE_URL",
        url,
        format!("Postgres refused {what} ({}); {advice}", describe(error)),
    ))
}

/// What was refused and what to do about it, for a refusal's SQLSTATE in `step`.
fn refusal_advice(code: &SqlState, step: Step) -> Option<(&'static str, &'static str)> {
    if *code == SqlState::INVALID_PASSWORD {
        return Some(("the login", "check the user name and password"));
    }
    if *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION {
        return Some((
            "the login",
            "check the user name, that the role may log in, and that pg_hba.conf admits it \
             from this host",
        ));
    }
    if *code != SqlState::INSUFFICIENT_PRIVILEGE {
        return None;
    }
    Some(match step {
        Step::Connect => ("the connection", "grant the user CONNECT on the database"),
        Step::CreateDatabase => (
            "to create the database",
            "create it beforehand with this user as its owner, or grant the user CREATEDB",
        ),
        Step::Migrate => (
            "the migrations",
            "make the user the owner of the database (or let it create tables in its schema), \
             or migrate once as a user who may (`pokeq migrate`)",
        ),
    })
}

/// Whether a connection that failed may succeed later: no answer at all (refused, timed out,
/// name not resolved), or a server that is starting, stopping or full.
fn worth_waiting(error: &tokio_postgres::Error) -> bool {
    error.as_db_error().is_none_or(|db| {
        *db.code() == SqlState::CANNOT_CONNECT_NOW || *db.code() == SqlState::TOO_MANY_CONNECTIONS
    })
}

/// tokio-postgres says only "db error" for a server-side error; the server's message, code and
/// hint are what an operator needs.
fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!(
            "{}: {} ({}){}",
            db.severity(),
            db.message(),
            db.code().code(),
            db.detail().map(|d| format!(": {d}")).unwrap_or_default()
        ),
        None => match std::error::Error::source(error) {
            Some(cause) => format!("{error}: {cause}"),
            None => error.to_string(),
        },
    }
}

/// A pool of connections to pokeq's database.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
}

/// Marks the items of a batch done and upserts their rows, except items done already (see
/// `save_many`). `$1` is a JSON array of [`BatchRow`]s in id order, `$2` the resource. Returns
/// the ids written.
const SAVE_DONE: &str = "with input as (
        select * from jsonb_to_recordset($1) as r(
            id int, name text, attempts int, height int, weight int, base_experience int,
            types text[], abilities text[], stats jsonb, sprite_url text, species text,
            is_default boolean, sort_order int, etag text, last_modified text)
     ),
     item as (
        insert into ingest_items (resource, id, name, status, attempts, updated_at,
                                  etag, last_modified)
        select $2, id, name, 'done', attempts, now(), etag, last_modified from input
        on conflict (resource, id) do update
            set status = 'done', attempts = excluded.attempts, name = excluded.name,
                last_error = null, error_kind = null, updated_at = now(),
                etag = excluded.etag, last_modified = excluded.last_modified
            where ingest_items.status <> 'done'
        returning id
     )
     insert into pokemon (id, name, height_m, weight_kg, base_experience, types,
                          abilities, stats, sprite_url, species, is_default, sort_order)
     select input.id, name, round(height::numeric / 10, 1), round(weight::numeric / 10, 1),
            base_experience, types, abilities, stats, sprite_url, species, is_default,
            sort_order
     from input join item using (id)
     order by input.id
     on conflict (id) do update
        set name = excluded.name, height_m = excluded.height_m,
            weight_kg = excluded.weight_kg, base_experience = excluded.base_experience,
            types = excluded.types, abilities = excluded.abilities,
            stats = excluded.stats, sprite_url = excluded.sprite_url,
            species = excluded.species, is_default = excluded.is_default,
            sort_order = excluded.sort_order, ingested_at = now()
     returning id";

/// One row of [`SAVE_DONE`]'s input, named as its record columns.
#[derive(Debug, serde::Serialize)]
struct BatchRow<'a> {
    id: i32,
    name: &'a str,
    attempts: i32,
    height: i32,
    weight: i32,
    base_experience: Option<i32>,
    types: &'a [String],
    abilities: &'a [String],
    stats: &'a [crate::transform::Stat],
    sprite_url: Option<&'a str>,
    species: Option<&'a str>,
    is_default: Option<bool>,
    sort_order: Option<i32>,
    etag: Option<&'a str>,
    last_modified: Option<&'a str>,
}

impl<'a> BatchRow<'a> {
    fn of(row: &'a SaveRow) -> Self {
        let p = &row.pokemon;
        Self {
            id: p.id,
            name: &p.name,
            attempts: row.attempts,
            height: p.height,
            weight: p.weight,
            base_experience: p.base_experience,
            types: &p.types,
            abilities: &p.abilities,
            stats: &p.stats,
            sprite_url: p.sprite.as_deref(),
            species: p.species.as_deref(),
            is_default: p.is_default,
            sort_order: p.order,
            etag: row.validators.etag.as_deref(),
            last_modified: row.validators.last_modified.as_deref(),
        }
    }
}

/// One row for [`Store::save_many`].
#[derive(Debug, Clone)]
pub struct SaveRow {
    pub pokemon: Pokemon,
    pub validators: Validators,
    pub attempts: i32,
}

/// An item as the consumer finds it before fetching.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ItemState {
    pub done: bool,
    /// Validators of the stored copy (empty if never stored).
    pub validators: Validators,
}

/// A producer run's figures so far (see [`Store::page_done`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RunProgress {
    pub pages_done: i64,
    pub listed: i64,
    pub published: i64,
    pub skipped: i64,
}

/// Counts of items by status.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StatusCounts {
    pub pending: i64,
    pub queued: i64,
    pub done: i64,
    pub failed: i64,
}

impl StatusCounts {
    /// From the rows of `select status, count(*) ... group by status`, for callers that count
    /// over their own connection.
    pub fn from_rows(rows: &[tokio_postgres::Row]) -> Self {
        let mut counts = Self::default();
        for row in rows {
            let n: i64 = row.get(1);
            match row.get::<_, &str>(0) {
                "pending" => counts.pending = n,
                "queued" => counts.queued = n,
                "done" => counts.done = n,
                "failed" => counts.failed = n,
                _ => {}
            }
        }
        counts
    }
}

impl Store {
    /// Connects, creating the database if it does not exist, and applies pending migrations.
    pub async fn open(
        config: &tokio_postgres::Config,
        url: &str,
        pool_size: usize,
        extra_ca: Option<&str>,
    ) -> Result<Self, StoreError> {
        let mut config = config.clone();
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let tls = crate::tls::postgres_connector(extra_ca).map_err(StoreError::Tls)?;
        let failed = |step: Step| {
            move |source: tokio_postgres::Error| match refused(url, step, &source) {
                Some(refused) => StoreError::Misconfigured(refused),
                None => StoreError::Connect {
                    url: mask_url(url),
                    source,
                },
            }
        };
        let mut client = match connect(&config, &tls).await {
            Ok(client) => client,
            Err(error) if error.code() == Some(&SqlState::INVALID_CATALOG_NAME) => {
                create_database(&config, &tls)
                    .await
                    .map_err(failed(Step::CreateDatabase))?;
                connect(&config, &tls)
                    .await
                    .map_err(failed(Step::Connect))?
            }
            Err(source) => return Err(failed(Step::Connect)(source)),
        };
        migrate(&mut client).await.map_err(|error| match error {
            MigrateError::Sql(error) => match refused(url, Step::Migrate, &error) {
                Some(refused) => StoreError::Misconfigured(refused),
                None => StoreError::Sql(error),
            },
            MigrateError::Edited(edited) => {
                StoreError::Misconfigured(Misconfigured::new("DATABASE_URL", url, edited))
            }
        })?;
        Self::with_pool(config, tls, pool_size)
    }

    /// Connects to a database pokeq has set up, creating and migrating nothing: for the
    /// operator's commands that read (or update rows that exist), so that a mistyped
    /// `DATABASE_URL` is reported instead of creating an empty database that reads as zeros.
    /// A database at a newer schema version than this build's is read as is (migrations only
    /// add).
    pub async fn open_existing(
        config: &tokio_postgres::Config,
        url: &str,
        pool_size: usize,
        extra_ca: Option<&str>,
    ) -> Result<Self, StoreError> {
        let mut config = config.clone();
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let name = config
            .get_dbname()
            .or(config.get_user())
            .unwrap_or("?")
            .to_owned();
        let tls = crate::tls::postgres_connector(extra_ca).map_err(StoreError::Tls)?;
        let client = match connect(&config, &tls).await {
            Ok(client) => client,
            Err(error) if error.code() == Some(&SqlState::INVALID_CATALOG_NAME) => {
                return Err(StoreError::NotReady(format!(
                    "database {name} does not exist (run `pokeq migrate` or start a producer \
                     or consumer, which create it; or check DATABASE_URL)"
                )));
            }
            Err(source) => {
                return Err(match refused(url, Step::Connect, &source) {
                    Some(refused) => StoreError::Misconfigured(refused),
                    None => StoreError::Connect {
                        url: mask_url(url),
                        source,
                    },
                });
            }
        };
        let has_schema: bool = client
            .query_one(
                "select to_regclass('pokeq_schema_migrations') is not null",
                &[],
            )
            .await?
            .get(0);
        if !has_schema {
            return Err(StoreError::NotReady(format!(
                "database {name} has no pokeq schema (run `pokeq migrate`; or check DATABASE_URL)"
            )));
        }
        let version: i32 = client
            .query_one(
                "select coalesce(max(version), 0) from pokeq_schema_migrations",
                &[],
            )
            .await?
            .get(0);
        let needed = latest_schema_version();
        if version < needed {
            return Err(StoreError::NotReady(format!(
                "database {name} is at schema version {version}, older than this build's \
                 {needed} (run `pokeq migrate`)"
            )));
        }
        Self::with_pool(config, tls, pool_size)
    }

    fn with_pool(
        config: tokio_postgres::Config,
        tls: MakeRustlsConnect,
        pool_size: usize,
    ) -> Result<Self, StoreError> {
        let manager = Manager::from_config(
            config,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(30)))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()?;
        Ok(Self { pool })
    }

    /// [`Store::open`], retried with capped backoff for up to `patience` while the server
    /// cannot be reached: a database that is still starting (compose, Kubernetes) is normal. A
    /// refusal ([`StoreError::Misconfigured`]) or any other error is returned at once.
    pub async fn open_patiently(
        config: &tokio_postgres::Config,
        url: &str,
        pool_size: usize,
        extra_ca: Option<&str>,
        patience: Duration,
    ) -> Result<Self, StoreError> {
        let deadline = std::time::Instant::now() + patience;
        let policy = crate::retry::DATABASE_OPEN;
        let mut waits = policy.waits();
        let mut wait = waits.next().unwrap_or(policy.longest);
        loop {
            match Self::open(config, url, pool_size, extra_ca).await {
                Err(StoreError::Connect { url, source })
                    if worth_waiting(&source) && std::time::Instant::now() + wait < deadline =>
                {
                    let error = StoreError::Connect { url, source };
                    tracing::warn!(%error, ?wait, "Postgres not reachable yet");
                    tokio::time::sleep(wait).await;
                    wait = waits.next().unwrap_or(policy.longest);
                }
                result => return result,
            }
        }
    }

    /// The schema version this database is at.
    pub async fn schema_version(&self) -> Result<i32, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                "select coalesce(max(version), 0) from pokeq_schema_migrations",
                &[],
            )
            .await?;
        Ok(row.get(0))
    }

    /// Records listed items as `pending`; items already known keep their state.
    pub async fn record_listed(&self, items: &[(i32, String)]) -> Result<(), StoreError> {
        let (ids, names): (Vec<i32>, Vec<&str>) =
            items.iter().map(|(id, name)| (*id, name.as_str())).unzip();
        let client = self.pool.get().await?;
        client
            .execute(
                "insert into ingest_items (resource, id, name, status)
                 select $1, t.id, t.name, 'pending' from unnest($2::int[], $3::text[]) as t(id, name)
                 on conflict (resource, id) do nothing",
                &[&RESOURCE, &ids, &names],
            )
            .await?;
        Ok(())
    }

    /// Of `ids`, the ones a producer must publish: those `pending` (never confirmed), those
    /// `queued` but untouched for `requeue_after` (their job may be lost: a purged queue, a
    /// classic queue's lost message), with `retry_failed` those `failed`, and with `refresh`
    /// those `done`; all but the pending ones move back to `pending`. An item's last touch is
    /// its `updated_at`, which every step of its job moves (queued, each retry attempt
    /// recorded, ...), or its `queued_at` if later.
    pub async fn claim_for_publish(
        &self,
        ids: &[i32],
        retry_failed: bool,
        refresh: bool,
        requeue_after: Duration,
    ) -> Result<Vec<i32>, StoreError> {
        let client = self.pool.get().await?;
        // Pending items are only read: rewriting them would double the producer's writes on a
        // first run. The select sees the statuses from before the update.
        let rows = client
            .query(
                "with moved as (
                    update ingest_items set status = 'pending', updated_at = now()
                    where resource = $1 and id = any($2)
                      and (($3 and status = 'failed') or ($4 and status = 'done')
                           or (status = 'queued' and greatest(updated_at, queued_at)
                               <= now() - make_interval(secs => $5)))
                    returning id
                 )
                 select id from ingest_items
                 where resource = $1 and id = any($2) and status = 'pending'
                 union all
                 select id from moved",
                &[
                    &RESOURCE,
                    &ids,
                    &retry_failed,
                    &refresh,
                    &requeue_after.as_secs_f64(),
                ],
            )
            .await?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    /// `pending → queued` for jobs the broker confirmed. An item a consumer already finished
    /// (done or failed) stays as it is.
    pub async fn mark_queued(&self, ids: &[i32]) -> Result<u64, StoreError> {
        let client = self.pool.get().await?;
        Ok(client
            .execute(
                "update ingest_items set status = 'queued', queued_at = now(), updated_at = now()
                 where resource = $1 and id = any($2) and status = 'pending'",
                &[&RESOURCE, &ids],
            )
            .await?)
    }

    /// What the consumer needs before fetching, for many ids in one statement: whether each
    /// item is done, and the validators of the copy stored. Ids without a row are absent.
    pub async fn item_states(
        &self,
        ids: &[i32],
    ) -> Result<std::collections::HashMap<i32, ItemState>, StoreError> {
        let client = self.pool.get().await?;
        // An unnamed statement, planned for its actual ids each time: a cached generic plan,
        // made while the table was nearly empty, scans the whole table for every batch once it
        // has grown (found by the benchmark).
        let rows = client
            .query(
                "select id, status = 'done', etag, last_modified
                 from ingest_items where resource = $1 and id = any($2)",
                &[&RESOURCE, &ids],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| {
                let state = ItemState {
                    done: row.get(1),
                    validators: Validators {
                        etag: row.get(2),
                        last_modified: row.get(3),
                    },
                };
                (row.get(0), state)
            })
            .collect())
    }

    /// Marks an item `done` whose stored copy the API confirmed current (HTTP 304): no row is
    /// written. Returns false if it was done already.
    pub async fn mark_unchanged(&self, id: i32, attempts: i32) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        let changed = client
            .execute(
                "update ingest_items
                 set status = 'done', attempts = $3, last_error = null, error_kind = null,
                     updated_at = now()
                 where resource = $1 and id = $2 and status <> 'done'",
                &[&RESOURCE, &id, &attempts],
            )
            .await?;
        Ok(changed > 0)
    }

    /// Writes the rows and marks their items `done`, all in one statement (one round trip,
    /// one commit, one WAL flush). A row whose item is already done is not written: of two
    /// consumers holding the same job, the second waits for the first's commit and then skips
    /// it; of two rows for one item in the same batch, the first is written. Rows are written
    /// in id order so that two batches holding the same ids lock them in the same order.
    /// Returns, for each row in the order given, whether it was written.
    pub async fn save_many(&self, rows: &[SaveRow]) -> Result<Vec<bool>, StoreError> {
        let mut order: Vec<usize> = (0..rows.len()).collect();
        order.sort_by_key(|&i| (rows[i].pokemon.id, i));
        order.dedup_by_key(|&mut i| rows[i].pokemon.id);
        let input: Vec<BatchRow> = order.iter().map(|&i| BatchRow::of(&rows[i])).collect();
        let client = self.pool.get().await?;
        let started = std::time::Instant::now();
        let statement = client.prepare_cached(SAVE_DONE).await?;
        let saved = client
            .query(
                &statement,
                &[&tokio_postgres::types::Json(&input), &RESOURCE],
            )
            .await?;
        metrics::histogram!(crate::metrics::DB_SECONDS).record(started.elapsed().as_secs_f64());
        metrics::histogram!(crate::metrics::COMMIT_ROWS).record(rows.len() as f64);
        let saved: std::collections::HashSet<i32> = saved.iter().map(|row| row.get(0)).collect();
        let mut written = vec![false; rows.len()];
        for i in order {
            written[i] = saved.contains(&rows[i].pokemon.id);
        }
        Ok(written)
    }

    /// Records a transient failure: the item stays `queued` (its job waits in a retry queue).
    pub async fn record_attempt(
        &self,
        id: i32,
        attempts: i32,
        error: &str,
    ) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "insert into ingest_items (resource, id, status, attempts, last_error)
                 values ($1, $2, 'queued', $3, $4)
                 on conflict (resource, id) do update
                    set attempts = excluded.attempts, last_error = excluded.last_error,
                        updated_at = now()
                    where ingest_items.status <> 'done'",
                &[&RESOURCE, &id, &attempts, &storable(error)],
            )
            .await?;
        Ok(())
    }

    /// Marks the item `failed` with the reason its job was dead-lettered (a done item stays done).
    pub async fn mark_failed(
        &self,
        id: i32,
        kind: ErrorKind,
        attempts: i32,
        error: &str,
    ) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "insert into ingest_items (resource, id, status, attempts, last_error, error_kind)
                 values ($1, $2, 'failed', $3, $4, $5)
                 on conflict (resource, id) do update
                    set status = 'failed', attempts = excluded.attempts,
                        last_error = excluded.last_error, error_kind = excluded.error_kind,
                        updated_at = now()
                    where ingest_items.status <> 'done'",
                &[&RESOURCE, &id, &attempts, &storable(error), &kind.as_str()],
            )
            .await?;
        Ok(())
    }

    /// Reserves `slots` request slots at `rate` per second on the shared limiter `name`:
    /// returns how long from now until the first slot (zero or negative: now). Slots follow
    /// each other at `1 / rate`.
    pub async fn reserve_rate(&self, name: &str, rate: f64, slots: u32) -> Result<f64, StoreError> {
        let window = f64::from(slots) / rate;
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(
                "insert into api_rate as r (name, next_at)
                 values ($1, clock_timestamp() + make_interval(secs => $2))
                 on conflict (name) do update
                    set next_at = greatest(r.next_at, clock_timestamp())
                                  + make_interval(secs => $2)
                 returning extract(epoch from
                    (next_at - make_interval(secs => $2) - clock_timestamp()))::float8",
            )
            .await?;
        let row = client.query_one(&statement, &[&name, &window]).await?;
        Ok(row.get(0))
    }

    /// Moves the shared limiter `name` at least `seconds` ahead, so every process sharing it
    /// waits as the API asked one of them to (`Retry-After`).
    pub async fn hold_rate(&self, name: &str, seconds: f64) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "insert into api_rate as r (name, next_at)
                 values ($1, clock_timestamp() + make_interval(secs => $2))
                 on conflict (name) do update set next_at = greatest(r.next_at, excluded.next_at)",
                &[&name, &seconds],
            )
            .await?;
        Ok(())
    }

    /// Records this process's API circuit: open (with since when and why), refreshed while it
    /// stays open, or closed (the row goes, with rows of processes long gone).
    pub async fn record_circuit(
        &self,
        process: &str,
        open: Option<(i64, &str)>,
    ) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        match open {
            Some((since_unix_ms, error)) => {
                client
                    .execute(
                        "insert into api_circuit (process, since, error, updated_at)
                         values ($1, to_timestamp($2::float8 / 1000), $3, now())
                         on conflict (process) do update
                            set since = excluded.since, error = excluded.error,
                                updated_at = now()",
                        &[&process, &(since_unix_ms as f64), &error],
                    )
                    .await?;
            }
            None => {
                client
                    .execute(
                        "delete from api_circuit
                         where process = $1 or updated_at < now() - interval '1 day'",
                        &[&process],
                    )
                    .await?;
            }
        }
        Ok(())
    }

    /// Opens a `producer_runs` row for a run starting now.
    pub async fn start_run(&self) -> Result<i64, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                "insert into producer_runs (state) values ('running') returning id",
                &[],
            )
            .await?;
        Ok(row.get(0))
    }

    /// Records a run's plan: how many items and pages it will list.
    pub async fn plan_run(&self, run: i64, total: i64, pages: i64) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "update producer_runs set total = $2, pages_planned = $3, updated_at = now()
                 where id = $1",
                &[&run, &total, &pages],
            )
            .await?;
        Ok(())
    }

    /// Records a run's figures so far, as a page finishes. Totals, never lowered, rather than
    /// increments: repeated after a reply lost with the connection, or arriving out of order
    /// from pages finishing together, the row still counts each page once.
    pub async fn page_done(&self, run: i64, progress: RunProgress) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "update producer_runs
                 set pages_done = greatest(pages_done, $2), listed = greatest(listed, $3),
                     published = greatest(published, $4), skipped = greatest(skipped, $5),
                     updated_at = now()
                 where id = $1",
                &[
                    &run,
                    &progress.pages_done,
                    &progress.listed,
                    &progress.published,
                    &progress.skipped,
                ],
            )
            .await?;
        Ok(())
    }

    /// Closes a run as `done`, or `failed` with the error.
    pub async fn finish_run(&self, run: i64, error: Option<&str>) -> Result<(), StoreError> {
        let state = if error.is_some() { "failed" } else { "done" };
        let error = error.map(storable);
        let client = self.pool.get().await?;
        client
            .execute(
                "update producer_runs set state = $2, error = $3, finished_at = now(),
                        updated_at = now()
                 where id = $1",
                &[&run, &state, &error],
            )
            .await?;
        Ok(())
    }

    pub async fn status_counts(&self) -> Result<StatusCounts, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "select status, count(*) from ingest_items where resource = $1 group by status",
                &[&RESOURCE],
            )
            .await?;
        Ok(StatusCounts::from_rows(&rows))
    }

    /// The pool, for callers that run their own queries (the CLI, tests).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }
}

async fn connect(
    config: &tokio_postgres::Config,
    tls: &MakeRustlsConnect,
) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(tls.clone()).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "Postgres connection closed");
        }
    });
    Ok(client)
}

/// Creates the configured database through the `postgres` maintenance database. Several
/// processes may race to create it; losing that race is success.
async fn create_database(
    config: &tokio_postgres::Config,
    tls: &MakeRustlsConnect,
) -> Result<(), tokio_postgres::Error> {
    let name = config.get_dbname().unwrap_or("pokeq").to_owned();
    let mut maintenance = config.clone();
    maintenance.dbname("postgres");
    let client = connect(&maintenance, tls).await?;
    let sql = format!("create database \"{}\"", name.replace('"', "\"\""));
    match client.batch_execute(&sql).await {
        Ok(()) => {
            tracing::info!(database = %name, "created database");
            Ok(())
        }
        Err(error)
            if error.code() == Some(&SqlState::DUPLICATE_DATABASE)
                || error.code() == Some(&SqlState::UNIQUE_VIOLATION) =>
        {
            Ok(())
        }
        Err(error) => Err(error),
    }
}

/// Why [`migrate`] stopped.
#[derive(Debug)]
enum MigrateError {
    Sql(tokio_postgres::Error),
    Edited(EditedMigration),
}

impl From<tokio_postgres::Error> for MigrateError {
    fn from(error: tokio_postgres::Error) -> Self {
        Self::Sql(error)
    }
}

/// A migration this database applied from other SQL than this build carries: someone edited an
/// already-released migration file. Applying nothing is the only safe answer, since the schema is
/// not the one the build's statements were written for; it is a deployment mistake, so the
/// binary exits 2 (as [`Misconfigured`], naming `DATABASE_URL`).
#[derive(Debug, thiserror::Error)]
#[error(
    "migration {version} ({name}) was applied to this database from other SQL than this build \
     carries (checksum {stored} recorded, {built} built in): a released migration file was edited; \
     restore it as it was and put the change in a new migration, or run the build that applied it"
)]
struct EditedMigration {
    version: i32,
    name: &'static str,
    stored: String,
    built: String,
}

/// A migration's SHA-256 in hex, line endings normalised so that a checkout with CRLF endings
/// builds the same checksums.
fn migration_checksum(sql: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(sql.replace("\r\n", "\n").as_bytes());
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Applies every migration not yet applied, in one transaction holding an advisory lock, so that
/// many processes starting together apply each migration exactly once and none fails. Each
/// applied migration's checksum is recorded, and one that no longer matches this build's SQL
/// stops the start ([`EditedMigration`]). Rows applied by builds older than the checksums get
/// this build's checksum on first start: nothing better is known about them.
async fn migrate(client: &mut Client) -> Result<(), MigrateError> {
    let tx = client.transaction().await?;
    tx.execute("select pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    // Checked first rather than `create table if not exists` or `add column if not exists`,
    // whose notices would land in every start's log.
    let missing: bool = tx
        .query_one("select to_regclass('pokeq_schema_migrations') is null", &[])
        .await?
        .get(0);
    if missing {
        tx.batch_execute(
            "create table pokeq_schema_migrations (
                version    integer primary key,
                name       text not null,
                applied_at timestamptz not null default now(),
                checksum   text
            )",
        )
        .await?;
    } else {
        let has_checksum: bool = tx
            .query_one(
                "select exists (
                    select from pg_attribute
                    where attrelid = 'pokeq_schema_migrations'::regclass
                      and attname = 'checksum' and not attisdropped)",
                &[],
            )
            .await?
            .get(0);
        if !has_checksum {
            // Not a numbered migration: the migrations table is this function's own.
            tx.batch_execute("alter table pokeq_schema_migrations add column checksum text")
                .await?;
        }
    }
    let applied: std::collections::HashMap<i32, Option<String>> = tx
        .query("select version, checksum from pokeq_schema_migrations", &[])
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    for (version, name, sql) in MIGRATIONS {
        let built = migration_checksum(sql);
        match applied.get(version) {
            Some(Some(stored)) if *stored == built => {}
            Some(Some(stored)) => {
                // Enough of each to tell them apart in a log line.
                let short = |sum: &str| sum.chars().take(12).collect();
                return Err(MigrateError::Edited(EditedMigration {
                    version: *version,
                    name,
                    stored: short(stored),
                    built: short(&built),
                }));
            }
            Some(None) => {
                tx.execute(
                    "update pokeq_schema_migrations set checksum = $2 where version = $1",
                    &[version, &built],
                )
                .await?;
                tracing::info!(
                    version,
                    name,
                    "recorded the checksum of an applied migration"
                );
            }
            None => {
                tx.batch_execute(sql).await?;
                tx.execute(
                    "insert into pokeq_schema_migrations (version, name, checksum)
                     values ($1, $2, $3)",
                    &[version, name, &built],
                )
                .await?;
                tracing::info!(version, name, "applied migration");
            }
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Parses a database URL (for callers that have only the text).
pub fn parse_url(url: &str) -> Result<tokio_postgres::Config, tokio_postgres::Error> {
    crate::tls::postgres_config(url)
}
