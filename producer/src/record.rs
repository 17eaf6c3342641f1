//! Recording a page's list entries as `pending`, leaving out any the database refuses.
//!
//! The list is a third party's data: an entry whose name Postgres cannot store (a NUL in it)
//! fails the one statement that records the whole page. Such a page is recorded again entry by
//! entry, so that only the bad entries are left out (logged, counted, never published) and the
//! run goes on.

use pokeq_shared::metrics;
use pokeq_shared::store::Store;

use crate::patience::{GaveUp, Patience};

/// What became of a page's list entries.
pub struct Recorded {
    /// The entries recorded (known before or inserted now), in the order given.
    pub items: Vec<(i32, String)>,
    /// The ids of those inserted now: new items, to publish.
    pub inserted: Vec<i32>,
    /// How many entries the database refused.
    pub refused: u64,
}

/// Records `items` (sorted, one per id).
pub async fn record_listed(
    store: &Store,
    patience: &Patience,
    resource: &str,
    items: Vec<(i32, String)>,
) -> Result<Recorded, GaveUp> {
    let error = match patience
        .run("record listed items", || {
            store.record_listed(resource, &items)
        })
        .await
    {
        Ok(inserted) => {
            return Ok(Recorded {
                items,
                inserted,
                refused: 0,
            });
        }
        Err(GaveUp::Refused(error)) if items.len() > 1 => error,
        Err(GaveUp::Refused(error)) => {
            if let Some(item) = items.first() {
                refused(item, &error.to_string());
            }
            return Ok(Recorded {
                refused: items.len() as u64,
                items: Vec::new(),
                inserted: Vec::new(),
            });
        }
        Err(other) => return Err(other),
    };
    tracing::warn!(%error, entries = items.len(), "the database refused a page of list entries; recording them one by one");
    let mut recorded = Recorded {
        items: Vec::with_capacity(items.len()),
        inserted: Vec::new(),
        refused: 0,
    };
    for item in items {
        match patience
            .run("record a listed item", || {
                store.record_listed(resource, std::slice::from_ref(&item))
            })
            .await
        {
            Ok(inserted) => {
                recorded.inserted.extend(inserted);
                recorded.items.push(item);
            }
            Err(GaveUp::Refused(error)) => {
                refused(&item, &error.to_string());
                recorded.refused += 1;
            }
            Err(other) => return Err(other),
        }
    }
    Ok(recorded)
}

fn refused((id, name): &(i32, String), error: &str) {
    tracing::warn!(id, name = ?name, error, "list entry the database cannot store; skipped");
    metrics::counter!(metrics::REFUSED_ENTRIES).increment(1);
}
