//! Politeness towards the API: one request rate shared by every process, a cap on concurrent
//! requests per process, and a pause that grows while the API says it is overloaded.
//!
//! The shared rate lives in Postgres, the one thing every producer and consumer replica already
//! reaches, on any host: a process reserves a short window of request slots with one statement
//! (`Store::reserve_rate`) and spends them locally, so the database sees a few statements per
//! second per busy process, not one per request.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, Semaphore, SemaphorePermit};
use tokio::time::Instant;

use crate::store::Store;

/// Name of the shared limiter row for PokeAPI requests.
const LIMITER: &str = "pokeapi";
/// Longest pause after repeated 429/503 answers.
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

/// Gate every API request passes: the shared rate, the local concurrency cap and the pause.
pub struct Gate {
    rate: Option<SharedRate>,
    permits: Semaphore,
    pause: std::sync::Mutex<Pause>,
}

struct SharedRate {
    store: Store,
    per_second: f64,
    /// Slots reserved at a time: about a quarter second's worth.
    chunk: u32,
    slots: Mutex<VecDeque<Instant>>,
}

#[derive(Default)]
struct Pause {
    until: Option<Instant>,
    /// Consecutive overload answers; the pause doubles with each.
    level: u32,
}

impl Gate {
    /// A gate without a shared rate (tests, or `--rate 0`).
    pub fn local(concurrency: usize) -> Arc<Self> {
        Arc::new(Self {
            rate: None,
            permits: Semaphore::new(concurrency.max(1)),
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
            permits: Semaphore::new(politeness.concurrency.max(1)),
            pause: std::sync::Mutex::default(),
        })
    }

    /// Waits for this process's turn; the permit bounds concurrent requests until dropped.
    pub async fn enter(&self) -> SemaphorePermit<'_> {
        let permit = loop {
            if let Ok(permit) = self.permits.acquire().await {
                break permit;
            }
        };
        let paused_until = self.pause.lock().map(|p| p.until).unwrap_or(None);
        if let Some(until) = paused_until {
            tokio::time::sleep_until(until).await;
        }
        if let Some(rate) = &self.rate {
            tokio::time::sleep_until(rate.next_slot().await).await;
        }
        permit
    }

    /// The API answered 429 or 503: pause every request of this process for the time it asked
    /// for, or for a pause that doubles with each consecutive overload answer (1 s to 60 s).
    pub fn overloaded(&self, retry_after: Option<Duration>) {
        if let Ok(mut pause) = self.pause.lock() {
            let grown = Duration::from_secs(1)
                .saturating_mul(1 << pause.level.min(6))
                .min(MAX_PAUSE);
            let wait = retry_after.unwrap_or_default().max(grown).min(MAX_PAUSE);
            let until = Instant::now() + wait;
            pause.until = Some(pause.until.map_or(until, |u| u.max(until)));
            pause.level = pause.level.saturating_add(1);
        }
    }

    /// A normal answer: the API has recovered, stop growing the pause.
    pub fn recovered(&self) {
        if let Ok(mut pause) = self.pause.lock() {
            pause.level = 0;
        }
    }
}

impl SharedRate {
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
    async fn pause_doubles_with_each_overload_and_honours_retry_after() {
        let gate = Gate::local(4);
        let started = Instant::now();
        gate.overloaded(None);
        drop(gate.enter().await);
        assert_eq!(started.elapsed(), Duration::from_secs(1));

        gate.overloaded(None);
        let second = Instant::now();
        drop(gate.enter().await);
        assert_eq!(second.elapsed(), Duration::from_secs(2), "doubled");

        gate.recovered();
        gate.overloaded(Some(Duration::from_secs(7)));
        let third = Instant::now();
        drop(gate.enter().await);
        assert_eq!(
            third.elapsed(),
            Duration::from_secs(7),
            "Retry-After wins when longer"
        );

        for _ in 0..20 {
            gate.overloaded(None);
        }
        let capped = Instant::now();
        drop(gate.enter().await);
        assert_eq!(capped.elapsed(), MAX_PAUSE, "capped");
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
