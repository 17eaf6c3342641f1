//! `pokeq dead ...`: read, replay and purge the dead-letter queue over AMQP.
//!
//! Every command takes messages with `basic.get` *without* acknowledging them and holds them
//! until it is done, then acknowledges only those it replayed or purged and hands the rest back
//! (`basic.nack` with requeue, in their original order: the dead queue is classic, which keeps
//! positions and counts no deliveries). A CLI killed half-way therefore loses nothing: the
//! broker returns every unacknowledged message when the connection drops. Replay publishes the
//! new job (confirmed) and updates the item *before* acknowledging the dead letter, so the worst
//! a crash can do is leave a job both replayed and still dead, and the consumer's `done` check
//! absorbs the duplicate.
//!
//! While a command runs, the letters it holds are invisible to other readers of the dead queue
//! (another `pokeq dead list` sees fewer); they reappear when it ends.
//!
//! The commands, one file each: `list.rs`, `show.rs`, `replay.rs`, `purge.rs`. Beneath them,
//! `session.rs` takes letters from the dead queue and settles them, `letter.rs` reads what a
//! letter's headers say, and `amqp.rs` turns AMQP values into text and JSON.

use clap::Subcommand;
use clap::builder::PossibleValuesParser;
use pokeq_shared::config::Common;
use pokeq_shared::shutdown::CancellationToken;

use crate::Console;

mod amqp;
mod letter;
mod list;
mod purge;
mod replay;
mod session;
mod show;

pub use amqp::amqp_json;
pub use letter::{Letter, fresh_properties};
pub use list::{ListArgs, letters_of};
pub use purge::PurgeArgs;
pub use replay::ReplayArgs;
pub use show::{ItemRow, ShowArgs};

/// The `--resource` values: every resource pokeq stores, so that a mistyped one is refused
/// (exit 2, naming `--resource`) instead of matching nothing.
pub(crate) fn resource_parser() -> PossibleValuesParser {
    PossibleValuesParser::new(pokeq_shared::resources::names())
}

/// The kinds a dead letter can have: the consumer's `x-pokeq-error-kind` values, the broker's
/// dead-lettering reasons (`delivery_limit` above all: a job that crashed or stalled every
/// consumer that took it), and `unknown` for a message with neither.
pub const KINDS: &[&str] = &[
    "not_found",
    "malformed_payload",
    "invalid_message",
    "exhausted",
    "delivery_limit",
    "rejected",
    "expired",
    "maxlen",
    "unknown",
];

#[derive(Debug, Clone, Subcommand)]
pub enum DeadCommand {
    /// List dead letters; nothing is removed (every message taken is handed back).
    List(ListArgs),
    /// Everything about one item's dead letter(s), and its ingest_items row.
    Show(ShowArgs),
    /// Publish chosen dead letters to the jobs queue again, attempts reset, items `queued`.
    Replay(ReplayArgs),
    /// Remove dead letters of one kind for good; their items stay `failed`.
    Purge(PurgeArgs),
}

pub async fn run(
    common: &Common,
    command: &DeadCommand,
    shutdown: &CancellationToken,
    console: &mut Console<'_>,
) -> anyhow::Result<()> {
    match command {
        DeadCommand::List(args) => list::list(common, args, console).await,
        DeadCommand::Show(args) => show::show(common, args, console).await,
        DeadCommand::Replay(args) => replay::replay(common, args, shutdown, console).await,
        DeadCommand::Purge(args) => purge::purge(common, args, shutdown, console).await,
    }
}
