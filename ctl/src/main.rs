use std::process::ExitCode;

use clap::Parser;
use pokeq_ctl::Cli;
use pokeq_shared::exit;
use pokeq_shared::shutdown::{self, CancellationToken};
use pokeq_shared::telemetry;

/// Like `pokeq_shared::exit::main`, but a command can also be refused at run time with exit 2,
/// and errors are printed as one plain line for the person at the terminal.
fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match cli.validate() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("pokeq: {error}");
            return ExitCode::from(exit::CONFIG);
        }
    };
    telemetry::init(config.common.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("pokeq: cannot start the async runtime: {error}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    let result = runtime.block_on(async move {
        // Only `status --watch` takes over Ctrl-C, to stop cleanly between refreshes. Every
        // other command keeps the default (the process ends at once): a blocking prompt must
        // stay interruptible, and a dead-letter command cut short loses nothing, because the
        // broker hands back every message it had not been told to remove.
        let token = if config.watches() {
            shutdown::on_signal()
        } else {
            CancellationToken::new()
        };
        pokeq_ctl::run(config, token).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("pokeq: {}", pokeq_shared::exit::describe(&error));
            ExitCode::from(pokeq_ctl::exit_code(&error))
        }
    }
}
