//! The `main` of the test binaries that also play the producer (`secrets.rs`, `misconfig.rs`).
//!
//! The producer's binary is not built for this crate's tests, so such a binary starts itself
//! again with [`PRODUCER_ARGS`] set, and then does exactly what the producer's `main` does. The
//! choice is made in the binary's own `main` (these targets have `harness = false`), so the
//! producer is no test of its own; the tests run through `libtest-mimic`, which takes the
//! arguments of `cargo test` (filters, `--exact`, `--test-threads`, ...) and reports alike.

use std::future::Future;
use std::process::ExitCode;

use clap::Parser;
use libtest_mimic::{Arguments, Failed, Trial};

/// Set in a child process of this test binary: the producer's arguments, separated by U+001F.
pub const PRODUCER_ARGS: &str = "POKEQ_TEST_PRODUCER_ARGS";

/// The producer, with `args` (separated by U+001F), when [`PRODUCER_ARGS`] is set; else `tests`.
pub fn main(tests: Vec<Trial>) -> ExitCode {
    match std::env::var(PRODUCER_ARGS) {
        Ok(args) => {
            let args =
                std::iter::once("producer").chain(args.split('\u{1f}').filter(|a| !a.is_empty()));
            let cli = pokeq_producer::Cli::try_parse_from(args).unwrap_or_else(|e| e.exit());
            pokeq_producer::main(cli)
        }
        Err(_) => libtest_mimic::run(&Arguments::from_args(), tests).exit_code(),
    }
}

/// `test` as `#[tokio::test]` runs one: on a runtime of its own, on the test's thread.
pub fn tokio_test<F, Fut>(name: &str, test: F) -> Trial
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    Trial::test(name, move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Failed::from(format!("cannot start a runtime: {e}")))?
            .block_on(test());
        Ok(())
    })
}

/// The trials of async test functions, each named after its function.
// Every test binary compiles this module; only those that play the producer use the macro.
#[allow(unused_macros)]
macro_rules! tokio_tests {
    ($($test:ident),* $(,)?) => {
        vec![$($crate::support::harness::tokio_test(stringify!($test), $test)),*]
    };
}
#[allow(unused_imports)]
pub(crate) use tokio_tests;
