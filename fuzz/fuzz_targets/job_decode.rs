//! `Job::decode` over arbitrary message bodies: it must never panic, accept only a job this
//! build can run (and that re-encodes to itself), and refuse everything else with a reason.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pokeq_shared::job::{Job, RESOURCE, VERSION};

fuzz_target!(|body: &[u8]| {
    match Job::decode(body) {
        Ok(job) => {
            assert_eq!(job.v, VERSION);
            assert_eq!(job.resource, RESOURCE);
            assert!(job.id > 0, "accepted id {}", job.id);
            assert_eq!(Job::decode(&job.encode()).as_ref(), Ok(&job));
        }
        Err(error) => assert!(!error.0.trim().is_empty(), "refusal without a reason"),
    }
});
