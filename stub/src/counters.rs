//! Request accounting, readable by tests while the server runs.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Lock-free counters: one slot per dataset position plus totals.
#[derive(Debug)]
pub(crate) struct Counters {
    per_position: Vec<AtomicU32>,
    total_detail: AtomicU64,
    not_modified: AtomicU64,
    list: AtomicU64,
}

impl Counters {
    pub(crate) fn new(positions: usize) -> Self {
        Counters {
            per_position: (0..positions).map(|_| AtomicU32::new(0)).collect(),
            total_detail: AtomicU64::new(0),
            not_modified: AtomicU64::new(0),
            list: AtomicU64::new(0),
        }
    }

    /// Counts a detail request (any id, known or not).
    pub(crate) fn detail(&self) {
        self.total_detail.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request for a known id; returns how many came before it (its 0-based number).
    pub(crate) fn hit(&self, pos: usize) -> u32 {
        self.per_position
            .get(pos)
            .map_or(0, |c| c.fetch_add(1, Ordering::Relaxed))
    }

    /// Counts a conditional request answered 304.
    pub(crate) fn not_modified(&self) {
        self.not_modified.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn not_modified_total(&self) -> u64 {
        self.not_modified.load(Ordering::Relaxed)
    }

    pub(crate) fn list(&self) {
        self.list.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn hits(&self, pos: usize) -> u32 {
        self.per_position
            .get(pos)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    pub(crate) fn total_detail(&self) -> u64 {
        self.total_detail.load(Ordering::Relaxed)
    }

    pub(crate) fn lists(&self) -> u64 {
        self.list.load(Ordering::Relaxed)
    }
}
