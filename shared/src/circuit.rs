//! A circuit breaker for the API: when it fails for everything, stop asking and wait.
//!
//! An outage of the API (connection refused, DNS failure, timeouts, 5xx on every request) is
//! not a failure of the items that happen to be in flight. While the API answers nothing but
//! failures, the circuit is *open*: requests wait instead of failing their jobs, one of them is
//! let through about once a second as a probe (half-open), and the first answer that shows the
//! API is back closes the circuit and lets every waiting request go.
//!
//! A probe asks for a document the API served before (see `PokeApi`), so a run whose last
//! requests are all for ids a flaky backend fails (they fail in a row too) closes the circuit
//! again at the first probe, and those jobs are retried as usual.
//!
//! The circuit opens after [`THRESHOLD`] outage-like failures in a row with no success for at
//! least [`QUIET`]: a healthy API that fails some ids (a flaky backend behind it) answers
//! successes between the failures every few milliseconds, so it never opens, while a dead one
//! opens within a fraction of a second under load, or after a few failures at a trickle.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;

/// Outage-like failures in a row before the circuit may open.
pub const THRESHOLD: u32 = 5;
/// How long without a single success those failures must span. Short, so that jobs failing
/// during an outage spend at most an attempt or two before the circuit holds them.
pub const QUIET: Duration = Duration::from_millis(250);
/// Time between probes while the circuit is open.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// The API's state as this process sees it, for metrics, logs, `/readyz` and `pokeq status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    Open {
        /// Wall-clock time the circuit opened, in Unix milliseconds.
        since_unix_ms: i64,
        /// The failure that opened it, or the latest probe's.
        error: String,
    },
}

impl CircuitState {
    pub fn is_open(&self) -> bool {
        matches!(self, CircuitState::Open { .. })
    }
}

pub struct Circuit {
    inner: Mutex<Inner>,
    /// Woken when the circuit closes or a probe ends, so waiting requests look again.
    changed: Notify,
    state: watch::Sender<CircuitState>,
}

struct Inner {
    open: bool,
    /// Failures in a row since the last success.
    consecutive: u32,
    last_success: Instant,
    /// While open: a probe is in flight.
    probing: bool,
    /// While open: when the next probe may go.
    next_probe: Instant,
    last_error: String,
}

/// Leave to send one request, got from [`Circuit::admit`]; report how it went with
/// [`Circuit::succeeded`] or [`Circuit::failed`]. A probe dropped unreported (its job was
/// cancelled) frees the probe slot for the next waiter.
pub struct Ticket<'a> {
    circuit: &'a Circuit,
    probe: bool,
    reported: bool,
}

impl Ticket<'_> {
    pub fn is_probe(&self) -> bool {
        self.probe
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if self.probe && !self.reported {
            if let Ok(mut inner) = self.circuit.inner.lock() {
                inner.probing = false;
            }
            self.circuit.changed.notify_waiters();
        }
    }
}

impl Default for Circuit {
    fn default() -> Self {
        Self::new()
    }
}

impl Circuit {
    pub fn new() -> Self {
        let now = Instant::now();
        crate::metrics::gauge!(crate::metrics::API_CIRCUIT_OPEN).set(0.0);
        Self {
            inner: Mutex::new(Inner {
                open: false,
                consecutive: 0,
                last_success: now,
                probing: false,
                next_probe: now,
                last_error: String::new(),
            }),
            changed: Notify::new(),
            state: watch::channel(CircuitState::Closed).0,
        }
    }

    /// The current state; a receiver sees every change.
    pub fn watch(&self) -> watch::Receiver<CircuitState> {
        self.state.subscribe()
    }

    pub fn is_open(&self) -> bool {
        self.inner.lock().map(|inner| inner.open).unwrap_or(false)
    }

    /// Waits until a request may go: at once while closed; while open, until the circuit
    /// closes or it is this caller's turn to probe.
    pub async fn admit(&self) -> Ticket<'_> {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before looking, so a close between the look and the wait is not missed.
            changed.as_mut().enable();
            let wake_at = {
                let Ok(mut inner) = self.inner.lock() else {
                    return self.ticket(false);
                };
                if !inner.open {
                    return self.ticket(false);
                }
                let now = Instant::now();
                if !inner.probing && now >= inner.next_probe {
                    inner.probing = true;
                    return self.ticket(true);
                }
                (!inner.probing).then_some(inner.next_probe)
            };
            match wake_at {
                Some(at) => {
                    tokio::select! {
                        () = &mut changed => {}
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
                None => changed.await,
            }
        }
    }

    fn ticket(&self, probe: bool) -> Ticket<'_> {
        Ticket {
            circuit: self,
            probe,
            reported: false,
        }
    }

    /// The API answered (any answer that shows it is up, errors of the item's own included):
    /// closes the circuit if it was open.
    pub fn succeeded(&self, mut ticket: Ticket<'_>) {
        ticket.reported = true;
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        inner.consecutive = 0;
        inner.last_success = Instant::now();
        if ticket.probe {
            inner.probing = false;
        }
        if inner.open {
            inner.open = false;
            inner.probing = false;
            drop(inner);
            tracing::info!("API answers again; circuit closed");
            crate::metrics::gauge!(crate::metrics::API_CIRCUIT_OPEN).set(0.0);
            self.state.send_replace(CircuitState::Closed);
            self.changed.notify_waiters();
        } else if ticket.probe {
            drop(inner);
            self.changed.notify_waiters();
        }
    }

    /// The API failed as it does in an outage (no answer, a timeout, a 5xx). Returns true if
    /// the circuit is open now: the failure is the API's, not the job's, and the request should
    /// wait and go again instead of failing its job.
    pub fn failed(&self, mut ticket: Ticket<'_>, error: &str) -> bool {
        ticket.reported = true;
        let Ok(mut inner) = self.inner.lock() else {
            return false;
        };
        let now = Instant::now();
        inner.consecutive = inner.consecutive.saturating_add(1);
        inner.last_error = error.to_owned();
        if ticket.probe {
            inner.probing = false;
            inner.next_probe = now + PROBE_INTERVAL;
            drop(inner);
            tracing::debug!(%error, "API probe failed; circuit stays open");
            self.changed.notify_waiters();
            return true;
        }
        if inner.open {
            return true;
        }
        if inner.consecutive < THRESHOLD || now.duration_since(inner.last_success) < QUIET {
            return false;
        }
        inner.open = true;
        inner.probing = false;
        // The first probe goes at once: asked for a document the API served before, it tells
        // an outage from resources failing on their own within one round trip.
        inner.next_probe = now;
        let failures = inner.consecutive;
        drop(inner);
        tracing::warn!(
            %error,
            failures,
            "API fails for everything; circuit open, jobs wait without spending attempts"
        );
        crate::metrics::gauge!(crate::metrics::API_CIRCUIT_OPEN).set(1.0);
        self.state.send_replace(CircuitState::Open {
            since_unix_ms: crate::job::unix_millis(),
            error: error.to_owned(),
        });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail(circuit: &Circuit, n: u32) -> bool {
        let mut open = false;
        for _ in 0..n {
            let ticket = circuit.ticket(false);
            open = circuit.failed(ticket, "connection refused");
        }
        open
    }

    #[tokio::test(start_paused = true)]
    async fn opens_only_after_failures_with_no_success_for_a_while() {
        let circuit = Circuit::new();
        assert!(
            !fail(&circuit, 10),
            "a burst right after a success stays closed"
        );
        tokio::time::advance(QUIET).await;
        assert!(fail(&circuit, 1), "failing on past the quiet time opens it");
        assert!(circuit.is_open());
        assert!(circuit.watch().borrow().is_open());
    }

    #[tokio::test(start_paused = true)]
    async fn successes_between_failures_keep_it_closed() {
        let circuit = Circuit::new();
        for _ in 0..100 {
            tokio::time::advance(Duration::from_millis(100)).await;
            assert!(!fail(&circuit, THRESHOLD - 1));
            circuit.succeeded(circuit.ticket(false));
        }
        assert!(!circuit.is_open());
    }

    #[tokio::test(start_paused = true)]
    async fn open_circuit_lets_one_probe_a_second_and_closes_on_success() {
        let circuit = Circuit::new();
        tokio::time::advance(QUIET).await;
        assert!(fail(&circuit, THRESHOLD));
        let opened = Instant::now();

        let probe = circuit.admit().await;
        assert!(probe.is_probe());
        assert_eq!(
            opened.elapsed(),
            Duration::ZERO,
            "the first probe goes at once"
        );
        // While the probe is out, nobody else goes.
        assert!(
            tokio::time::timeout(Duration::from_secs(5), circuit.admit())
                .await
                .is_err()
        );
        assert!(circuit.failed(probe, "still refused"));

        let before = Instant::now();
        let probe = circuit.admit().await;
        assert!(probe.is_probe());
        assert_eq!(before.elapsed(), PROBE_INTERVAL, "then one a second");

        let waiter = async {
            let ticket = circuit.admit().await;
            assert!(!ticket.is_probe(), "after the close, requests go as usual");
        };
        let closer = async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            circuit.succeeded(probe);
        };
        tokio::join!(waiter, closer);
        assert!(!circuit.is_open());
        assert_eq!(*circuit.watch().borrow(), CircuitState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_probe_frees_the_slot() {
        let circuit = Circuit::new();
        tokio::time::advance(QUIET).await;
        assert!(fail(&circuit, THRESHOLD));
        let probe = circuit.admit().await;
        drop(probe);
        let next = tokio::time::timeout(Duration::from_millis(10), circuit.admit()).await;
        assert!(next.is_ok_and(|t| t.is_probe()));
    }
}
