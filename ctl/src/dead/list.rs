//! `pokeq dead list`, and the letters of one item for `pokeq item`.

use clap::Args;
use clap::builder::PossibleValuesParser;
use pokeq_shared::config::Common;
use serde_json::{Value, json};

use super::KINDS;
use super::letter::{Letter, id_text, now};
use super::session::{Session, give_back};
use crate::Console;
use crate::table::{Align, Table, age, clip};

#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Only letters of this kind.
    #[arg(long, value_parser = PossibleValuesParser::new(KINDS))]
    pub kind: Option<String>,

    /// Only letters of this resource (the job's `resource`: pokemon, pokemon-species, ...).
    #[arg(long, value_parser = super::resource_parser())]
    pub resource: Option<String>,

    /// Show at most this many; the queue is read only as far as needed.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: u64,

    /// One JSON document instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub(super) async fn list(
    common: &Common,
    args: &ListArgs,
    console: &mut Console<'_>,
) -> anyhow::Result<()> {
    let session = Session::open(common).await?;
    let limit = usize::try_from(args.limit).unwrap_or(usize::MAX);
    let matches = |letter: &Letter| {
        args.kind.as_ref().is_none_or(|k| &letter.kind == k)
            && letter.is_of(args.resource.as_deref())
    };
    let mut matched = 0;
    let held = session
        .take(|letter| {
            if matches(letter) {
                matched += 1;
            }
            matched >= limit
        })
        .await?;
    let now = now();
    let shown: Vec<&Letter> = held.letters.iter().filter(|l| matches(l)).collect();
    let more_may_match = shown.len() >= limit && (held.letters.len() as u64) < held.total;
    let text = if args.json {
        let document = json!({
            "queue": session.topology.dead(),
            "depth": held.total,
            "kind": args.kind,
            "resource": args.resource,
            "shown": shown.len(),
            "limit_reached": more_may_match,
            "letters": shown.iter().map(|l| l.summary(now)).collect::<Vec<_>>(),
        });
        format!("{}\n", serde_json::to_string_pretty(&document)?)
    } else {
        let mut table = Table::new(&[
            ("RESOURCE", Align::Left),
            ("ID", Align::Right),
            ("NAME", Align::Left),
            ("KIND", Align::Left),
            ("ATTEMPTS", Align::Right),
            ("AGE", Align::Right),
            ("ERROR", Align::Left),
        ]);
        for letter in &shown {
            table.row(vec![
                letter.resource().unwrap_or("-").to_owned(),
                id_text(letter),
                letter
                    .job
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), |j| j.name.clone()),
                letter.kind.clone(),
                letter.attempts.to_string(),
                letter.age_seconds(now).map_or_else(|| "-".to_owned(), age),
                clip(letter.error.as_deref().unwrap_or("-"), 100),
            ]);
        }
        let mut text = if table.is_empty() {
            String::new()
        } else {
            table.render("")
        };
        text.push_str(&format!(
            "{} shown, {} in {}",
            shown.len(),
            held.total,
            session.topology.dead()
        ));
        if more_may_match {
            text.push_str(&format!(
                " (limit {limit} reached; raise --limit to see more)"
            ));
        }
        text.push('\n');
        text
    };
    // Everything goes back before anything is printed: a closed stdout must not keep letters.
    give_back(held.letters.iter()).await;
    session.close().await;
    console.out.write_all(text.as_bytes())?;
    Ok(())
}

/// The dead letters of item `resource` `id`, each as `list --json` shows it, read as `show` reads them
/// (taken without acknowledging, every one handed back) but declaring nothing: `None` when the
/// dead queue does not exist.
pub async fn letters_of(
    common: &Common,
    resource: &str,
    id: i32,
) -> anyhow::Result<Option<Vec<Value>>> {
    let Some(session) = Session::existing(common).await? else {
        return Ok(None);
    };
    let held = match session.take(|_| false).await {
        Ok(held) => held,
        Err(error) => {
            session.close().await;
            return Err(error);
        }
    };
    let now = now();
    let mine = held
        .letters
        .iter()
        .filter(|letter| letter.resource() == Some(resource) && letter.id() == Some(id))
        .map(|letter| letter.summary(now))
        .collect();
    give_back(held.letters.iter()).await;
    session.close().await;
    Ok(Some(mine))
}
