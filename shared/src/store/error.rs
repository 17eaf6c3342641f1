//! Why a statement or an opening failed, and what a refusal by Postgres asks of the operator.

use tokio_postgres::error::SqlState;

use super::ErrorClass;
use crate::config::Misconfigured;

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
    /// [`Store::open_existing`](super::Store::open_existing) found no pokeq database to read:
    /// missing, without pokeq's schema, or at an older version than this build's. The text says
    /// which and what to run.
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
pub(super) enum Step {
    Connect,
    CreateDatabase,
    Migrate,
}

/// What Postgres refusing `error` means for `DATABASE_URL` (`url`), or `None` if it did not
/// refuse: a login refused (class 28: wrong password, unknown user, no `pg_hba.conf` entry, no
/// LOGIN right) or a right missing (42501). Outages, a server starting or stopping, and a full
/// server are no refusals.
pub(super) fn refused(
    url: &str,
    step: Step,
    error: &tokio_postgres::Error,
) -> Option<Misconfigured> {
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
pub(super) fn worth_waiting(error: &tokio_postgres::Error) -> bool {
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
