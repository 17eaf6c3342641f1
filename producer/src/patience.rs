//! Waiting out Postgres: the producer's store calls are retried with capped backoff while the
//! database is away, for up to `--patience` per call, and shutdown ends the wait at once.
//!
//! Every store call the producer makes may run twice (a reply lost with the connection after
//! the commit): each is written to have the same effect when repeated, so waiting counts
//! nothing twice.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use pokeq_shared::metrics::{self, Health};
use pokeq_shared::retry;
use pokeq_shared::shutdown::CancellationToken;
use pokeq_shared::store::{ErrorClass, StoreError};
use tokio::time::Instant;

/// How long a store call or a publish confirm already under way may go on after shutdown: long
/// enough for a healthy database or broker to answer (so confirmed jobs are still marked
/// `queued`), short enough that SIGTERM ends the run within a few seconds.
pub const LAST_ANSWER: Duration = Duration::from_secs(2);

/// Why a store call gave up.
#[derive(Debug)]
pub enum GaveUp {
    /// Shutdown came first.
    Interrupted,
    /// The database refused the data: no wait would cure it.
    Refused(StoreError),
    /// The database stayed away for longer than the patience.
    Exhausted {
        patience: Duration,
        last: StoreError,
    },
}

impl fmt::Display for GaveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Interrupted => write!(f, "interrupted while waiting for Postgres"),
            Self::Refused(error) => write!(f, "Postgres refused the data: {error}"),
            Self::Exhausted { patience, last } => {
                write!(f, "Postgres unavailable for over {patience:?}: {last}")
            }
        }
    }
}

impl std::error::Error for GaveUp {}

/// Runs store calls patiently; cheap to share.
#[derive(Clone)]
pub struct Patience {
    pub limit: Duration,
    pub shutdown: CancellationToken,
    /// Told when the database comes and goes, for `/readyz`.
    pub health: Arc<Health>,
}

impl Patience {
    /// Runs `operation` until it succeeds. While the database is unavailable (or fails pokeq's
    /// statements in a way only an operator can fix) it waits ([`retry::PRODUCER_DATABASE`]),
    /// up to `limit` from the first failure; a refusal of the data ends it at once, and so does
    /// shutdown, except that an attempt under way gets [`LAST_ANSWER`] to finish.
    pub async fn run<T, F, Fut>(&self, what: &'static str, operation: F) -> Result<T, GaveUp>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let mut backoff = retry::PRODUCER_DATABASE.waits();
        let mut failing_since: Option<Instant> = None;
        loop {
            let result = tokio::select! {
                result = operation() => result,
                () = after_shutdown(&self.shutdown) => return Err(GaveUp::Interrupted),
            };
            let error = match result {
                Ok(value) => {
                    self.health.set_database(true);
                    return Ok(value);
                }
                Err(error) => error,
            };
            let class = error.class();
            if class == ErrorClass::Permanent {
                self.health.set_database(true);
                return Err(GaveUp::Refused(error));
            }
            self.health.set_database(false);
            if self.shutdown.is_cancelled() {
                return Err(GaveUp::Interrupted);
            }
            let since = *failing_since.get_or_insert_with(Instant::now);
            let wait = backoff.next().unwrap_or(retry::PRODUCER_DATABASE.longest);
            if since.elapsed() + wait > self.limit {
                return Err(GaveUp::Exhausted {
                    patience: self.limit,
                    last: error,
                });
            }
            if class == ErrorClass::Operator {
                tracing::error!(%error, ?wait, what, "the database fails pokeq's statements; waiting for an operator");
            } else {
                tracing::warn!(%error, ?wait, what, "Postgres unavailable; waiting");
            }
            metrics::counter!(metrics::RECONNECTS, "target" => "database").increment(1);
            tokio::select! {
                () = self.shutdown.cancelled() => return Err(GaveUp::Interrupted),
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// Completes [`LAST_ANSWER`] after `shutdown` is cancelled.
pub async fn after_shutdown(shutdown: &CancellationToken) {
    shutdown.cancelled().await;
    tokio::time::sleep(LAST_ANSWER).await;
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn patience(limit: Duration) -> Patience {
        let health = Arc::new(Health::default());
        health.set_broker(true);
        Patience {
            limit,
            shutdown: CancellationToken::new(),
            health,
        }
    }

    fn error(class: ErrorClass) -> StoreError {
        StoreError::Batch {
            message: format!("{class:?}"),
            class,
        }
    }

    /// Fails with `class` the first `failures` calls, then answers how many calls it took.
    fn flaky(
        calls: &AtomicU32,
        failures: u32,
        class: ErrorClass,
    ) -> impl Fn() -> std::future::Ready<Result<u32, StoreError>> + '_ {
        move || {
            let call = calls.fetch_add(1, Ordering::SeqCst) + 1;
            std::future::ready(if call <= failures {
                Err(error(class))
            } else {
                Ok(call)
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_is_waited_out_with_capped_backoff() {
        let patience = patience(Duration::from_secs(300));
        let calls = AtomicU32::new(0);
        let started = Instant::now();
        let answer = patience
            .run("test", flaky(&calls, 20, ErrorClass::Transient))
            .await
            .expect("succeeds once the database is back");
        assert_eq!(answer, 21);
        let waited = started.elapsed();
        // 20 waits from 200 ms doubling to the 5 s cap, each up to twice as long with jitter.
        assert!(waited >= Duration::from_secs(60), "{waited:?}");
        assert!(waited <= Duration::from_secs(200), "{waited:?}");
        assert!(patience.health.ready(), "the database is up again");
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_the_patience() {
        let patience = patience(Duration::from_secs(30));
        let calls = AtomicU32::new(0);
        let started = Instant::now();
        let result = patience
            .run("test", flaky(&calls, u32::MAX, ErrorClass::Operator))
            .await;
        assert!(
            matches!(result, Err(GaveUp::Exhausted { .. })),
            "{result:?}"
        );
        let waited = started.elapsed();
        assert!(waited <= Duration::from_secs(30), "{waited:?}");
        assert!(waited >= Duration::from_secs(15), "{waited:?}");
        assert!(!patience.health.ready(), "unready while the database fails");
    }

    #[tokio::test(start_paused = true)]
    async fn refused_data_is_not_retried() {
        let patience = patience(Duration::from_secs(300));
        let calls = AtomicU32::new(0);
        let result = patience
            .run("test", flaky(&calls, u32::MAX, ErrorClass::Permanent))
            .await;
        assert!(matches!(result, Err(GaveUp::Refused(_))), "{result:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(patience.health.ready(), "a refusal is no outage");
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_the_wait_at_once() {
        let patience = patience(Duration::from_secs(300));
        let calls = AtomicU32::new(0);
        let cancel = patience.shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(10)).await;
            cancel.cancel();
        });
        let started = Instant::now();
        let result = patience
            .run("test", flaky(&calls, u32::MAX, ErrorClass::Transient))
            .await;
        assert!(matches!(result, Err(GaveUp::Interrupted)), "{result:?}");
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_under_way_at_shutdown_gets_a_last_moment_to_answer() {
        let patience = patience(Duration::from_secs(300));
        patience.shutdown.cancel();
        let quick = patience
            .run("test", || async {
                tokio::time::sleep(Duration::from_millis(500)).await;
                Ok::<_, StoreError>(1)
            })
            .await;
        assert!(quick.is_ok(), "{quick:?}");
        let started = Instant::now();
        let hung = patience
            .run("test", || async {
                std::future::pending::<()>().await;
                Ok::<_, StoreError>(1)
            })
            .await;
        assert!(matches!(hung, Err(GaveUp::Interrupted)), "{hung:?}");
        assert_eq!(started.elapsed(), LAST_ANSWER);
    }
}
