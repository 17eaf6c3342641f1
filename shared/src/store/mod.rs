//! Postgres: the database itself (created if missing, except by the CLI's read-only opening),
//! migrations, item state and rows.
//!
//! A [`Store`] is one pool of connections; here it is opened, and each file beside this one holds
//! the statements of one concern:
//! - `error.rs`: [`StoreError`], and what a refusal by Postgres means for `DATABASE_URL`;
//! - `database.rs`: a connection, and the database created when it is missing;
//! - `migrate.rs`: the embedded migrations and the schema version;
//! - `items.rs`: item state (`ingest_items.status`), the state machine of DESIGN.md;
//! - `rows.rs`: the pokemon rows, written in the transaction of their items' `done`;
//! - `runs.rs`: the producer runs' progress (`producer_runs`);
//! - `rate.rs`: the API request rate every process shares (`api_rate`);
//! - `circuit.rs`: each consumer's API circuit (`api_circuit`), for `pokeq status`.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::{Misconfigured, mask_url};

mod circuit;
mod database;
mod error;
mod items;
mod migrate;
mod rate;
mod rows;
mod runs;

pub use crate::pgerror::ErrorClass;
use database::{connect, create_database};
pub use error::StoreError;
use error::{Step, refused, worth_waiting};
pub use items::{DoneItem, Finished, ItemState, PURGED_PREFIX, StatusCounts, finish};
pub use migrate::latest_schema_version;
use migrate::{MigrateError, migrate};
pub use rows::{SaveRow, write_pokemon};
pub use runs::RunProgress;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A pool of connections to pokeq's database.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
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

    /// The pool, for callers that run their own queries (the CLI, tests).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }
}

/// Parses a database URL (for callers that have only the text).
pub fn parse_url(url: &str) -> Result<tokio_postgres::Config, tokio_postgres::Error> {
    crate::tls::postgres_config(url)
}
