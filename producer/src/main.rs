use std::process::ExitCode;

use clap::Parser;
use pokeq_producer::Cli;

fn main() -> ExitCode {
    pokeq_producer::main(Cli::parse())
}
