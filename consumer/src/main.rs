use std::process::ExitCode;

use clap::Parser;
use pokeq_consumer::Cli;
use pokeq_shared::exit;

fn main() -> ExitCode {
    let cli = Cli::parse();
    exit::main(
        "consumer",
        cli.validate(),
        |config| config.common.log_format,
        pokeq_consumer::run,
    )
}
