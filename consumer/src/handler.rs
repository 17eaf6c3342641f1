//! One job, start to finish, without the broker: fetch, transform, store, and say what the
//! delivery loop must do with the message. Keeping the broker out makes every failure class
//! testable on its own.
//!
//! pokeq's own database failing is not the job's fault: each store step waits it out with
//! backoff (the delivery stays unacked meanwhile), counting no attempt, failing nothing, and
//! without asking the API again for a document already fetched. The database refusing the
//! item's data is (a permanent [`ErrorClass`]): no wait cures it, so that item is dead-lettered
//! as `malformed_payload` with the database's message, and the database counts as up.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use pokeq_shared::commit::{Document, Finished};
use pokeq_shared::job::{ErrorKind, Job, unix_millis};
use pokeq_shared::links;
use pokeq_shared::metrics::{self, Health};
use pokeq_shared::pgerror::storable;
use pokeq_shared::pokeapi::{FetchError, Fetched, PokeApi};
use pokeq_shared::resource_rows::SaveRecord;
use pokeq_shared::resources;
use pokeq_shared::retry;
use pokeq_shared::shutdown::CancellationToken;
use pokeq_shared::store::{ErrorClass, SaveRow, Store, StoreError};
use pokeq_shared::topology::{Delay, RetryDelays};
use pokeq_shared::transform::transform;

use crate::commit::{Committer, StateReader};

/// A `not_before` further ahead than this is not a wait the API asked for but a forged header;
/// it is ignored rather than deferring the job forever.
const MAX_NOT_BEFORE: Duration = Duration::from_secs(24 * 3600);

/// What became of a job, and so what the delivery loop does with its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Stored and marked done (or found done already, with no API call): publish `links` (the
    /// jobs of a followed document's links whose items it enqueued), then ack.
    Done { written: bool, links: Vec<Job> },
    /// A transient failure: publish to the wait queue of `delay` carrying `failures`, then ack.
    Retry {
        delay: Delay,
        failures: u32,
        error: String,
        /// Unix milliseconds before which the job must not run again, when the API asked for a
        /// longer wait than `delay`.
        not_before: Option<i64>,
    },
    /// The job arrived before its `not_before` time: back to the wait queue of `delay`, counting
    /// no attempt.
    Defer { delay: Delay },
    /// A permanent failure, or the last transient one: publish to the dead-letter exchange with
    /// the reason, mark the item failed, then ack.
    Dead {
        kind: ErrorKind,
        reason: String,
        failures: u32,
    },
}

pub struct Handler {
    pub api: PokeApi,
    pub store: Store,
    /// Stores rows in group commits.
    pub committer: Committer,
    /// Reads item states in batches.
    pub states: StateReader,
    pub max_attempts: u32,
    pub delays: RetryDelays,
    /// Told when the database comes and goes, for `/readyz`.
    pub health: Arc<Health>,
    /// Ends waits for the database.
    pub shutdown: CancellationToken,
}

impl Handler {
    /// [`Outcome::Defer`] for a job that carries a `not_before` time still ahead.
    pub fn defer(&self, not_before: Option<i64>) -> Option<Outcome> {
        let remaining = not_before?.saturating_sub(unix_millis());
        let remaining = Duration::from_millis(u64::try_from(remaining).ok()?);
        (!remaining.is_zero() && remaining <= MAX_NOT_BEFORE).then(|| Outcome::Defer {
            delay: self.delays.covering(remaining).clone(),
        })
    }

    /// Runs `job`, which has already failed transiently `failures` times, and records the
    /// item's state: `done` with its row, the attempt and error of a retry, or `failed` with
    /// the reason of a dead letter. `None` when shutdown came while waiting for the database or
    /// the API: the job is then handed back untouched.
    pub async fn handle(&self, job: &Job, failures: u32) -> Option<Outcome> {
        let mut outcome = match self.run(job, failures).await {
            Ok(outcome) => outcome,
            Err(Halt::Shutdown) => return None,
            Err(Halt::Refused(error)) => Outcome::Dead {
                kind: ErrorKind::MalformedPayload,
                reason: format!("the database refused the document: {error}"),
                failures: failures.saturating_add(1),
            },
        };
        if let Outcome::Dead {
            kind,
            reason,
            failures,
        } = &mut outcome
        {
            // Error texts quote the document often enough; the reason must store as it is.
            if let std::borrow::Cow::Owned(clean) = storable(reason) {
                *reason = clean;
            }
            let marked = self
                .stored(|| {
                    self.store
                        .mark_failed(&job.resource, job.id, *kind, *failures as i32, reason)
                })
                .await;
            match marked {
                Ok(()) => {}
                Err(Halt::Shutdown) => return None,
                Err(Halt::Refused(error)) => {
                    tracing::error!(%error, "cannot mark the item failed; dead-lettering it anyway");
                }
            }
        }
        Some(outcome)
    }

    async fn run(&self, job: &Job, failures: u32) -> Result<Outcome, Halt> {
        let item = self
            .stored(|| self.states.state(&job.resource, job.id))
            .await?;
        if item.done {
            tracing::debug!("already done; no API call");
            return Ok(Outcome::Done {
                written: false,
                links: Vec::new(),
            });
        }
        let tries = failures.saturating_add(1);
        // A followed job needs the document's links, which pokeq does not keep: it asks for the
        // whole document, as a `304 Not Modified` would leave nothing to follow.
        let known = (!item.validators.is_empty() && !job.follow).then_some(&item.validators);
        // `decode` accepted only known resources; any other than pokemon is in `resources`.
        let other = resources::by_name(&job.resource);
        let fetched = match other {
            Some(resource) => self.api.document(resource, job.id, known).await,
            None => self.api.pokemon(job.id, known).await,
        };
        let (body, validators) = match fetched {
            Ok(Fetched::Document { body, validators }) => (body, validators),
            Ok(Fetched::NotModified) => {
                tracing::debug!("not modified since stored; no write");
                self.stored(|| {
                    self.store
                        .mark_unchanged(&job.resource, job.id, tries as i32)
                })
                .await?;
                return Ok(Outcome::Done {
                    written: false,
                    links: Vec::new(),
                });
            }
            Err(FetchError::NotFound) => {
                return Ok(Outcome::Dead {
                    kind: ErrorKind::NotFound,
                    reason: format!("{} {} not found (HTTP 404)", job.resource, job.id),
                    failures: tries,
                });
            }
            Err(FetchError::Interrupted) => {
                tracing::info!("stopping while the API is unavailable; handing the job back");
                return Err(Halt::Shutdown);
            }
            Err(FetchError::Permanent(reason)) => {
                return Ok(Outcome::Dead {
                    kind: ErrorKind::MalformedPayload,
                    reason,
                    failures: tries,
                });
            }
            Err(FetchError::Transient {
                reason,
                retry_after,
            }) => {
                if tries >= self.max_attempts {
                    return Ok(Outcome::Dead {
                        kind: ErrorKind::Exhausted,
                        reason: format!("{tries} attempts failed; last: {reason}"),
                        failures: tries,
                    });
                }
                self.stored(|| {
                    self.store
                        .record_attempt(&job.resource, job.id, tries as i32, &reason)
                })
                .await?;
                let delay = self.delays.next(tries, retry_after).clone();
                let not_before = retry_after
                    .filter(|wait| *wait > delay.duration)
                    .map(|wait| unix_millis() + wait.as_millis() as i64);
                return Ok(Outcome::Retry {
                    delay,
                    failures: tries,
                    error: reason,
                    not_before,
                });
            }
        };
        let document = match other {
            Some(resource) => resource.transform(job.id, &body).map(|record| {
                Document::Record(SaveRecord {
                    record,
                    validators,
                    attempts: tries as i32,
                })
            }),
            None => transform(job.id, &body).map(|pokemon| {
                Document::Pokemon(SaveRow {
                    pokemon,
                    validators,
                    attempts: tries as i32,
                })
            }),
        };
        let document = match document {
            Ok(document) => document,
            Err(error) => {
                return Ok(Outcome::Dead {
                    kind: ErrorKind::MalformedPayload,
                    reason: error.0,
                    failures: tries,
                });
            }
        };
        // A followed document's links go in the same commit as the document: it is never done
        // without them known (a crash after the commit loses none).
        let links = if job.follow {
            links::links(&job.resource, &body)
        } else {
            Vec::new()
        };
        drop(body);
        let finished = Finished { document, links };
        let committed = self
            .stored(|| self.committer.commit(finished.clone()))
            .await?;
        let links = committed
            .enqueued
            .into_iter()
            .map(|(resource, id)| Job::of(resource, id, "").following(true))
            .collect();
        Ok(Outcome::Done {
            written: committed.written,
            links,
        })
    }

    /// Runs a store operation until it succeeds, waiting ([`retry::CONSUMER_DATABASE`]) while
    /// the database is unavailable or needs an operator; [`Halt::Refused`] at once if it refuses
    /// the item's data, [`Halt::Shutdown`] if shutdown comes first.
    async fn stored<T, F, Fut>(&self, operation: F) -> Result<T, Halt>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let mut backoff = retry::CONSUMER_DATABASE.waits();
        loop {
            let error = match operation().await {
                Ok(value) => {
                    self.health.set_database(true);
                    return Ok(value);
                }
                Err(error) => error,
            };
            let class = error.class();
            if class == ErrorClass::Permanent {
                // The database answered: it is up, and this item alone is at fault.
                self.health.set_database(true);
                return Err(Halt::Refused(error));
            }
            self.health.set_database(false);
            let wait = backoff.next().unwrap_or(retry::CONSUMER_DATABASE.longest);
            if class == ErrorClass::Operator {
                tracing::error!(%error, ?wait, "the database fails pokeq's statements; waiting for an operator, attempt not counted");
            } else {
                tracing::warn!(%error, ?wait, "database unavailable; waiting, attempt not counted");
            }
            metrics::counter!(metrics::RECONNECTS, "target" => "database").increment(1);
            tokio::select! {
                () = self.shutdown.cancelled() => return Err(Halt::Shutdown),
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// Why a job stopped before it had an outcome of its own.
enum Halt {
    /// Shutdown came while waiting for the database or the API: hand the job back untouched.
    Shutdown,
    /// The database refused the item's data.
    Refused(StoreError),
}
