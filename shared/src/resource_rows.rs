//! Postgres for the resources of [`crate::resources`]: their rows, their documents in
//! `resource_documents`, and their items in `ingest_items`.
//!
//! [`save_many`] is what a consumer calls for these resources, as [`Store::save_many`] for
//! pokemon: a record is written, and its item marked `done` (by [`mark_done`], the state
//! machine's edge in `store`), only if the item was not `done` already, all in one transaction
//! (the item's row lock makes a second writer of the same item wait for the first and then skip
//! it). [`upsert`] writes records without item state, for loading documents by other means.

use tokio_postgres::types::Json;

use crate::resources::Record;
use crate::store::{DoneItem, Store, StoreError, mark_done};
use crate::validators::Validators;

/// One record to store, with what the consumer knows about its fetch.
#[derive(Debug, Clone)]
pub struct SaveRecord {
    pub record: Record,
    /// The validators its document came with.
    pub validators: Validators,
    /// Tries it took, for `ingest_items.attempts`.
    pub attempts: i32,
}

/// Upserts documents: `$1` resources, `$2` ids, `$3` documents (JSON text), `$4` ETags, `$5`
/// Last-Modified values.
const SAVE_DOCUMENTS: &str = "insert into resource_documents (resource, id, document, etag,
                                        last_modified, fetched_at)
     select resource, id, document::jsonb, etag, last_modified, now()
     from unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::text[])
          as t(resource, id, document, etag, last_modified)
     order by resource, id
     on conflict (resource, id) do update
        set document = excluded.document, etag = excluded.etag,
            last_modified = excluded.last_modified, fetched_at = excluded.fetched_at";

/// `(resource, id)` of a record: what an item is known by.
fn key(row: &SaveRecord) -> (&'static str, i32) {
    (row.record.resource().name(), row.record.id())
}

/// The positions of `rows` to write, one per item (the first given), in `(resource, id)` order
/// so that two transactions holding the same items lock them in the same order.
fn distinct_in_order(rows: &[SaveRecord]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by_key(|&i| (key(&rows[i]), i));
    order.dedup_by_key(|&mut i| key(&rows[i]));
    order
}

/// Writes the records and marks their items `done`, except items done already, in one
/// transaction. Returns, for each record in the order given, whether it was written (of two
/// records for one item, only the first can be).
pub async fn save_many(store: &Store, rows: &[SaveRecord]) -> Result<Vec<bool>, StoreError> {
    let order = distinct_in_order(rows);
    let mut client = store.pool().get().await?;
    let tx = client.transaction().await?;
    let items: Vec<DoneItem> = order
        .iter()
        .map(|&i| DoneItem {
            resource: key(&rows[i]).0,
            id: rows[i].record.id(),
            name: rows[i].record.name(),
            attempts: rows[i].attempts,
            validators: &rows[i].validators,
        })
        .collect();
    let marked = mark_done(&tx, &items).await?;
    let to_write: Vec<usize> = order
        .into_iter()
        .filter(|&i| {
            let (resource, id) = key(&rows[i]);
            marked.contains(&(resource.to_owned(), id))
        })
        .collect();
    write(&tx, rows, &to_write).await?;
    tx.commit().await?;
    let mut written = vec![false; rows.len()];
    for i in to_write {
        written[i] = true;
    }
    Ok(written)
}

/// Writes the records' rows and documents, whatever their items' state, in one transaction;
/// `ingest_items` is not touched.
pub async fn upsert(store: &Store, rows: &[SaveRecord]) -> Result<(), StoreError> {
    let order = distinct_in_order(rows);
    let mut client = store.pool().get().await?;
    let tx = client.transaction().await?;
    write(&tx, rows, &order).await?;
    tx.commit().await?;
    Ok(())
}

/// The documents of `rows[positions]` (in `(resource, id)` order), then their rows, one
/// statement per resource.
async fn write(
    client: &deadpool_postgres::Transaction<'_>,
    rows: &[SaveRecord],
    positions: &[usize],
) -> Result<(), StoreError> {
    if positions.is_empty() {
        return Ok(());
    }
    let column = |f: &dyn Fn(&SaveRecord) -> Option<&str>| -> Vec<Option<&str>> {
        positions.iter().map(|&i| f(&rows[i])).collect()
    };
    let resources = column(&|row| Some(row.record.resource().name()));
    let ids: Vec<i32> = positions.iter().map(|&i| rows[i].record.id()).collect();
    let documents = column(&|row| Some(row.record.document()));
    let etags = column(&|row| row.validators.etag.as_deref());
    let modified = column(&|row| row.validators.last_modified.as_deref());
    client
        .execute(
            SAVE_DOCUMENTS,
            &[&resources, &ids, &documents, &etags, &modified],
        )
        .await?;
    // Positions come in (resource, id) order: each resource's rows are one run of them.
    let mut start = 0;
    while start < positions.len() {
        let resource = rows[positions[start]].record.resource();
        let run = positions[start..]
            .iter()
            .take_while(|&&i| rows[i].record.resource().name() == resource.name())
            .count();
        let batch: Vec<&serde_json::Value> = positions[start..start + run]
            .iter()
            .map(|&i| rows[i].record.row())
            .collect();
        client
            .execute(resource.upsert_sql(), &[&Json(&batch)])
            .await?;
        start += run;
    }
    Ok(())
}
