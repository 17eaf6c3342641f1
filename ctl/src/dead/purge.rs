//! `pokeq dead purge`: letters of one kind removed for good, their items left `failed`.

use anyhow::Context;
use clap::Args;
use clap::builder::PossibleValuesParser;
use pokeq_shared::config::Common;
use pokeq_shared::shutdown::CancellationToken;
use pokeq_shared::store::Store;

use super::KINDS;
use super::letter::Letter;
use super::session::{Session, give_back, remove};
use crate::{Console, UsageError};

#[derive(Debug, Clone, Args)]
pub struct PurgeArgs {
    /// Letters of this kind.
    #[arg(long, value_parser = PossibleValuesParser::new(KINDS))]
    pub kind: String,

    /// Only letters of this resource (the job's `resource`); letters without a job are then kept.
    #[arg(long, value_parser = super::resource_parser())]
    pub resource: Option<String>,

    /// Do not ask; required when stdin is not a terminal.
    #[arg(long)]
    pub yes: bool,
}

impl PurgeArgs {
    fn chooses(&self, letter: &Letter) -> bool {
        letter.kind == self.kind && letter.is_of(self.resource.as_deref())
    }
}

pub(super) async fn purge(
    common: &Common,
    args: &PurgeArgs,
    shutdown: &CancellationToken,
    console: &mut Console<'_>,
) -> anyhow::Result<()> {
    if !args.yes && console.input.is_none() {
        return Err(UsageError(
            "refusing to purge: stdin is not a terminal, so nobody can confirm; pass --yes".into(),
        )
        .into());
    }
    let store = crate::open_store(common).await?;
    let session = Session::open(common).await?;
    let held = session.take(|_| false).await?;
    let chosen: Vec<&Letter> = held.letters.iter().filter(|l| args.chooses(l)).collect();

    let confirmed = if chosen.is_empty() || args.yes {
        true
    } else if let Some(input) = console.input.as_mut() {
        write!(
            console.out,
            "Purge {} dead letters of kind {}{}? [y/N] ",
            chosen.len(),
            args.kind,
            args.resource
                .as_ref()
                .map_or_else(String::new, |r| format!(" and resource {r}"))
        )?;
        console.out.flush()?;
        let mut answer = String::new();
        input.read_line(&mut answer)?;
        matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
    } else {
        false
    };

    let mut purged = 0usize;
    let mut failure = None;
    let mut kept = Vec::new();
    for letter in &held.letters {
        let wanted = confirmed && args.chooses(letter);
        if !wanted || failure.is_some() || shutdown.is_cancelled() {
            kept.push(letter);
            continue;
        }
        match purge_one(&store, letter).await {
            Ok(()) => purged += 1,
            Err(error) => {
                failure = Some(error);
                kept.push(letter);
            }
        }
    }
    give_back(kept.iter().copied()).await;
    session.close().await;
    if !confirmed {
        writeln!(console.out, "not confirmed; nothing purged")?;
    }
    writeln!(console.out, "purged={purged}")?;
    // A declined purge did not do what was asked: a script must not read it as done.
    anyhow::ensure!(confirmed, "the purge was declined");
    match failure {
        Some(error) => Err(error.context("purge stopped; the letters not purged were kept")),
        None => Ok(()),
    }
}

/// Marks the item, then removes the letter: a crash in between leaves the letter to purge again,
/// never an item whose reason vanished. The item ends `failed` (unless `done`): its job will not
/// run unless the producer is rerun with `--retry-failed`.
async fn purge_one(store: &Store, letter: &Letter) -> anyhow::Result<()> {
    if let Some(job) = &letter.job {
        store
            .mark_purged(&job.resource, job.id, &letter.kind, letter.error.as_deref())
            .await
            .with_context(|| format!("marking item {} {} purged", job.resource, job.id))?;
    }
    remove(letter).await
}
