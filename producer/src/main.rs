use std::process::ExitCode;

use clap::Parser;
use pokeq_producer::Cli;
use pokeq_shared::exit;

fn main() -> ExitCode {
    let cli = Cli::parse();
    exit::main(
        "producer",
        cli.validate(),
        |config| config.common.log_format,
        |config, shutdown| async move {
            let summary = pokeq_producer::run(config, shutdown).await?;
            println!("{summary}");
            Ok(())
        },
    )
}
