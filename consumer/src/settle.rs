//! Publishing a delivery's retry or dead letter until the broker confirms it, within a bound.
//!
//! When that publish fails (nacked, returned as unroutable, not confirmed in time), the job's
//! outcome is still known: only its message is not where it must go yet. Handing the delivery
//! back at once would run the job again, asking the API again, in a tight loop for as long as
//! the publish keeps failing. So the same message is published again, with capped exponential
//! backoff ([`retry::SETTLE`]), while the channel lives; the delivery stays unacknowledged
//! meanwhile (the prefetch keeps the consumer from taking more than it can hold). An unroutable
//! publish (a wait queue someone deleted) first has the topology declared again, once. Only
//! after the bound is the delivery handed back, so a job whose letter the broker keeps refusing
//! runs about once per [`SETTLE_TOTAL`], not in a loop; if the channel or connection is gone
//! there is nobody to hand it back to: the broker redelivers it on its own.

use std::future::Future;
use std::time::Duration;

use pokeq_shared::broker::BrokerError;
use pokeq_shared::metrics;
use pokeq_shared::retry::{self, SETTLE_TOTAL};
use pokeq_shared::shutdown::CancellationToken;

/// Where a settling publish goes; the label of [`metrics::SETTLE_FAILURES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Retry,
    Dead,
    /// The jobs of the links a followed document names.
    Jobs,
}

impl Target {
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Retry => "retry",
            Target::Dead => "dead",
            Target::Jobs => "jobs",
        }
    }
}

/// Why a message could not be published, and so what becomes of its delivery.
#[derive(Debug)]
pub enum Unsettled {
    /// The channel or its connection is gone: the broker redelivers the delivery itself.
    ChannelLost(BrokerError),
    /// Still failing after [`SETTLE_TOTAL`] of waiting: hand the delivery back.
    GaveUp(BrokerError),
    /// Shutdown came while waiting: hand the delivery back.
    Stopped(BrokerError),
}

impl std::fmt::Display for Unsettled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unsettled::ChannelLost(error) => write!(f, "{error}; the channel is gone"),
            Unsettled::GaveUp(error) => write!(f, "{error}; still failing after {SETTLE_TOTAL:?}"),
            Unsettled::Stopped(error) => write!(f, "{error}; stopping"),
        }
    }
}

impl std::error::Error for Unsettled {}

/// The waits between publishes of one message: [`retry::SETTLE`].
pub fn schedule() -> impl Iterator<Item = Duration> {
    retry::SETTLE.waits()
}

/// Calls `publish` until it succeeds, waiting `waits` between failures, and counts each failure;
/// gives up when `waits` ends or [`SETTLE_TOTAL`] has passed (a publish under way then may take
/// its confirm timeout longer). After the first unroutable return, `redeclare` runs once (its
/// failure is only logged: the waits go on). `alive` says whether the channel can still carry a
/// publish.
pub async fn until_confirmed<P, PF, D, DF>(
    target: Target,
    mut publish: P,
    mut redeclare: D,
    alive: impl Fn() -> bool,
    shutdown: &CancellationToken,
    mut waits: impl Iterator<Item = Duration>,
) -> Result<(), Unsettled>
where
    P: FnMut() -> PF,
    PF: Future<Output = Result<(), BrokerError>>,
    D: FnMut() -> DF,
    DF: Future<Output = anyhow::Result<()>>,
{
    let started = tokio::time::Instant::now();
    let mut redeclared = false;
    let mut failures = 0u32;
    loop {
        let error = match publish().await {
            Ok(()) => {
                if failures > 0 {
                    tracing::info!(to = target.as_str(), failures, "published after all");
                }
                return Ok(());
            }
            Err(error) => error,
        };
        failures += 1;
        metrics::counter!(metrics::SETTLE_FAILURES, "target" => target.as_str()).increment(1);
        if !alive() {
            return Err(Unsettled::ChannelLost(error));
        }
        if matches!(error, BrokerError::Returned { .. }) && !redeclared {
            redeclared = true;
            tracing::warn!(%error, "unroutable; declaring the topology again");
            if let Err(declare) = redeclare().await {
                tracing::warn!(
                    error = format!("{declare:#}"),
                    "cannot declare the topology"
                );
            }
        }
        let Some(wait) = waits.next().filter(|_| started.elapsed() < SETTLE_TOTAL) else {
            return Err(Unsettled::GaveUp(error));
        };
        tracing::warn!(to = target.as_str(), %error, failures, ?wait, "publish failed; trying again");
        tokio::select! {
            () = shutdown.cancelled() => return Err(Unsettled::Stopped(error)),
            () = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};

    use tokio::time::Instant;

    use super::*;

    fn nacked() -> BrokerError {
        BrokerError::Nacked {
            exchange: "p.retry".into(),
            routing_key: "1s".into(),
        }
    }

    fn returned() -> BrokerError {
        BrokerError::Returned {
            exchange: "p.retry".into(),
            routing_key: "1s".into(),
            reply: "NO_ROUTE".into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_publish_that_keeps_failing_is_retried_with_growing_waits_then_given_up() {
        let started = Instant::now();
        let calls = RefCell::new(Vec::new());
        let published = until_confirmed(
            Target::Retry,
            || {
                calls.borrow_mut().push(started.elapsed());
                async { Err(nacked()) }
            },
            || async { Ok(()) },
            || true,
            &CancellationToken::new(),
            schedule(),
        )
        .await;
        assert!(
            matches!(published, Err(Unsettled::GaveUp(_))),
            "{published:?}"
        );
        let calls = calls.into_inner();
        assert!(
            (5..=15).contains(&calls.len()),
            "a handful of publishes, not a tight loop: {calls:?}"
        );
        let gaps: Vec<Duration> = calls.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(
            gaps.iter().all(|gap| *gap >= retry::SETTLE.first),
            "{gaps:?}"
        );
        assert!(
            gaps.iter().all(|gap| *gap <= retry::SETTLE.longest * 2),
            "capped (jitter at most doubles a wait): {gaps:?}"
        );
        assert!(gaps.last() > gaps.first(), "the waits grow: {gaps:?}");
        let elapsed = started.elapsed();
        assert!(
            elapsed <= SETTLE_TOTAL && elapsed >= SETTLE_TOTAL / 3,
            "bounded in total: {elapsed:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_same_message_goes_again_until_confirmed() {
        let calls = Cell::new(0);
        let published = until_confirmed(
            Target::Dead,
            || {
                calls.set(calls.get() + 1);
                let n = calls.get();
                async move { if n < 3 { Err(nacked()) } else { Ok(()) } }
            },
            || async { Ok(()) },
            || true,
            &CancellationToken::new(),
            schedule(),
        )
        .await;
        assert!(published.is_ok(), "{published:?}");
        assert_eq!(calls.get(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unroutable_publish_declares_the_topology_once() {
        let (calls, declares) = (Cell::new(0), Cell::new(0));
        let published = until_confirmed(
            Target::Retry,
            || {
                calls.set(calls.get() + 1);
                let n = calls.get();
                async move { if n < 4 { Err(returned()) } else { Ok(()) } }
            },
            || {
                declares.set(declares.get() + 1);
                async { anyhow::bail!("PRECONDITION_FAILED") }
            },
            || true,
            &CancellationToken::new(),
            schedule(),
        )
        .await;
        assert!(published.is_ok(), "{published:?}");
        assert_eq!((calls.get(), declares.get()), (4, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn publishes_that_time_out_are_bounded_in_time_too() {
        let started = Instant::now();
        let calls = Cell::new(0);
        let published = until_confirmed(
            Target::Dead,
            || {
                calls.set(calls.get() + 1);
                async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    Err(BrokerError::ConfirmTimeout(Duration::from_secs(30)))
                }
            },
            || async { Ok(()) },
            || true,
            &CancellationToken::new(),
            schedule(),
        )
        .await;
        assert!(
            matches!(published, Err(Unsettled::GaveUp(_))),
            "{published:?}"
        );
        assert_eq!(calls.get(), 1);
        assert_eq!(started.elapsed(), Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_channel_stops_at_once() {
        let started = Instant::now();
        let calls = Cell::new(0);
        let published = until_confirmed(
            Target::Retry,
            || {
                calls.set(calls.get() + 1);
                async { Err(nacked()) }
            },
            || async { Ok(()) },
            || false,
            &CancellationToken::new(),
            schedule(),
        )
        .await;
        assert!(
            matches!(published, Err(Unsettled::ChannelLost(_))),
            "{published:?}"
        );
        assert_eq!(calls.get(), 1);
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_the_wait() {
        let shutdown = CancellationToken::new();
        let cancel = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            cancel.cancel();
        });
        let started = Instant::now();
        let published = until_confirmed(
            Target::Retry,
            || async { Err(nacked()) },
            || async { Ok(()) },
            || true,
            &shutdown,
            std::iter::repeat(Duration::from_secs(10)),
        )
        .await;
        assert!(
            matches!(published, Err(Unsettled::Stopped(_))),
            "{published:?}"
        );
        assert_eq!(started.elapsed(), Duration::from_millis(500));
    }
}
