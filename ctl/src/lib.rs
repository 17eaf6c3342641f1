//! `pokeq`, the operator CLI: one subcommand per operator task.
//!
//! - `migrate` creates the database if missing and applies migrations: the only command that
//!   creates anything. Every other one opens an existing database ([`open_store`]) and checks
//!   queues without declaring them ([`probe`], [`inspect`]), so a mistyped setting is reported,
//!   not turned into an empty pipeline.
//! - [`status`] shows item counts, throughput and the producer runs (Postgres), queue depths
//!   counted now over AMQP ([`probe`]) and sampled by [`management`] (the RabbitMQ HTTP API),
//!   once, refreshed with `--watch`, or until the run is over with `--wait` ([`wait`]).
//! - [`item`] tells one item's whole story: state, errors, stored row, dead letters.
//! - [`workers`] lists the live consumers: who, since when, how busy.
//! - [`topology`] shows what is declared under the prefix and prunes the wait queues no live
//!   consumer uses.
//! - [`dead`] lists, shows, replays and purges dead letters over AMQP, taking messages without
//!   acknowledging them so that nothing is lost if the CLI stops half-way.
//! - [`table`] aligns the columns people read.
//!
//! [`run`] writes to the process's stdout and reads confirmations from its terminal;
//! [`run_with`] takes a [`Console`] instead, so tests drive every command in-process.

pub mod dead;
pub mod inspect;
pub mod item;
pub mod management;
pub mod probe;
pub mod status;
pub mod table;
pub mod topology;
pub mod wait;
pub mod workers;

use std::io::{BufRead, BufReader, IsTerminal, Write};

use clap::{Parser, Subcommand};
use pokeq_shared::config::{Common, CommonArgs, ConfigError};
use pokeq_shared::exit;
use pokeq_shared::shutdown::CancellationToken;
use pokeq_shared::store::{Store, StoreError};

#[derive(Debug, Parser)]
#[command(
    name = "pokeq",
    version,
    about = "Operate a pokeq pipeline",
    after_help = concat!(
        "Dead-letter kinds: not_found, malformed_payload, invalid_message, exhausted (set by ",
        "consumers); delivery_limit, rejected, expired, maxlen (RabbitMQ's own). MANAGEMENT_URL ",
        "is the RabbitMQ management API. Also read from the environment: RUST_LOG (log filter, ",
        "default `info`), NO_COLOR (any value: no colour in text logs)."
    )
)]
pub struct Cli {
    #[command(flatten)]
    pub common: CommonArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Create the database if missing and apply pending migrations (the only command that
    /// creates anything).
    Migrate,
    /// Item counts, throughput and ETA, queue depths, recent producer runs (--wait: block
    /// until the run is over).
    Status(status::StatusArgs),
    /// One item's whole story: state, attempts, errors, timestamps, ETag, stored row, dead
    /// letters.
    Item(item::ItemArgs),
    /// The live consumers, one line each: host, pid, version, prefetch, deliveries in hand,
    /// API requests in flight, API circuit, started at, last job finished at.
    Workers(workers::WorkersArgs),
    /// What is declared under the prefix; `prune` removes retry queues no consumer uses.
    Topology(topology::TopologyArgs),
    /// Dead letters: list, show, replay or purge them.
    #[command(subcommand)]
    Dead(dead::DeadCommand),
}

/// A subcommand with its settings validated.
#[derive(Debug, Clone)]
pub enum Action {
    Migrate,
    Status(status::StatusConfig),
    Item(item::ItemArgs),
    Workers(workers::WorkersConfig),
    Topology(topology::TopologyConfig),
    Dead(dead::DeadCommand),
}

#[derive(Debug, Clone)]
pub struct Config {
    pub common: Common,
    pub action: Action,
}

impl Config {
    /// Whether this command runs until Ctrl-C; only such a command takes over SIGINT (see
    /// `main.rs`).
    pub fn watches(&self) -> bool {
        matches!(&self.action, Action::Status(status) if status.watch.is_some())
    }
}

impl Cli {
    pub fn validate(&self) -> Result<Config, ConfigError> {
        let common = self.common.validate()?;
        let action = match &self.command {
            Command::Migrate => Action::Migrate,
            Command::Status(args) => Action::Status(args.validate(&common)?),
            Command::Item(args) => Action::Item(args.clone()),
            Command::Workers(args) => Action::Workers(args.validate(&common)?),
            Command::Topology(args) => Action::Topology(args.validate(&common)?),
            Command::Dead(command) => Action::Dead(command.clone()),
        };
        Ok(Config { common, action })
    }
}

/// A request the CLI refuses as given (exit status 2), found only at run time: a purge or prune
/// without `--yes` when nobody can answer the prompt.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The contract's exit status for an error `run` returned: 2 for a refused request, for a
/// setting RabbitMQ, its management API or Postgres refused (as in every binary, see
/// [`exit::code`]), and for `status --wait` past its `--timeout`; else 1.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    if error.downcast_ref::<UsageError>().is_some()
        || error.downcast_ref::<wait::WaitTimeout>().is_some()
    {
        exit::CONFIG
    } else {
        exit::code(error)
    }
}

/// Where a command writes its results and reads an operator's answers.
pub struct Console<'a> {
    pub out: &'a mut (dyn Write + Send),
    /// The operator's answers; `None` when stdin is not a terminal, so that nothing destructive
    /// is ever confirmed by a pipe or a closed stdin.
    pub input: Option<&'a mut (dyn BufRead + Send)>,
    /// Whether `out` is a terminal: `--watch` then redraws the screen instead of appending.
    pub terminal: bool,
}

/// Runs a command against the process's stdout and stdin.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut out = std::io::stdout();
    let mut stdin = BufReader::new(std::io::stdin());
    let interactive = std::io::stdin().is_terminal();
    let console = Console {
        out: &mut out,
        input: if interactive { Some(&mut stdin) } else { None },
        terminal: std::io::stdout().is_terminal(),
    };
    run_with(config, shutdown, console).await
}

/// The database of `common`, which must exist at this build's schema version (nothing is created
/// or migrated: see [`Store::open_existing`]), with one connection: every command is one short
/// session.
async fn open_store(common: &Common) -> Result<Store, StoreError> {
    Store::open_existing(
        &common.database,
        common.database_url.expose(),
        1,
        common.extra_ca.as_deref(),
    )
    .await
}

/// Runs a command with its output and input given: what [`run`] does, and what tests call.
pub async fn run_with(
    config: Config,
    shutdown: CancellationToken,
    mut console: Console<'_>,
) -> anyhow::Result<()> {
    let result = match config.action {
        Action::Migrate => {
            let common = &config.common;
            let store = Store::open(
                &common.database,
                common.database_url.expose(),
                1,
                common.extra_ca.as_deref(),
            )
            .await?;
            writeln!(
                console.out,
                "schema at version {}",
                store.schema_version().await?
            )?;
            Ok(())
        }
        Action::Status(status) => {
            status::run(&config.common, &status, &shutdown, &mut console).await
        }
        Action::Item(args) => item::run(&config.common, &args, &mut console).await,
        Action::Workers(workers) => workers::run(&config.common, &workers, &mut console).await,
        Action::Topology(topology) => {
            topology::run(&config.common, &topology, &shutdown, &mut console).await
        }
        Action::Dead(command) => dead::run(&config.common, &command, &shutdown, &mut console).await,
    };
    console.out.flush()?;
    result
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    #[test]
    fn help_names_every_dead_letter_kind_and_the_environment_settings() {
        use clap::CommandFactory;
        let help = super::Cli::command().render_long_help().to_string();
        // `unknown` is what a letter with no kind at all shows, not a kind.
        let kinds = super::dead::KINDS.iter().filter(|kind| **kind != "unknown");
        for word in kinds
            .copied()
            .chain(["MANAGEMENT_URL", "RUST_LOG", "NO_COLOR"])
        {
            assert!(help.contains(word), "{word} missing from --help:\n{help}");
        }
    }

    #[test]
    fn shared_flags_work_before_and_after_the_subcommand() {
        let before = super::Cli::try_parse_from(["pokeq", "--prefix", "a", "status"]).unwrap();
        let after = super::Cli::try_parse_from(["pokeq", "status", "--prefix", "a"]).unwrap();
        assert_eq!(before.common.prefix, "a");
        assert_eq!(after.common.prefix, "a");
        let deep = super::Cli::try_parse_from([
            "pokeq",
            "dead",
            "list",
            "--database-url",
            "postgres://x/y",
        ])
        .unwrap();
        assert_eq!(deep.common.database_url.expose(), "postgres://x/y");
    }
}
