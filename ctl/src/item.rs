//! `pokeq item <id>` (or `--name <name>`): one item's whole story in one place: its state in
//! `ingest_items` (attempts, the last error and its kind, when it was queued and last changed,
//! the HTTP validators of the stored copy), the stored `pokemon` row, and its letters in the
//! dead queue.
//!
//! It only reads. Dead letters are read as `pokeq dead show` reads them (taken without
//! acknowledging, every one handed back), and the dead queue is not declared: a missing one is
//! reported as such.

use anyhow::Context;
use clap::{ArgGroup, Args};
use pokeq_shared::config::Common;
use pokeq_shared::resources::{self, POKEMON};
use serde::Serialize;
use serde_json::Value;
use tokio_postgres::Client;

use crate::Console;
use crate::table::{Align, Table, age, clip};

#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("which").args(["id", "name"]).required(true)))]
pub struct ItemArgs {
    /// The item's id (of --resource).
    pub id: Option<i32>,

    /// The item's name instead of its id, as PokeAPI spells it (e.g. mr-mime).
    #[arg(long)]
    pub name: Option<String>,

    /// The item's resource (pokemon, pokemon-species, evolution-chain, type, ability, move):
    /// ids are per resource.
    #[arg(long, default_value = POKEMON, value_parser = crate::dead::resource_parser())]
    pub resource: String,

    /// One JSON document instead of text.
    #[arg(long)]
    pub json: bool,
}

/// A stored row's columns in table order (whatever columns later migrations add), serialized
/// as a JSON object.
#[derive(Debug, Clone)]
pub struct Row(pub Vec<(String, Value)>);

impl Serialize for Row {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(column, value)| (column, value)))
    }
}

/// Everything known about one item; this is also the `--json` document.
#[derive(Debug, Clone, Serialize)]
pub struct ItemReport {
    pub resource: String,
    pub id: i32,
    pub name: Option<String>,
    /// `pending`, `queued`, `done` or `failed`.
    pub status: String,
    /// Tries so far (the consumer counts from 1; a replay resets it to 0).
    pub attempts: i32,
    pub last_error: Option<String>,
    pub error_kind: Option<String>,
    /// ISO 8601 UTC.
    pub updated_at: String,
    pub updated_seconds_ago: u64,
    /// When the broker confirmed the item's latest job (ISO 8601 UTC; `None` if never).
    pub queued_at: Option<String>,
    /// HTTP validators of the stored copy, sent back on `producer --refresh`.
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// The stored `pokemon` row, every column (`None`: nothing stored, or an item of another
    /// resource, whose rows are not shown here).
    pub pokemon: Option<Row>,
    /// Its letters in the dead queue, as `pokeq dead list --json` shows them (`None`: unknown,
    /// see `dead_letters_error`).
    pub dead_letters: Option<Vec<Value>>,
    pub dead_letters_error: Option<String>,
}

pub async fn run(
    common: &Common,
    args: &ItemArgs,
    console: &mut Console<'_>,
) -> anyhow::Result<()> {
    let store = crate::open_store(common).await?;
    let client = store.pool().get().await?;
    let resource = args.resource.as_str();
    let id = match (&args.name, args.id) {
        (Some(name), _) => id_of(&client, resource, name, common).await?,
        (None, Some(id)) => id,
        (None, None) => anyhow::bail!("give an id or --name"),
    };
    let Some(mut report) = item(&client, resource, id).await? else {
        anyhow::bail!(
            "no item {resource} {id} in the database {} (ingest_items has no such row)",
            database_name(common)
        );
    };
    // Postgres first and released before the dead queue is read, so that no letter is held
    // while Postgres is slow.
    if resource == POKEMON {
        report.pokemon = stored_row(&client, id).await?;
    }
    drop(client);
    let dead = format!("{}.dead", common.prefix);
    let failure = match crate::dead::letters_of(common, resource, id).await {
        Ok(Some(letters)) => {
            report.dead_letters = Some(letters);
            None
        }
        Ok(None) => Some(anyhow::anyhow!(
            "the dead queue {dead} is not declared (is POKEQ_PREFIX right?)"
        )),
        Err(error) => Some(error),
    };
    report.dead_letters_error = failure.as_ref().map(|error| format!("{error:#}"));
    if args.json {
        serde_json::to_writer_pretty(&mut *console.out, &report)?;
        writeln!(console.out)?;
    } else {
        write!(console.out, "{}", render(&report, &dead))?;
    }
    // The error itself, so that a setting RabbitMQ refused still exits 2.
    match failure {
        Some(error) => Err(error.context("dead letters unknown")),
        None => Ok(()),
    }
}

fn database_name(common: &Common) -> &str {
    common.database.get_dbname().unwrap_or("?")
}

/// The id of the item called `name` (case aside); an error naming the ids if several are.
async fn id_of(
    client: &Client,
    resource: &str,
    name: &str,
    common: &Common,
) -> anyhow::Result<i32> {
    let ids: Vec<i32> = client
        .query(
            "select id from ingest_items where resource = $1 and lower(name) = lower($2)
             order by id",
            &[&resource, &name],
        )
        .await
        .context("looking the name up")?
        .iter()
        .map(|row| row.get(0))
        .collect();
    match ids.as_slice() {
        [id] => Ok(*id),
        [] => anyhow::bail!(
            "no item {resource} named {name:?} in the database {}",
            database_name(common)
        ),
        several => anyhow::bail!(
            "{} items are named {name:?} (ids {}); give the id",
            several.len(),
            several
                .iter()
                .map(|id| id.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

async fn item(client: &Client, resource: &str, id: i32) -> anyhow::Result<Option<ItemReport>> {
    const ISO: &str = r#"'YYYY-MM-DD"T"HH24:MI:SS"Z"'"#;
    let sql = format!(
        "select name, status, attempts, last_error, error_kind,
                to_char(updated_at at time zone 'UTC', {ISO}),
                greatest(extract(epoch from now() - updated_at), 0)::float8,
                to_char(queued_at at time zone 'UTC', {ISO}),
                etag, last_modified
         from ingest_items where resource = $1 and id = $2"
    );
    let row = client
        .query_opt(&sql, &[&resource, &id])
        .await
        .context("reading the item")?;
    Ok(row.map(|row| ItemReport {
        resource: resource.to_owned(),
        id,
        name: row.get(0),
        status: row.get(1),
        attempts: row.get(2),
        last_error: row.get(3),
        error_kind: row.get(4),
        updated_at: row.get(5),
        updated_seconds_ago: row.get::<_, f64>(6) as u64,
        queued_at: row.get(7),
        etag: row.get(8),
        last_modified: row.get(9),
        pokemon: None,
        dead_letters: None,
        dead_letters_error: None,
    }))
}

async fn stored_row(client: &Client, id: i32) -> anyhow::Result<Option<Row>> {
    let rows = client
        .query(
            "select f.key, f.value
             from pokemon p, json_each(row_to_json(p)) with ordinality as f(key, value, n)
             where p.id = $1 order by f.n",
            &[&id],
        )
        .await
        .context("reading the stored row")?;
    if rows.is_empty() {
        return Ok(None);
    }
    Ok(Some(Row(rows
        .iter()
        .map(|row| (row.get::<_, String>(0), row.get::<_, Value>(1)))
        .collect())))
}

/// The report for people.
fn render(report: &ItemReport, dead: &str) -> String {
    let mut text = format!(
        "{} {}{}: {}\n",
        report.resource,
        report.id,
        report
            .name
            .as_deref()
            .map_or_else(String::new, |name| format!(" {name}")),
        report.status
    );
    let mut fields = Table::new(&[("FIELD", Align::Left), ("VALUE", Align::Left)]);
    let or_dash = |value: &Option<String>| value.clone().unwrap_or_else(|| "-".into());
    fields.row(vec!["attempts".into(), report.attempts.to_string()]);
    fields.row(vec!["error kind".into(), or_dash(&report.error_kind)]);
    fields.row(vec!["last error".into(), or_dash(&report.last_error)]);
    fields.row(vec!["queued at".into(), or_dash(&report.queued_at)]);
    fields.row(vec![
        "updated at".into(),
        format!(
            "{} ({} ago)",
            report.updated_at,
            age(report.updated_seconds_ago)
        ),
    ]);
    fields.row(vec!["etag".into(), or_dash(&report.etag)]);
    fields.row(vec!["last modified".into(), or_dash(&report.last_modified)]);
    text.push_str(&fields.render("  "));

    text.push_str(&format!("\nStored row ({})\n", report.resource));
    match &report.pokemon {
        None if report.resource != POKEMON => {
            let table = resources::by_name(&report.resource).map_or("?", |r| r.table());
            text.push_str(&format!("  not shown here: see the table {table}\n"));
        }
        None => text.push_str("  none\n"),
        Some(row) => {
            let mut columns = Table::new(&[("COLUMN", Align::Left), ("VALUE", Align::Left)]);
            for (column, value) in &row.0 {
                columns.row(vec![column.clone(), clip(&plain(value), 200)]);
            }
            text.push_str(&columns.render("  "));
        }
    }

    text.push_str(&format!("\nDead letters in {dead}\n"));
    match (&report.dead_letters, &report.dead_letters_error) {
        (Some(letters), _) if letters.is_empty() => text.push_str("  none\n"),
        (Some(letters), _) => {
            let mut table = Table::new(&[
                ("KIND", Align::Left),
                ("ATTEMPTS", Align::Right),
                ("AGE", Align::Right),
                ("ERROR", Align::Left),
            ]);
            for letter in letters {
                table.row(vec![
                    plain(&letter["kind"]),
                    plain(&letter["attempts"]),
                    letter["age_seconds"]
                        .as_u64()
                        .map_or_else(|| "-".to_owned(), age),
                    clip(&plain(&letter["error"]), 100),
                ]);
            }
            text.push_str(&table.render("  "));
        }
        (None, error) => text.push_str(&format!(
            "  unknown: {}\n",
            error.as_deref().unwrap_or("unknown error")
        )),
    }
    text
}

/// A JSON value for people: strings without quotes, lists of strings joined, `-` for null, the
/// rest compact.
fn plain(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(text) => text.clone(),
        Value::Array(values) if values.iter().all(Value::is_string) => values
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_read_plainly() {
        assert_eq!(plain(&json!("pikachu")), "pikachu");
        assert_eq!(plain(&json!(["grass", "poison"])), "grass, poison");
        assert_eq!(plain(&json!(null)), "-");
        assert_eq!(plain(&json!(0.4)), "0.4");
        assert_eq!(
            plain(&json!([{"name": "hp", "base": 45}])),
            r#"[{"base":45,"name":"hp"}]"#
        );
    }
}
