//! Politeness towards the API: one request rate shared by every process, an adaptive cap on
//! concurrent requests per process, and the pause the API asks for with `Retry-After`.
//!
//! The shared rate lives in Postgres, the one thing every producer and consumer replica already
//! reaches, on any host: a process reserves a short window of request slots with one statement
//! (`Store::reserve_rate`) and spends them locally, so the database sees a few statements per
//! second per busy process, not one per request.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, Notify};
use tokio::time::Instant;

use crate::store::Store;

/// Name of the shared limiter row for PokeAPI requests.
const LIMITER: &str = "pokeapi";
/// Longest pause of every request for one `Retry-After`; a longer wait is served per job,
/// through the retry queues.
const MAX_PAUSE: Duration = Duration::from_secs(60);

/// Politeness settings of one process.
#[derive(Debug, Clone)]
pub struct Politeness {
    /// Requests per second across every process sharing the database; `None` for no limit.
    pub rate: Option<f64>,
    /// Requests in flight at once from this process.
    pub concurrency: usize,
}

impl Default for Politeness {
    fn default() -> Self {
        Self {
            rate: Some(20.0),
            concurrency: 64,
        }
    }
}

/// How hard this process may use the API; flattened into the producer's and consumer's flags.
#[derive(Debug, Clone, clap::Args)]
pub struct PolitenessArgs {
    /// API requests per second shared by every producer and consumer using the same database
    /// (0: no limit). PokeAPI's fair use asks for restraint.
    #[arg(long, env = "POKEQ_RATE", default_value = "20", value_parser = parse_rate)]
    pub rate: Rate,

    /// API requests in flight at once from this process. Each costs memory while it lasts and
    /// after (a keep-alive connection keeps a read buffer of up to 400 KB); 16 keep a local API
    /// busy. For a slow API raise it to about the wanted items/s × the latency, and the
    /// consumer's --prefetch to about twice that.
    #[arg(long, env = "POKEQ_API_CONCURRENCY", default_value_t = 16,
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub api_concurrency: u16,
}

impl PolitenessArgs {
    pub fn politeness(&self) -> Politeness {
        Politeness {
            rate: self.rate.0,
            concurrency: usize::from(self.api_concurrency),
        }
    }
}

/// A `--rate` value: requests per second, or no limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate(pub Option<f64>);

/// Parses `--rate`: requests per second, `0` for no limit.
pub fn parse_rate(text: &str) -> Result<Rate, String> {
    let rate: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number of requests per second"))?;
    if !rate.is_finite() || rate < 0.0 {
        return Err(format!(
            "{text:?}: the rate must be 0 (no limit) or positive"
        ));
    }
    Ok(Rate((rate > 0.0).then_some(rate)))
}

/// Gate every API request passes: the shared rate, the adaptive cap on requests in flight and
/// the pause the API asked for.
pub struct Gate {
    rate: Option<SharedRate>,
    limit: Limit,
    /// Until when every request waits, because the API said so (`Retry-After`).
    pause: std::sync::Mutex<Option<Instant>>,
}

struct SharedRate {
    store: Store,
    per_second: f64,
    /// Slots reserved at a time: about a quarter second's worth.
    chunk: u32,
    slots: Mutex<VecDeque<Instant>>,
}

/// Leave for one request in flight; dropping it frees the place.
pub struct Permit<'a> {
    gate: &'a Gate,
    /// The limit's epoch when the request left: only a request sent after the last decrease
    /// may cause another, so one overloaded moment halves nothing twice.
    epoch: u64,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.gate.limit.release();
    }
}

impl Gate {
    /// A gate without a shared rate (tests, or `--rate 0`).
    pub fn local(concurrency: usize) -> Arc<Self> {
        Arc::new(Self {
            rate: None,
            limit: Limit::new(concurrency),
            pause: std::sync::Mutex::default(),
        })
    }

    pub fn new(politeness: &Politeness, store: Option<Store>) -> Arc<Self> {
        let rate = match (politeness.rate, store) {
            (Some(per_second), Some(store)) => Some(SharedRate {
                store,
                per_second,
                chunk: ((per_second / 4.0).ceil() as u32).clamp(1, 50),
                slots: Mutex::new(VecDeque::new()),
            }),
            _ => None,
        };
        Arc::new(Self {
            rate,
            limit: Limit::new(politeness.concurrency),
            pause: std::sync::Mutex::default(),
        })
    }

    /// Waits for this process's turn; the permit holds a place among the requests in flight
    /// until dropped.
    pub async fn enter(&self) -> Permit<'_> {
        let epoch = self.limit.acquire().await;
        let permit = Permit { gate: self, epoch };
        let paused_until = self.pause.lock().map(|p| *p).unwrap_or(None);
        if let Some(until) = paused_until {
            tokio::time::sleep_until(until).await;
        }
        if let Some(rate) = &self.rate {
            tokio::time::sleep_until(rate.next_slot().await).await;
        }
        permit
    }

    /// The API answered 429 or 503 with `Retry-After`: every request of this process waits
    /// that long (at most [`MAX_PAUSE`]), and so does every process sharing the rate limiter.
    pub fn asked_to_wait(&self, wait: Duration) {
        let wait = wait.min(MAX_PAUSE);
        if let Ok(mut pause) = self.pause.lock() {
            let until = Instant::now() + wait;
            *pause = Some(pause.map_or(until, |u| u.max(until)));
        }
        if let Some(rate) = &self.rate {
            rate.hold(wait);
        }
    }

    /// The API is overloaded without saying for how long (5xx, a 429 without `Retry-After`, a
    /// timeout): fewer requests in flight (multiplicative decrease).
    pub fn overloaded(&self, permit: &Permit<'_>) {
        self.limit.decrease(permit.epoch);
    }

    /// The API answered normally: one more request in flight per round of answers (additive
    /// increase), up to the configured concurrency.
    pub fn answered(&self) {
        self.limit.increase();
    }

    /// Requests allowed in flight now.
    pub fn current_limit(&self) -> usize {
        self.limit.current()
    }
}

/// An AIMD limit on requests in flight, as TCP's congestion window or Vector's adaptive request
/// concurrency: each answer adds `1 / limit` (one per round trip of the whole window), each
/// overload multiplies it by [`DECREASE`] (at most once per window). A flaky backend that fails
/// some ids costs a little concurrency; an API failing everything drives it down to one.
struct Limit {
    state: std::sync::Mutex<LimitState>,
    freed: Notify,
    max: f64,
}

struct LimitState {
    limit: f64,
    in_flight: usize,
    epoch: u64,
}

/// Factor of each decrease: Vector's default. Gentle, so a few failing ids among many
/// successes settle the limit near the top (equilibrium where `(1 - DECREASE) × limit = 1`).
const DECREASE: f64 = 0.9;

impl Limit {
    fn new(max: usize) -> Self {
        let max = max.max(1) as f64;
        crate::metrics::gauge!(crate::metrics::API_CONCURRENCY_LIMIT).set(max);
        Self {
            state: std::sync::Mutex::new(LimitState {
                limit: max,
                in_flight: 0,
                epoch: 0,
            }),
            freed: Notify::new(),
            max,
        }
    }

    async fn acquire(&self) -> u64 {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let Ok(mut state) = self.state.lock() else {
                    return 0;
                };
                if (state.in_flight as f64) < state.limit.floor().max(1.0) {
                    state.in_flight += 1;
                    return state.epoch;
                }
            }
            freed.await;
        }
    }

    fn release(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.in_flight = state.in_flight.saturating_sub(1);
        }
        self.freed.notify_one();
    }

    fn increase(&self) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let before = state.limit.floor();
        state.limit = (state.limit + 1.0 / state.limit).min(self.max);
        if state.limit.floor() > before {
            crate::metrics::gauge!(crate::metrics::API_CONCURRENCY_LIMIT).set(state.limit.floor());
            drop(state);
            self.freed.notify_one();
        }
    }

    fn decrease(&self, epoch: u64) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        if epoch != state.epoch {
            return;
        }
        state.epoch += 1;
        state.limit = (state.limit * DECREASE).max(1.0);
        crate::metrics::gauge!(crate::metrics::API_CONCURRENCY_LIMIT).set(state.limit.floor());
    }

    fn current(&self) -> usize {
        self.state
            .lock()
            .map_or(1, |state| state.limit.floor().max(1.0) as usize)
    }
}

impl SharedRate {
    /// Moves the shared limiter's next slot `wait` ahead, so every process pauses too; in the
    /// background, since the request that learnt it should not wait for the database.
    fn hold(&self, wait: Duration) {
        let store = self.store.clone();
        tokio::spawn(async move {
            if let Err(error) = store.hold_rate(LIMITER, wait.as_secs_f64()).await {
                tracing::debug!(%error, "cannot share the API's Retry-After");
            }
        });
    }

    async fn next_slot(&self) -> Instant {
        let mut slots = self.slots.lock().await;
        if let Some(slot) = slots.pop_front() {
            return slot;
        }
        let spacing = Duration::from_secs_f64(1.0 / self.per_second);
        let start = match self
            .store
            .reserve_rate(LIMITER, self.per_second, self.chunk)
            .await
        {
            Ok(wait) => Instant::now() + Duration::from_secs_f64(wait.max(0.0)),
            Err(error) => {
                // Without the database the process cannot store results either; pacing
                // locally at the full rate keeps it polite until the database is back.
                tracing::warn!(%error, "shared rate unavailable; pacing locally");
                Instant::now() + spacing * self.chunk
            }
        };
        slots.extend((0..self.chunk).map(|i| start + spacing * i));
        slots.pop_front().unwrap_or(start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_zero_means_unlimited() {
        assert_eq!(parse_rate("0"), Ok(Rate(None)));
        assert_eq!(parse_rate("20"), Ok(Rate(Some(20.0))));
        assert_eq!(parse_rate("0.5"), Ok(Rate(Some(0.5))));
        assert!(parse_rate("-1").is_err());
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("inf").is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_pauses_every_request_up_to_the_cap() {
        let gate = Gate::local(4);
        gate.asked_to_wait(Duration::from_secs(7));
        let started = Instant::now();
        drop(gate.enter().await);
        assert_eq!(started.elapsed(), Duration::from_secs(7));

        gate.asked_to_wait(Duration::from_secs(3600));
        let capped = Instant::now();
        drop(gate.enter().await);
        assert_eq!(capped.elapsed(), MAX_PAUSE, "capped");

        let free = Instant::now();
        drop(gate.enter().await);
        assert_eq!(free.elapsed(), Duration::ZERO, "the pause is over");
    }

    #[tokio::test(start_paused = true)]
    async fn overload_lowers_the_limit_once_per_window_and_answers_raise_it() {
        let gate = Gate::local(16);
        assert_eq!(gate.current_limit(), 16);
        // Sixteen requests of one window all fail: one decrease, not sixteen.
        let window: Vec<_> = futures_util::future::join_all((0..16).map(|_| gate.enter())).await;
        for permit in &window {
            gate.overloaded(permit);
        }
        drop(window);
        assert_eq!(gate.current_limit(), 14, "16 × 0.9 = 14.4");

        // Every request failing, window after window: down to one, never zero.
        for _ in 0..100 {
            let permit = gate.enter().await;
            gate.overloaded(&permit);
        }
        assert_eq!(gate.current_limit(), 1);

        // Answers bring it back up, one per window, to the configured cap and no further.
        for _ in 0..1000 {
            let _permit = gate.enter().await;
            gate.answered();
        }
        assert_eq!(gate.current_limit(), 16);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lowered_limit_holds_requests_back() {
        let gate = Gate::local(2);
        for _ in 0..20 {
            let permit = gate.enter().await;
            gate.overloaded(&permit);
        }
        let one = gate.enter().await;
        let second = tokio::time::timeout(Duration::from_secs(1), gate.enter()).await;
        assert!(second.is_err(), "only one request in flight after overload");
        drop(one);
        assert!(
            tokio::time::timeout(Duration::from_secs(1), gate.enter())
                .await
                .is_ok()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_is_capped_per_process() {
        let gate = Gate::local(2);
        let a = gate.enter().await;
        let _b = gate.enter().await;
        let third = tokio::time::timeout(Duration::from_secs(1), gate.enter()).await;
        assert!(third.is_err(), "a third request waits");
        drop(a);
        assert!(
            tokio::time::timeout(Duration::from_secs(1), gate.enter())
                .await
                .is_ok()
        );
    }
}
