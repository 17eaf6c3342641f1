//! Recording a page's list entries as `pending`, leaving out any the database refuses.
//!
//! The list is a third party's data: an entry whose name Postgres cannot store (a NUL in it)
//! fails the one statement that records the whole page. Such a page is recorded again entry by
//! entry, so that only the bad entries are left out (logged, counted, never published) and the
//! run goes on.

use pokeq_shared::metrics;
use pokeq_shared::store::Store;

use crate::patience::{GaveUp, Patience};

/// Records `items` (sorted, one per id) and returns those recorded and how many the database
/// refused.
pub async fn record_listed(
    store: &Store,
    patience: &Patience,
    resource: &str,
    items: Vec<(i32, String)>,
) -> Result<(Vec<(i32, String)>, u64), GaveUp> {
    let error = match patience
        .run("record listed items", || {
            store.record_listed(resource, &items)
        })
        .await
    {
        Ok(()) => return Ok((items, 0)),
        Err(GaveUp::Refused(error)) if items.len() > 1 => error,
        Err(GaveUp::Refused(error)) => {
            if let Some(item) = items.first() {
                refused(item, &error.to_string());
            }
            return Ok((Vec::new(), items.len() as u64));
        }
        Err(other) => return Err(other),
    };
    tracing::warn!(%error, entries = items.len(), "the database refused a page of list entries; recording them one by one");
    let mut recorded = Vec::with_capacity(items.len());
    let mut skipped = 0;
    for item in items {
        match patience
            .run("record a listed item", || {
                store.record_listed(resource, std::slice::from_ref(&item))
            })
            .await
        {
            Ok(()) => recorded.push(item),
            Err(GaveUp::Refused(error)) => {
                refused(&item, &error.to_string());
                skipped += 1;
            }
            Err(other) => return Err(other),
        }
    }
    Ok((recorded, skipped))
}

fn refused((id, name): &(i32, String), error: &str) {
    tracing::warn!(id, name = ?name, error, "list entry the database cannot store; skipped");
    metrics::counter!(metrics::REFUSED_ENTRIES).increment(1);
}
