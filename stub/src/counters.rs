//! Request accounting, readable by tests while the server runs.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::resource::Resource;

/// Lock-free counters of one resource: one slot per served id plus totals.
#[derive(Debug)]
struct Tally {
    per_position: Vec<AtomicU32>,
    total_detail: AtomicU64,
    not_modified: AtomicU64,
    list: AtomicU64,
}

/// The [`Tally`] of every resource, indexed by [`Resource::index`].
#[derive(Debug)]
pub(crate) struct Counters {
    tallies: Vec<Tally>,
}

impl Counters {
    /// `positions(resource)`: how many ids the resource serves.
    pub(crate) fn new(positions: impl Fn(Resource) -> usize) -> Self {
        Counters {
            tallies: Resource::ALL
                .iter()
                .map(|&resource| Tally {
                    per_position: (0..positions(resource))
                        .map(|_| AtomicU32::new(0))
                        .collect(),
                    total_detail: AtomicU64::new(0),
                    not_modified: AtomicU64::new(0),
                    list: AtomicU64::new(0),
                })
                .collect(),
        }
    }

    fn of(&self, resource: Resource) -> &Tally {
        &self.tallies[resource.index()]
    }

    /// Counts a detail request (any id, known or not).
    pub(crate) fn detail(&self, resource: Resource) {
        self.of(resource)
            .total_detail
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request for a known id; returns how many came before it (its 0-based number).
    pub(crate) fn hit(&self, resource: Resource, pos: usize) -> u32 {
        self.of(resource)
            .per_position
            .get(pos)
            .map_or(0, |c| c.fetch_add(1, Ordering::Relaxed))
    }

    /// Counts a conditional request answered 304.
    pub(crate) fn not_modified(&self, resource: Resource) {
        self.of(resource)
            .not_modified
            .fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn not_modified_total(&self, resource: Resource) -> u64 {
        self.of(resource).not_modified.load(Ordering::Relaxed)
    }

    pub(crate) fn list(&self, resource: Resource) {
        self.of(resource).list.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn hits(&self, resource: Resource, pos: usize) -> u32 {
        self.of(resource)
            .per_position
            .get(pos)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    pub(crate) fn total_detail(&self, resource: Resource) -> u64 {
        self.of(resource).total_detail.load(Ordering::Relaxed)
    }

    pub(crate) fn lists(&self, resource: Resource) -> u64 {
        self.of(resource).list.load(Ordering::Relaxed)
    }
}
