//! The database part of a report: item counts, throughput, producer runs and the API circuit.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use pokeq_shared::config::Common;
use pokeq_shared::store::Store;
use tokio_postgres::error::SqlState;

use super::report::{ApiCircuit, Items, Missing, ProducerRun, ResourceItems};
use super::throughput::{THROUGHPUT_WINDOW, Throughput};

/// Longest wait for the database part of one report (connecting included).
const DATABASE_TIMEOUT: Duration = Duration::from_secs(10);

/// Producer runs shown, latest first.
const PRODUCER_RUNS: i64 = 5;

/// What Postgres tells about the run.
pub(super) struct DatabasePart {
    pub(super) items: Items,
    pub(super) throughput: Throughput,
    pub(super) producer_runs: Vec<ProducerRun>,
    pub(super) api_circuit: ApiCircuit,
}

pub(super) async fn database_part(
    common: &Common,
    store: &mut Option<Store>,
) -> Result<DatabasePart, Missing> {
    with_store(common, store, async |client| {
        let (items, throughput) = items_and_throughput(client).await?;
        Ok(DatabasePart {
            items,
            throughput,
            producer_runs: producer_runs(client).await?,
            api_circuit: api_circuit(client).await?,
        })
    })
    .await
}

/// Runs `work` on a client of `store`, opening the store first if needed, within
/// [`DATABASE_TIMEOUT`]. A store whose database failed is dropped, to be rebuilt on the next
/// call, so a command that refreshes reconnects once Postgres is back.
pub(crate) async fn with_store<T>(
    common: &Common,
    store: &mut Option<Store>,
    work: impl AsyncFnOnce(&tokio_postgres::Client) -> anyhow::Result<T>,
) -> Result<T, Missing> {
    let attempt = async {
        if store.is_none() {
            *store = Some(crate::open_store(common).await?);
        }
        let Some(open) = store.as_ref() else {
            anyhow::bail!("no store");
        };
        let client = open.pool().get().await?;
        work(&client).await
    };
    match tokio::time::timeout(DATABASE_TIMEOUT, attempt).await {
        Ok(Ok(part)) => Ok(part),
        Ok(Err(error)) => {
            *store = None;
            Err(Missing::of(&error))
        }
        Err(_) => {
            *store = None;
            Err(Missing::outage(format!(
                "no answer from Postgres within {DATABASE_TIMEOUT:?}"
            )))
        }
    }
}

/// Item counts by status (failed ones by kind), over every resource and per resource, and the
/// throughput of the last minute (every resource: a crawl's items all count towards its end).
pub(crate) async fn items_and_throughput(
    client: &tokio_postgres::Client,
) -> anyhow::Result<(Items, Throughput)> {
    let rows = client
        .query(
            "select resource, coalesce(error_kind, 'unknown'), status, count(*)
             from ingest_items group by 1, 2, 3",
            &[],
        )
        .await
        .context("counting items")?;
    let mut items = Items::default();
    let mut by_resource: BTreeMap<(usize, String), Items> = BTreeMap::new();
    for row in &rows {
        let resource: String = row.get(0);
        let kind: String = row.get(1);
        let status: String = row.get(2);
        let n: i64 = row.get(3);
        items.add(&status, &kind, n);
        by_resource
            .entry(resource_order(&resource))
            .or_default()
            .add(&status, &kind, n);
    }
    items.resources = by_resource
        .into_iter()
        .map(|((_, resource), counts)| ResourceItems::new(resource, counts))
        .collect();
    let window = THROUGHPUT_WINDOW.as_secs_f64();
    let row = client
        .query_one(
            "select count(*) filter (where status = 'done'),
                    count(*) filter (where status = 'failed'),
                    greatest(extract(epoch from now() - min(updated_at)), 0)::float8,
                    greatest(extract(epoch from now() - max(updated_at)), 0)::float8
             from ingest_items
             where status in ('done', 'failed')
               and updated_at > now() - make_interval(secs => $1)",
            &[&window],
        )
        .await
        .context("measuring throughput")?;
    let throughput = Throughput::new(
        row.get(0),
        row.get(1),
        row.get(2),
        row.get(3),
        items.pending + items.queued,
    );
    Ok((items, throughput))
}

/// Where a resource's row goes: pokeq's resources in their usual order (pokemon first), then
/// any other name by name.
fn resource_order(resource: &str) -> (usize, String) {
    let known = pokeq_shared::resources::names().position(|name| name == resource);
    (known.unwrap_or(usize::MAX), resource.to_owned())
}

/// The last few producer runs, latest first; none when none was recorded (or the schema
/// predates the table).
async fn producer_runs(client: &tokio_postgres::Client) -> anyhow::Result<Vec<ProducerRun>> {
    const ISO: &str = r#"'YYYY-MM-DD"T"HH24:MI:SS"Z"'"#;
    let sql = format!(
        "select id, state, total, pages_planned, pages_done, listed, published, skipped, error,
                to_char(started_at at time zone 'UTC', {ISO}),
                to_char(updated_at at time zone 'UTC', {ISO}),
                to_char(finished_at at time zone 'UTC', {ISO}),
                greatest(extract(epoch from now() - updated_at), 0)::float8
         from producer_runs order by id desc limit {PRODUCER_RUNS}"
    );
    let rows = match client.query(&sql, &[]).await {
        Ok(rows) => rows,
        Err(error) if error.code() == Some(&SqlState::UNDEFINED_TABLE) => return Ok(Vec::new()),
        Err(error) => return Err(error).context("reading the producer runs"),
    };
    Ok(rows
        .iter()
        .map(|row| ProducerRun {
            id: row.get(0),
            state: row.get(1),
            total: row.get(2),
            pages_planned: row.get(3),
            pages_done: row.get(4),
            listed: row.get(5),
            published: row.get(6),
            skipped: row.get(7),
            error: row.get(8),
            started_at: row.get(9),
            updated_at: row.get(10),
            finished_at: row.get(11),
            seconds_since_update: row.get::<_, f64>(12) as u64,
        })
        .collect())
}

/// Consumers whose API circuit is open now (rows older than three refreshes belong to
/// processes that are gone). An empty answer on a schema that predates the table.
async fn api_circuit(client: &tokio_postgres::Client) -> anyhow::Result<ApiCircuit> {
    const ISO: &str = r#"'YYYY-MM-DD"T"HH24:MI:SS"Z"'"#;
    let sql = format!(
        "select process, to_char(since at time zone 'UTC', {ISO}),
                greatest(extract(epoch from now() - since), 0)::float8, error
         from api_circuit where updated_at > now() - interval '30 seconds'
         order by since, updated_at desc"
    );
    let rows = match client.query(&sql, &[]).await {
        Ok(rows) => rows,
        Err(error) if error.code() == Some(&SqlState::UNDEFINED_TABLE) => {
            return Ok(ApiCircuit::default());
        }
        Err(error) => return Err(error).context("reading the API circuit"),
    };
    Ok(ApiCircuit {
        open_consumers: rows.len() as i64,
        processes: rows.iter().map(|row| row.get(0)).collect(),
        since: rows.first().map(|row| row.get(1)),
        seconds_open: rows.first().map(|row| row.get::<_, f64>(2) as u64),
        last_error: rows.first().map(|row| row.get(3)),
    })
}
