//! `pokeq dead replay`: chosen letters published to the jobs queue again, their items `queued`.

use anyhow::Context;
use clap::builder::PossibleValuesParser;
use clap::{ArgGroup, Args};
use lapin::Channel;
use lapin::types::ShortString;
use pokeq_shared::broker;
use pokeq_shared::config::Common;
use pokeq_shared::resources::POKEMON;
use pokeq_shared::shutdown::CancellationToken;
use pokeq_shared::store::Store;
use pokeq_shared::topology::Topology;

use super::KINDS;
use super::letter::{Letter, fresh_properties, id_text};
use super::session::{Session, give_back, remove};
use crate::Console;
use crate::inspect;

#[derive(Debug, Clone, Args)]
#[command(group(
    ArgGroup::new("selection")
        .args(["kind", "id", "resource", "all"])
        .required(true)
        .multiple(true)
))]
pub struct ReplayArgs {
    /// Letters of this kind. Letters whose body is not a job (no id) are replayed only with
    /// `--kind invalid_message`: anything else would send them to die again unnoticed.
    #[arg(long, value_parser = PossibleValuesParser::new(KINDS))]
    pub kind: Option<String>,

    /// Letters of these ids (`--id 1 2 3` or `--id 1 --id 2`), of any resource unless
    /// --resource says; with --kind, both must match.
    #[arg(long, num_args = 1.., value_name = "ID")]
    pub id: Vec<i32>,

    /// Letters of this resource (the job's `resource`); alone, every letter of it.
    #[arg(long, value_parser = super::resource_parser())]
    pub resource: Option<String>,

    /// Every letter that holds a job (letters without an id are kept); with --resource, every
    /// one of that resource.
    #[arg(long, conflicts_with_all = ["kind", "id"])]
    pub all: bool,
}

impl ReplayArgs {
    fn chooses(&self, letter: &Letter) -> bool {
        if !letter.is_of(self.resource.as_deref()) {
            return false;
        }
        if self.all {
            return letter.job.is_some();
        }
        let kind = self.kind.as_ref().is_none_or(|k| &letter.kind == k);
        let id = self.id.is_empty() || letter.id().is_some_and(|id| self.id.contains(&id));
        let readable = letter.job.is_some() || self.kind.as_deref() == Some("invalid_message");
        kind && id && readable
    }
}

pub(super) async fn replay(
    common: &Common,
    args: &ReplayArgs,
    shutdown: &CancellationToken,
    console: &mut Console<'_>,
) -> anyhow::Result<()> {
    // Postgres first: a replay must update items, so it does not start without them.
    let store = crate::open_store(common).await?;
    let session = Session::open(common).await?;
    let vhost = inspect::vhost(common.amqp_url.expose());
    let jobs = session.topology.jobs();
    if let Err(error) = inspect::require(&session.connection, &jobs, &common.prefix, &vhost).await {
        session.close().await;
        return Err(error);
    }
    let publish = broker::confirm_channel(&session.connection).await?;
    let held = session.take(|_| false).await?;
    let mut replayed = 0usize;
    let mut failure = None;
    let mut kept = Vec::new();
    let mut lines = String::new();
    for letter in &held.letters {
        if failure.is_some() || shutdown.is_cancelled() || !args.chooses(letter) {
            kept.push(letter);
            continue;
        }
        match replay_one(&session.topology, &publish, &store, letter).await {
            Ok(()) => {
                replayed += 1;
                lines.push_str(&format!("replayed {} ({})\n", id_text(letter), letter.kind));
            }
            Err(error) => {
                failure = Some(error);
                kept.push(letter);
            }
        }
    }
    give_back(kept.iter().copied()).await;
    let _ = publish.close(200, ShortString::from("done")).await;
    session.close().await;
    console.out.write_all(lines.as_bytes())?;
    writeln!(console.out, "replayed={replayed} kept={}", kept.len())?;
    match failure {
        Some(error) => Err(error.context("replay stopped; the letters not replayed were kept")),
        None => Ok(()),
    }
}

/// Publish (confirmed), then the item back to `queued`, then the ack: each step only once the
/// previous one is certain.
async fn replay_one(
    topology: &Topology,
    publish: &Channel,
    store: &Store,
    letter: &Letter,
) -> anyhow::Result<()> {
    // The job's routing key is its resource; a body that is not a job goes as pokemon's did.
    broker::publish(
        publish,
        &topology.jobs(),
        letter.resource().unwrap_or(POKEMON),
        &letter.delivery.data,
        fresh_properties(&letter.delivery.properties),
    )
    .await
    .with_context(|| format!("publishing {} to {}", id_text(letter), topology.jobs()))?;
    if let Some(job) = &letter.job {
        store
            .requeue_for_replay(&job.resource, job.id, &job.name)
            .await
            .with_context(|| format!("marking item {} {} queued", job.resource, job.id))?;
    }
    remove(letter).await
}
