use std::process::ExitCode;

use clap::Parser;
use pokeq_ctl::Cli;
use pokeq_shared::exit;

fn main() -> ExitCode {
    let cli = Cli::parse();
    exit::main(
        "pokeq",
        cli.validate(),
        |config| config.common.log_format,
        pokeq_ctl::run,
    )
}
