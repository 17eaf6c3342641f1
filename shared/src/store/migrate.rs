//! The schema: migrations embedded in the build, applied once each across every process, and
//! checked against what the database recorded.

use tokio_postgres::Client;

use super::{Store, StoreError};

/// Versioned migrations, embedded so every binary carries the schema it needs.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "init", include_str!("../../migrations/0001_init.sql")),
    (
        2,
        "producer_runs",
        include_str!("../../migrations/0002_producer_runs.sql"),
    ),
    (
        3,
        "api_rate",
        include_str!("../../migrations/0003_api_rate.sql"),
    ),
    (
        4,
        "http_validators",
        include_str!("../../migrations/0004_http_validators.sql"),
    ),
    (
        5,
        "ingest_items_fillfactor",
        include_str!("../../migrations/0005_ingest_items_fillfactor.sql"),
    ),
    (
        6,
        "api_circuit",
        include_str!("../../migrations/0006_api_circuit.sql"),
    ),
    (
        7,
        "pokedex",
        include_str!("../../migrations/0007_pokedex.sql"),
    ),
    (
        8,
        "documents_lz4",
        include_str!("../../migrations/0008_documents_lz4.sql"),
    ),
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

impl Store {
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
}

/// Why [`migrate`] stopped.
#[derive(Debug)]
pub(super) enum MigrateError {
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
pub(super) struct EditedMigration {
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
pub(super) async fn migrate(client: &mut Client) -> Result<(), MigrateError> {
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
