use std::process::ExitCode;

use clap::Parser;
use pokeq_consumer::Cli;
use pokeq_shared::exit;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One worker thread: a consumer's work is I/O, the hand-offs between threads cost more than
    // a second thread brings, and consumers scale by process (one per core). Measured with the
    // benchmark: 0.22 -> 0.19 ms of consumer CPU per item; one consumer alone 2,600 -> 2,400
    // items/s, two 3,400 -> 3,500-3,700 on 2 cores. TOKIO_WORKER_THREADS overrides it.
    exit::main_with_workers(
        "consumer",
        Some(1),
        cli.validate(),
        |config| config.common.log_format,
        pokeq_consumer::run,
    )
}
