//! What a stub instance serves and how it misbehaves.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::faults::FaultRule;
use crate::resource::Resource;

/// Configuration of one stub server.
#[derive(Clone, Debug)]
pub struct StubConfig {
    /// Number of pokemon listed and served (ids `1..=1025`, then `10001...`).
    pub count: u32,
    /// Seed of the synthetic data and of rate-based faults. Same seed, same bytes.
    pub seed: u64,
    /// Added before answering every list and detail request.
    pub latency: Duration,
    /// Fraction (0..=1) of detail requests (of every resource) that get a transient fault (429,
    /// 503 or a dropped body), decided deterministically from seed, resource, id and the request
    /// number for that id.
    pub fault_rate: f64,
    /// Share (0..=1) of ids, chosen deterministically from seed and id, whose first
    /// `flaky_times` detail requests answer 503 (without `Retry-After`): a flaky backend behind
    /// a healthy API.
    pub flaky_share: f64,
    pub flaky_times: u32,
    /// Faults for specific pokemon ids; they take precedence over `fault_rate`.
    pub faults: HashMap<i32, FaultRule>,
    /// Faults for specific ids of any resource (pokemon too), as `faults`.
    pub resource_faults: HashMap<(Resource, i32), FaultRule>,
    /// Serve the real payloads in `<dir>/pokemon/*.json` (cycled over the ids) instead of
    /// synthetic ones, and those of `<dir>/<resource>/*.json` for the other resources (each
    /// folder's files, by their ids). `seed` then only affects rate-based faults.
    pub samples_dir: Option<PathBuf>,
}

impl Default for StubConfig {
    /// The size of the real API (1351 pokemon), seed 1, no latency, no faults.
    fn default() -> Self {
        StubConfig {
            count: 1351,
            seed: 1,
            latency: Duration::ZERO,
            fault_rate: 0.0,
            flaky_share: 0.0,
            flaky_times: 0,
            faults: HashMap::new(),
            resource_faults: HashMap::new(),
            samples_dir: None,
        }
    }
}
