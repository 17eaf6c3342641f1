//! `pokeq`, the operator CLI: one subcommand per operator task.

use clap::{Parser, Subcommand};
use pokeq_shared::config::{Common, CommonArgs, ConfigError};
use pokeq_shared::shutdown::CancellationToken;
use pokeq_shared::store::Store;

#[derive(Debug, Parser)]
#[command(name = "pokeq", version, about = "Operate a pokeq pipeline")]
pub struct Cli {
    #[command(flatten)]
    pub common: CommonArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Create the database if missing and apply pending migrations.
    Migrate,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub common: Common,
    pub command: Command,
}

impl Cli {
    pub fn validate(&self) -> Result<Config, ConfigError> {
        Ok(Config {
            common: self.common.validate()?,
            command: self.command.clone(),
        })
    }
}

pub async fn run(config: Config, _shutdown: CancellationToken) -> anyhow::Result<()> {
    match config.command {
        Command::Migrate => {
            let store =
                Store::open(&config.common.database, &config.common.database_url, 1).await?;
            println!("schema at version {}", store.schema_version().await?);
        }
    }
    Ok(())
}
