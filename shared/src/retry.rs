//! Every retry policy of pokeq in one place: how long each kind of wait starts, how long it
//! grows, and what ends it, with the reason for each choice.
//!
//! All are exponential: the first wait, then each one doubling up to the longest. With jitter a
//! wait is stretched by a random fraction of itself (up to twice as long), so that processes
//! which failed together do not try again together. Each policy has a [`Bound`]: a number of
//! tries, a total of waiting, or none of its own, when the caller's deadline (`--patience`) or
//! shutdown ends the waiting.
//!
//! A [`Policy`] is what `backon`'s `.retry(...)` takes; loops that wait by hand (to watch
//! shutdown, or a deadline) take its [`Policy::waits`].

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// What ends a policy's waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// This many tries in all, the first included: one wait fewer.
    Tries(usize),
    /// The waits end before they would add up to more than this.
    Total(Duration),
    /// No end of its own: the caller stops at its deadline or at shutdown.
    Caller,
}

/// Exponential backoff: `first`, doubling up to `longest`, stretched by jitter if `jitter`,
/// until `bound`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub first: Duration,
    /// The cap of a wait before jitter (which may stretch it up to twice as long).
    pub longest: Duration,
    pub jitter: bool,
    pub bound: Bound,
}

impl Policy {
    /// The same policy as `backon`'s builder.
    pub const fn builder(self) -> ExponentialBuilder {
        let builder = ExponentialBuilder::new()
            .with_min_delay(self.first)
            .with_max_delay(self.longest);
        let builder = match self.bound {
            Bound::Tries(tries) => builder.with_max_times(tries.saturating_sub(1)),
            Bound::Total(total) => builder.without_max_times().with_total_delay(Some(total)),
            Bound::Caller => builder.without_max_times(),
        };
        if self.jitter {
            builder.with_jitter()
        } else {
            builder
        }
    }

    /// The waits between tries, in order; with [`Bound::Caller`] they never end.
    pub fn waits(self) -> impl Iterator<Item = Duration> + Send {
        self.builder().build()
    }
}

impl BackoffBuilder for Policy {
    type Backoff = <ExponentialBuilder as BackoffBuilder>::Backoff;

    fn build(self) -> Self::Backoff {
        self.builder().build()
    }
}

const fn millis(n: u64) -> Duration {
    Duration::from_millis(n)
}

const fn seconds(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// The first connection to RabbitMQ (the producer's; `pokeq topology` and `pokeq dead`): 15 waits
/// from 200 ms doubling to 5 s, about a minute in all (56 s, up to twice that with jitter). A
/// broker still starting beside the process (compose, Kubernetes) is a normal condition and is
/// up within that; the short first waits catch one that is a second from ready, the 5 s cap
/// connects within 5 s of it being ready, and jitter spreads processes started together. A
/// broker still away after a minute is an outage, reported (exit 1) rather than waited out in
/// silence: the producer's rerun resumes where it stopped.
pub const BROKER_CONNECT: Policy = Policy {
    first: millis(200),
    longest: seconds(5),
    jitter: true,
    bound: Bound::Tries(16),
};

/// A consumer reconnecting to RabbitMQ after losing it: 200 ms doubling to 10 s, with jitter,
/// until `--patience` has passed since the first failure (a session that lasted 30 s starts
/// the policy over). A disconnected consumer has nothing else to do, so it waits as long as it
/// is told; the 10 s cap and the jitter keep many replicas from reconnecting in step to a broker
/// that is coming back, which a burst of connections and redeliveries would slow further.
pub const BROKER_RECONNECT: Policy = Policy {
    first: millis(200),
    longest: seconds(10),
    jitter: true,
    bound: Bound::Caller,
};

/// A consumer's dead-letter ledger that cannot be read while its session is fine (on a
/// cluster, the ledger is a classic queue and lives on one node, which may be down; or someone
/// deleted the queue): declared and consumed again after 1 s doubling to 10 s, with jitter,
/// for as long as the session lasts. Letters wait in the queue meanwhile, so nothing is lost
/// by waiting; the jobs go on, and the cap finds the queue within 10 s of its node's return.
pub const LEDGER_RESUBSCRIBE: Policy = Policy {
    first: seconds(1),
    longest: seconds(10),
    jitter: true,
    bound: Bound::Caller,
};

/// How long a consumer tries to publish one retry or dead letter the broker does not take.
pub const SETTLE_TOTAL: Duration = seconds(30);

/// A retry or dead letter the broker did not take (nacked, returned, unconfirmed), published
/// again: 200 ms doubling to 10 s, with jitter, until [`SETTLE_TOTAL`] of waiting. The job's
/// outcome is known, only its message is not where it must go, and its delivery stays
/// unacknowledged meanwhile, holding a prefetch slot: so the waits are short and bounded. Past
/// them the delivery is handed back, and a job whose letter the broker keeps refusing runs
/// about once per 30 s instead of in a tight loop.
pub const SETTLE: Policy = Policy {
    first: millis(200),
    longest: seconds(10),
    jitter: true,
    bound: Bound::Total(SETTLE_TOTAL),
};

/// A consumer's store call while its database is unavailable or failing pokeq's statements
/// (reading an item's state, recording an attempt, a row or a failure; the dead-letter ledger
/// marking an item failed): 200 ms doubling to 10 s, with jitter, until shutdown and never
/// before. The outcome must be recorded before the delivery is acknowledged, and an outage of
/// pokeq's own database is no fault of the job, so it costs no attempt and waits as long as it
/// takes. Every delivery in hand (up to `--prefetch` per consumer) waits on its own: the 10 s
/// cap and the jitter keep them from falling on a recovering database all at once.
pub const CONSUMER_DATABASE: Policy = Policy {
    first: millis(200),
    longest: seconds(10),
    jitter: true,
    bound: Bound::Caller,
};

/// The producer's store calls while Postgres is away: 200 ms doubling to 5 s, with jitter,
/// until `--patience` has passed since the first failure. A run is one process that someone (or
/// a CronJob) waits for, so the cap is short: the run goes on within 5 s of the database's
/// return. Its concurrent pages wait each on their own, hence the jitter.
pub const PRODUCER_DATABASE: Policy = Policy {
    first: millis(200),
    longest: seconds(5),
    jitter: true,
    bound: Bound::Caller,
};

/// Opening the store at start (producer, consumer) while Postgres cannot be reached: 200 ms
/// doubling to 5 s, until `--patience` would pass before the next try. A database still
/// starting beside the process (compose, Kubernetes) is normal; the 5 s cap opens the store
/// within 5 s of it being ready. No jitter: each process opens its store once.
pub const DATABASE_OPEN: Policy = Policy {
    first: millis(200),
    longest: seconds(5),
    jitter: false,
    bound: Bound::Caller,
};

/// One list page the API failed transiently (a timeout, a 5xx, a 429): 8 tries, the waits from
/// 250 ms doubling (to 16 s, below the 30 s cap), with jitter, each at least the API's
/// `Retry-After`: half a minute to a minute in all. An API that fails a page for longer is
/// failing the run: the producer stops (exit 1) and its rerun resumes at the pages not yet
/// done. Pages are fetched concurrently, so jitter keeps them from asking again together.
pub const LIST_PAGE: Policy = Policy {
    first: millis(250),
    longest: seconds(30),
    jitter: true,
    bound: Bound::Tries(8),
};

/// Tries of one page's publishes, the first included (see [`PAGE_PUBLISH`]).
pub const PAGE_PUBLISH_TRIES: usize = 55;

/// The jobs of one list page the broker did not confirm, published again: [`PAGE_PUBLISH_TRIES`]
/// tries, the waits from 200 ms doubling to 2 s, about 100 s in all: enough for a broker
/// restart. Past that the run fails (the unconfirmed items stay `pending`, and a rerun publishes
/// them). No jitter: every page publishes through the producer's one link, which one reconnect
/// restores for all of them. The cap is short because the wait runs on after the broker is back:
/// on a cluster whose jobs-queue leader died, the surviving nodes refuse publishes for the 3–6 s
/// of the election, and a cap of 10 s then kept the consumers idle for up to 6.5 s more (chaos
/// `leader-kill-publishing`).
pub const PAGE_PUBLISH: Policy = Policy {
    first: millis(200),
    longest: seconds(2),
    jitter: false,
    bound: Bound::Tries(PAGE_PUBLISH_TRIES),
};

/// A detail request that failed the way a flaky backend fails (a 5xx without `Retry-After`, a
/// timeout, a dropped connection), asked again within the job's attempt: `retries` more tries
/// (the consumer's `--api-retries`), the waits from 25 ms doubling, with jitter: 25–50 ms, then
/// 50–100 ms, so two of them add at most 150 ms to a job. Such a failure is usually gone that
/// soon, and the alternative, a trip through a retry queue, costs the job seconds. What still
/// fails goes to the retry queues; jitter keeps the ids a backend failed together from being
/// asked again together.
pub const fn flaky_answer(retries: u32) -> Policy {
    Policy {
        first: millis(25),
        longest: millis(400),
        jitter: true,
        bound: Bound::Tries(retries as usize + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [(&str, Policy); 10] = [
        ("BROKER_CONNECT", BROKER_CONNECT),
        ("BROKER_RECONNECT", BROKER_RECONNECT),
        ("LEDGER_RESUBSCRIBE", LEDGER_RESUBSCRIBE),
        ("SETTLE", SETTLE),
        ("CONSUMER_DATABASE", CONSUMER_DATABASE),
        ("PRODUCER_DATABASE", PRODUCER_DATABASE),
        ("DATABASE_OPEN", DATABASE_OPEN),
        ("LIST_PAGE", LIST_PAGE),
        ("PAGE_PUBLISH", PAGE_PUBLISH),
        ("flaky_answer(2)", flaky_answer(2)),
    ];

    /// The waits of `policy`, at most `limit` of them.
    fn waits(policy: Policy, limit: usize) -> Vec<Duration> {
        policy.waits().take(limit).collect()
    }

    /// `a` and `b` within a millisecond: backon doubles in `f32` seconds.
    fn close(a: Duration, b: Duration) -> bool {
        a.abs_diff(b) < millis(1)
    }

    #[test]
    fn every_wait_lies_between_the_first_and_the_longest_stretched_by_jitter() {
        for (name, policy) in ALL {
            let stretch = if policy.jitter { 2 } else { 1 };
            let waits = waits(policy, 1_000);
            assert!(!waits.is_empty(), "{name}");
            for (n, wait) in waits.iter().enumerate() {
                let base = policy
                    .first
                    .saturating_mul(1 << n.min(20))
                    .min(policy.longest);
                assert!(
                    *wait + millis(1) >= base && *wait <= base * stretch + millis(1),
                    "{name}: wait {n} is {wait:?}, its base {base:?}"
                );
            }
        }
    }

    #[test]
    fn each_policy_ends_where_its_bound_says() {
        for (name, policy) in ALL {
            let waits = waits(policy, 1_000);
            match policy.bound {
                Bound::Tries(tries) => assert_eq!(waits.len(), tries - 1, "{name}"),
                Bound::Total(total) => {
                    assert!(waits.len() < 1_000, "{name} ends");
                    let waited: Duration = waits.iter().sum();
                    assert!(waited <= total, "{name} waits {waited:?}");
                }
                Bound::Caller => assert_eq!(waits.len(), 1_000, "{name} goes on"),
            }
        }
    }

    #[test]
    fn without_jitter_the_waits_double_up_to_the_cap() {
        let expected = [200, 400, 800, 1_600, 3_200, 5_000, 5_000, 5_000].map(millis);
        let got = waits(DATABASE_OPEN, expected.len());
        assert!(
            got.iter().zip(expected).all(|(a, b)| close(*a, b)),
            "{got:?}"
        );
    }

    #[test]
    fn bounded_policies_last_what_their_reasons_say() {
        let total = |policy| waits(policy, 1_000).iter().sum::<Duration>();
        // About a minute for a broker to start: 56.2 s, up to twice that with jitter.
        let connect = total(BROKER_CONNECT);
        assert!(
            connect >= seconds(56) && connect < seconds(113),
            "{connect:?}"
        );
        // About 100 s of publishing, enough for a broker restart.
        assert!(close(total(PAGE_PUBLISH), millis(103_000)));
        // Half a minute to a minute for a list page: 31.75 s, up to twice that with jitter.
        let list = total(LIST_PAGE);
        assert!(list >= millis(31_749) && list < millis(63_500), "{list:?}");
        // A letter is published again six or seven times, not in a tight loop.
        let settle = waits(SETTLE, 1_000);
        assert!((6..=7).contains(&settle.len()), "{settle:?}");
    }
}
