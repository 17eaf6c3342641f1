//! One job, start to finish, without the broker: fetch, transform, store, and say what the
//! delivery loop must do with the message. Keeping the broker out makes every failure class
//! testable on its own.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pokeq_shared::job::{ErrorKind, Job};
use pokeq_shared::pokeapi::{FetchError, Fetched, PokeApi};
use pokeq_shared::store::{Store, StoreError};
use pokeq_shared::topology::{Delay, RetryDelays};
use pokeq_shared::transform::transform;

/// What became of a job, and so what the delivery loop does with its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Stored and marked done (or found done already, with no API call): ack.
    Done { written: bool },
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
    pub max_attempts: u32,
    pub delays: RetryDelays,
}

impl Handler {
    /// [`Outcome::Defer`] for a job that carries a `not_before` time still ahead.
    pub fn defer(&self, not_before: Option<i64>) -> Option<Outcome> {
        let remaining = not_before?.saturating_sub(unix_millis());
        (remaining > 0).then(|| Outcome::Defer {
            delay: self
                .delays
                .covering(Duration::from_millis(remaining as u64))
                .clone(),
        })
    }

    /// Runs `job`, which has already failed transiently `failures` times, and records the
    /// item's state: `done` with its row, the attempt and error of a retry, or `failed` with
    /// the reason of a dead letter. An error means pokeq's own database failed, not the job:
    /// the caller waits and tries again without counting an attempt.
    pub async fn handle(&self, job: &Job, failures: u32) -> Result<Outcome, StoreError> {
        let outcome = self.run(job, failures).await?;
        if let Outcome::Dead {
            kind,
            reason,
            failures,
        } = &outcome
        {
            self.store
                .mark_failed(job.id, *kind, *failures as i32, reason)
                .await?;
        }
        Ok(outcome)
    }

    async fn run(&self, job: &Job, failures: u32) -> Result<Outcome, StoreError> {
        let item = self.store.item_state(job.id).await?;
        if item.done {
            tracing::debug!("already done; no API call");
            return Ok(Outcome::Done { written: false });
        }
        let tries = failures.saturating_add(1);
        let known = (!item.validators.is_empty()).then_some(&item.validators);
        let (body, validators) = match self.api.pokemon(job.id, known).await {
            Ok(Fetched::Document { body, validators }) => (body, validators),
            Ok(Fetched::NotModified) => {
                tracing::debug!("not modified since stored; no write");
                self.store.mark_unchanged(job.id, tries as i32).await?;
                return Ok(Outcome::Done { written: false });
            }
            Err(FetchError::NotFound) => {
                return Ok(Outcome::Dead {
                    kind: ErrorKind::NotFound,
                    reason: format!("pokemon {} not found (HTTP 404)", job.id),
                    failures: tries,
                });
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
                self.store
                    .record_attempt(job.id, tries as i32, &reason)
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
        let pokemon = match transform(job.id, &body) {
            Ok(pokemon) => pokemon,
            Err(error) => {
                return Ok(Outcome::Dead {
                    kind: ErrorKind::MalformedPayload,
                    reason: error.0,
                    failures: tries,
                });
            }
        };
        let written = self
            .store
            .save_done(&pokemon, &validators, tries as i32)
            .await?;
        Ok(Outcome::Done { written })
    }
}

fn unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
