//! `pokeq dead show`: one item's dead letters, every property and header, and its
//! `ingest_items` row.

use clap::Args;
use pokeq_shared::config::Common;
use pokeq_shared::job;
use pokeq_shared::resources::POKEMON;
use serde::Serialize;
use serde_json::{Value, json};

use super::amqp::{amqp_json, properties_json};
use super::letter::{Letter, now};
use super::session::{Session, give_back};
use crate::Console;
use crate::table::{Align, Table, age};

#[derive(Debug, Clone, Args)]
pub struct ShowArgs {
    /// The item's id (of --resource).
    pub id: i32,

    /// The item's resource (pokemon, pokemon-species, evolution-chain, type, ability, move).
    #[arg(long, default_value = POKEMON, value_parser = super::resource_parser())]
    pub resource: String,

    /// One JSON document instead of text.
    #[arg(long)]
    pub json: bool,
}

/// An `ingest_items` row, as `show` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct ItemRow {
    pub id: i32,
    pub name: Option<String>,
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub error_kind: Option<String>,
    pub updated_at: String,
}

async fn item_row(common: &Common, resource: &str, id: i32) -> anyhow::Result<Option<ItemRow>> {
    let store = crate::open_store(common).await?;
    let client = store.pool().get().await?;
    let row = client
        .query_opt(
            r#"select id, name, status, attempts, last_error, error_kind,
                      to_char(updated_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
               from ingest_items where resource = $1 and id = $2"#,
            &[&resource, &id],
        )
        .await?;
    Ok(row.map(|row| ItemRow {
        id: row.get(0),
        name: row.get(1),
        status: row.get(2),
        attempts: row.get(3),
        last_error: row.get(4),
        error_kind: row.get(5),
        updated_at: row.get(6),
    }))
}

pub(super) async fn show(
    common: &Common,
    args: &ShowArgs,
    console: &mut Console<'_>,
) -> anyhow::Result<()> {
    // The item first, so that no letter is held while Postgres is slow; a database that cannot
    // answer does not hide the letters.
    let resource = args.resource.as_str();
    let item = item_row(common, resource, args.id)
        .await
        .map_err(|e| format!("{e:#}"));
    let session = Session::open(common).await?;
    let held = session.take(|_| false).await?;
    let now = now();
    let mine: Vec<&Letter> = held
        .letters
        .iter()
        .filter(|l| l.resource() == Some(resource) && l.id() == Some(args.id))
        .collect();
    let text = if args.json {
        let document = json!({
            "resource": resource,
            "id": args.id,
            "letters": mine.iter().map(|l| l.detail(now)).collect::<Vec<_>>(),
            "item": item.as_ref().ok(),
            "item_error": item.as_ref().err(),
        });
        format!("{}\n", serde_json::to_string_pretty(&document)?)
    } else {
        show_text(resource, args.id, &mine, &item, now)
    };
    let found = mine.len();
    give_back(held.letters.iter()).await;
    session.close().await;
    console.out.write_all(text.as_bytes())?;
    // Either part missing is a failure (exit 1), after everything known was printed.
    let mut missing = Vec::new();
    if found == 0 {
        missing.push(format!(
            "no dead letter for {resource} {} in {}",
            args.id,
            common.prefix.clone() + ".dead"
        ));
    }
    if let Err(error) = &item {
        missing.push(format!("item {resource} {} unavailable: {error}", args.id));
    }
    anyhow::ensure!(missing.is_empty(), "{}", missing.join("; "));
    Ok(())
}

fn show_text(
    resource: &str,
    id: i32,
    letters: &[&Letter],
    item: &Result<Option<ItemRow>, String>,
    now: u64,
) -> String {
    let mut text = String::new();
    if letters.is_empty() {
        text.push_str(&format!("No dead letter for {resource} {id}\n"));
    }
    for (n, letter) in letters.iter().enumerate() {
        text.push_str(&format!(
            "Dead letter {} of {} for {resource} {id}\n",
            n + 1,
            letters.len()
        ));
        let mut fields = Table::new(&[("FIELD", Align::Left), ("VALUE", Align::Left)]);
        fields.row(vec!["kind".into(), letter.kind.clone()]);
        fields.row(vec![
            "error".into(),
            letter.error.clone().unwrap_or_else(|| "-".into()),
        ]);
        fields.row(vec!["attempts".into(), letter.attempts.to_string()]);
        fields.row(vec![
            "age".into(),
            letter.age_seconds(now).map_or_else(|| "-".to_owned(), age),
        ]);
        fields.row(vec!["body".into(), letter.body_text()]);
        if let Value::Object(properties) = properties_json(&letter.delivery.properties) {
            for (key, value) in properties {
                fields.row(vec![format!("property {key}"), plain(&value)]);
            }
        }
        if let Some(headers) = letter.delivery.properties.headers().as_ref() {
            // pokeq's own headers are the kind, error and attempts rows above.
            let shown = [
                job::ERROR_KIND_HEADER,
                job::ERROR_HEADER,
                job::ATTEMPTS_HEADER,
            ];
            for (key, value) in headers.inner() {
                if !shown.contains(&key.as_str()) {
                    fields.row(vec![format!("header {key}"), plain(&amqp_json(value))]);
                }
            }
        }
        text.push_str(&fields.render("  "));
    }
    text.push_str(&format!("Item {resource} {id}\n"));
    match item {
        Ok(Some(row)) => {
            text.push_str(&format!(
                "  status {}, attempts {}, error_kind {}, updated {}\n",
                row.status,
                row.attempts,
                row.error_kind.as_deref().unwrap_or("-"),
                row.updated_at
            ));
            if let Some(error) = &row.last_error {
                text.push_str(&format!("  last_error {error}\n"));
            }
        }
        Ok(None) => text.push_str("  no ingest_items row\n"),
        Err(error) => text.push_str(&format!("  unavailable: {error}\n")),
    }
    text
}

/// A JSON value for people: strings without quotes, the rest compact.
fn plain(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}
