//! Postgres for the resources of [`crate::resources`]: their rows, and their documents in
//! `resource_documents`.
//!
//! [`write`] is what a consumer's group commit (`crate::commit`) calls for the records of the
//! items it has just marked `done`, inside its transaction. [`upsert`] writes records without
//! item state, for loading documents by other means.

use tokio_postgres::types::Json;

use crate::resources::Record;
use crate::store::{Store, StoreError};
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
pub fn key(row: &SaveRecord) -> (&'static str, i32) {
    (row.record.resource().name(), row.record.id())
}

/// Writes the records' rows and documents, whatever their items' state, in one transaction;
/// `ingest_items` is not touched.
pub async fn upsert(store: &Store, rows: &[SaveRecord]) -> Result<(), StoreError> {
    let mut distinct: Vec<&SaveRecord> = rows.iter().collect();
    distinct.sort_by_key(|row| key(row));
    distinct.dedup_by_key(|row| key(row));
    let mut client = store.pool().get().await?;
    let tx = client.transaction().await?;
    write(&tx, &distinct).await?;
    tx.commit().await?;
    Ok(())
}

/// Writes the documents of `rows`, then their rows, one statement per resource, inside the
/// caller's transaction `tx`. `rows` hold distinct items in `(resource, id)` order.
pub async fn write(
    tx: &deadpool_postgres::Transaction<'_>,
    rows: &[&SaveRecord],
) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let column = |f: &dyn Fn(&SaveRecord) -> Option<&str>| -> Vec<Option<&str>> {
        rows.iter().map(|row| f(row)).collect()
    };
    let resources = column(&|row| Some(row.record.resource().name()));
    let ids: Vec<i32> = rows.iter().map(|row| row.record.id()).collect();
    let documents = column(&|row| Some(row.record.document()));
    let etags = column(&|row| row.validators.etag.as_deref());
    let modified = column(&|row| row.validators.last_modified.as_deref());
    let statement = tx.prepare_cached(SAVE_DOCUMENTS).await?;
    tx.execute(
        &statement,
        &[&resources, &ids, &documents, &etags, &modified],
    )
    .await?;
    // Rows come in (resource, id) order: each resource's rows are one run of them.
    for run in rows.chunk_by(|a, b| a.record.resource().name() == b.record.resource().name()) {
        let resource = run[0].record.resource();
        let batch: Vec<&serde_json::Value> = run.iter().map(|row| row.record.row()).collect();
        let statement = tx.prepare_cached(resource.upsert_sql()).await?;
        tx.execute(&statement, &[&Json(&batch)]).await?;
    }
    Ok(())
}
