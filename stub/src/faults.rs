//! Fault injection for detail requests: per-id rules and a deterministic random rate.
//!
//! Consumers must survive what the real API and networks do (rate limits, 5xx, truncated bodies,
//! slow responses); these faults let tests trigger each case on purpose and reproducibly.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::resource::Resource;
use crate::rng::{hash3, unit_from};

/// How a detail request misbehaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// 404 with body `Not Found`, as for an unknown id.
    NotFound,
    /// 429 with a `Retry-After` header.
    TooManyRequests { retry_after_secs: u64 },
    /// That status code (e.g. 500, 503) with its reason phrase as body.
    ServerError(u16),
    /// 200 with a truncated, invalid JSON body (Content-Length matches what is sent).
    MalformedJson,
    /// 200 announcing the full Content-Length, then half the body, then the connection is
    /// aborted, so the client sees an incomplete body.
    DropMidBody,
    /// Headers at once, the body only after this delay.
    SlowBody(Duration),
    /// A valid payload whose top-level `id` is another id of the dataset.
    WrongId,
    /// A valid payload whose `species.name` ends with U+0000 (written `\u0000`): good JSON
    /// that no Postgres `text` or `jsonb` value can hold.
    NulInString,
}

/// How an id's entry in the list pages misbehaves (its detail requests are not affected).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListFault {
    /// The entry's `name` ends with U+0000 (written `\u0000`), which Postgres cannot store.
    NulInName,
}

/// A fault for one id: `times: Some(n)` fails only the next `n` requests for that id (counted
/// from when the rule was set), `None` fails every request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultRule {
    pub kind: FaultKind,
    pub times: Option<u32>,
}

impl FaultRule {
    /// Fails every request.
    pub fn always(kind: FaultKind) -> Self {
        FaultRule { kind, times: None }
    }

    /// Fails the next `n` requests, then lets them through.
    pub fn times(kind: FaultKind, n: u32) -> Self {
        FaultRule {
            kind,
            times: Some(n),
        }
    }
}

/// The per-id rules in force (an id of a resource), with how many failures each has left.
#[derive(Debug, Default)]
pub(crate) struct FaultTable {
    rules: Mutex<HashMap<(Resource, i32), FaultRule>>,
    /// Lets the common no-rules case skip the lock.
    any: AtomicBool,
}

impl FaultTable {
    pub(crate) fn new(rules: impl IntoIterator<Item = ((Resource, i32), FaultRule)>) -> Self {
        let table = FaultTable::default();
        for ((resource, id), rule) in rules {
            table.set(resource, id, Some(rule));
        }
        table
    }

    /// Installs (or with `None` removes) the rule for `id` of `resource`.
    pub(crate) fn set(&self, resource: Resource, id: i32, rule: Option<FaultRule>) {
        let mut rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        match rule {
            Some(rule) if rule.times != Some(0) => {
                rules.insert((resource, id), rule);
            }
            _ => {
                rules.remove(&(resource, id));
            }
        }
        self.any.store(!rules.is_empty(), Ordering::Release);
    }

    /// The fault for this request of `id` of `resource`, if any, using up one of its `times`.
    pub(crate) fn take(&self, resource: Resource, id: i32) -> Option<FaultKind> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        let mut rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        let rule = rules.get_mut(&(resource, id))?;
        let kind = rule.kind.clone();
        if let Some(left) = &mut rule.times {
            *left = left.saturating_sub(1);
            if *left == 0 {
                rules.remove(&(resource, id));
                self.any.store(!rules.is_empty(), Ordering::Release);
            }
        }
        Some(kind)
    }
}

/// Salt so fault decisions are independent of the data generated from the same seed.
const FAULT_STREAM: u64 = 0xFA17;

/// The rate-based fault for request number `n` (0-based) of `id`, if it gets one.
///
/// Deterministic: the same seed, id and request number always give the same answer, so a
/// failing run can be replayed.
pub(crate) fn rate_fault(seed: u64, id: i32, n: u32, rate: f64) -> Option<FaultKind> {
    if rate.is_nan() || rate <= 0.0 {
        return None;
    }
    let h = hash3(seed ^ FAULT_STREAM, id as u32 as u64, u64::from(n));
    if unit_from(h) >= rate {
        return None;
    }
    Some(match hash3(h, 1, 2) % 3 {
        0 => FaultKind::TooManyRequests {
            retry_after_secs: 1,
        },
        1 => FaultKind::ServerError(503),
        _ => FaultKind::DropMidBody,
    })
}

/// Salt of the choice of flaky ids.
const FLAKY_STREAM: u64 = 0xF1A4;

/// The 503 for request number `n` (0-based) of `id` if `id` is among the `share` of flaky ids
/// and has not yet failed `times` times.
pub(crate) fn flaky_fault(seed: u64, id: i32, n: u32, share: f64, times: u32) -> Option<FaultKind> {
    if share.is_nan() || share <= 0.0 || n >= times {
        return None;
    }
    let h = hash3(seed ^ FLAKY_STREAM, id as u32 as u64, 0);
    (unit_from(h) < share).then_some(FaultKind::ServerError(503))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_counts_down_then_clears() {
        const P: Resource = Resource::Pokemon;
        let table = FaultTable::default();
        table.set(P, 7, Some(FaultRule::times(FaultKind::MalformedJson, 2)));
        assert_eq!(table.take(P, 8), None);
        assert_eq!(table.take(P, 7), Some(FaultKind::MalformedJson));
        assert_eq!(table.take(P, 7), Some(FaultKind::MalformedJson));
        assert_eq!(table.take(P, 7), None);
        table.set(P, 7, Some(FaultRule::always(FaultKind::NotFound)));
        for _ in 0..5 {
            assert_eq!(table.take(P, 7), Some(FaultKind::NotFound));
        }
        table.set(P, 7, None);
        assert_eq!(table.take(P, 7), None);
    }

    #[test]
    fn rules_are_per_resource() {
        let table = FaultTable::new([(
            (Resource::PokemonSpecies, 133),
            FaultRule::times(FaultKind::ServerError(500), 1),
        )]);
        assert_eq!(table.take(Resource::Pokemon, 133), None);
        assert_eq!(
            table.take(Resource::PokemonSpecies, 133),
            Some(FaultKind::ServerError(500))
        );
        assert_eq!(table.take(Resource::PokemonSpecies, 133), None);
    }

    #[test]
    fn flaky_ids_fail_their_first_requests_only() {
        let flaky: Vec<i32> = (1..=2000)
            .filter(|&id| flaky_fault(1, id, 0, 0.15, 2).is_some())
            .collect();
        assert!((240..360).contains(&flaky.len()), "{}", flaky.len());
        for &id in &flaky {
            assert_eq!(
                flaky_fault(1, id, 1, 0.15, 2),
                Some(FaultKind::ServerError(503))
            );
            assert_eq!(flaky_fault(1, id, 2, 0.15, 2), None, "the third succeeds");
        }
        assert!((1..=100).all(|id| flaky_fault(1, id, 0, 0.0, 2).is_none()));
    }

    #[test]
    fn rate_is_deterministic_and_roughly_right() {
        let faults: Vec<_> = (1..=4000).map(|id| rate_fault(3, id, 0, 0.25)).collect();
        let again: Vec<_> = (1..=4000).map(|id| rate_fault(3, id, 0, 0.25)).collect();
        assert_eq!(faults, again);
        let hits = faults.iter().filter(|f| f.is_some()).count();
        assert!((800..1200).contains(&hits), "{hits}");
        assert!((1..=100).all(|id| rate_fault(3, id, 0, 1.0).is_some()));
        assert!((1..=100).all(|id| rate_fault(3, id, 0, 0.0).is_none()));
        assert!(rate_fault(3, 1, 0, f64::NAN).is_none());
    }
}
