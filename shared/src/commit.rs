//! A consumer's group commit: the documents of many finished jobs, of any resource, stored in one
//! transaction with their items marked `done` and, for a crawl that follows links, the items
//! their links name enqueued.
//!
//! One transaction holds a document's row, its item's `done` and its links: a document is never
//! `done` without its links known, so a consumer that dies after the commit loses no link (its
//! redelivered job finds the item done; the links are `queued`, and published, or republished by
//! the producer's `--requeue-after` if the consumer died before publishing them).
//!
//! Every `ingest_items` write of the commit is one statement in `(resource, id)` order
//! ([`store::finish`]); the rows (pokemon, documents, each resource's table) follow, only for the
//! items that statement marked. Of two consumers holding the same job, the second waits for the
//! first's commit and then skips the document.

use std::collections::HashMap;

use crate::metrics;
use crate::resource_rows::{self, SaveRecord};
use crate::resources::POKEMON;
use crate::store::{self, DoneItem, SaveRow, Store, StoreError};
use crate::validators::Validators;

/// The document of a finished job, ready to store.
#[derive(Debug, Clone)]
pub enum Document {
    Pokemon(SaveRow),
    Record(SaveRecord),
}

impl Document {
    /// `(resource, id)`: what its item is known by.
    pub fn key(&self) -> (&'static str, i32) {
        match self {
            Document::Pokemon(row) => (POKEMON, row.pokemon.id),
            Document::Record(row) => resource_rows::key(row),
        }
    }

    fn done_item(&self) -> DoneItem<'_> {
        let (resource, id) = self.key();
        let (name, attempts, validators): (Option<&str>, i32, &Validators) = match self {
            Document::Pokemon(row) => (Some(&row.pokemon.name), row.attempts, &row.validators),
            Document::Record(row) => (row.record.name(), row.attempts, &row.validators),
        };
        DoneItem {
            resource,
            id,
            name,
            attempts,
            validators,
        }
    }
}

/// A finished job: its document, and the `(resource, id)` of the documents it links to when
/// its job follows links (empty otherwise).
#[derive(Debug, Clone)]
pub struct Finished {
    pub document: Document,
    pub links: Vec<(&'static str, i32)>,
}

impl Finished {
    /// A finished job that follows no links.
    pub fn alone(document: Document) -> Self {
        Self {
            document,
            links: Vec::new(),
        }
    }
}

/// What became of a [`Finished`] job in its commit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Committed {
    /// Its document was written and its item marked done; false if the item was done already
    /// (or another job of the batch held the same item first).
    pub written: bool,
    /// The links it enqueued (items no row stood for): their jobs are the caller's to publish.
    /// A link that several jobs of the batch name is enqueued for the first of them.
    pub enqueued: Vec<(&'static str, i32)>,
}

/// Stores `batch` in one transaction: each document whose item is not done yet is written and
/// its item marked done, and the links of the batch no item stands for are enqueued. Returns,
/// for each job in the order given, what became of it. `Err` for the whole batch: nothing of it
/// is stored.
pub async fn commit(store: &Store, batch: &[Finished]) -> Result<Vec<Committed>, StoreError> {
    // One document per item, the first given, in (resource, id) order.
    let mut order: Vec<usize> = (0..batch.len()).collect();
    order.sort_by_key(|&i| (batch[i].document.key(), i));
    order.dedup_by_key(|&mut i| batch[i].document.key());
    let items: Vec<DoneItem> = order
        .iter()
        .map(|&i| batch[i].document.done_item())
        .collect();
    // Each link once, for the first job naming it.
    let mut owners: HashMap<(&'static str, i32), usize> = HashMap::new();
    for (i, job) in batch.iter().enumerate() {
        for &link in &job.links {
            owners.entry(link).or_insert(i);
        }
    }
    let links: Vec<(&'static str, i32)> = owners.keys().copied().collect();

    let started = std::time::Instant::now();
    let mut client = store.pool().get().await?;
    let tx = client.transaction().await?;
    let finished = store::finish(&tx, &items, &links).await?;
    let marked: Vec<usize> = order
        .into_iter()
        .filter(|&i| finished.marked.contains(&batch[i].document.key()))
        .collect();
    let pokemon: Vec<&SaveRow> = marked
        .iter()
        .filter_map(|&i| match &batch[i].document {
            Document::Pokemon(row) => Some(row),
            Document::Record(_) => None,
        })
        .collect();
    store::write_pokemon(&tx, &pokemon).await?;
    let records: Vec<&SaveRecord> = marked
        .iter()
        .filter_map(|&i| match &batch[i].document {
            Document::Record(row) => Some(row),
            Document::Pokemon(_) => None,
        })
        .collect();
    resource_rows::write(&tx, &records).await?;
    tx.commit().await?;
    metrics::histogram!(metrics::DB_SECONDS).record(started.elapsed().as_secs_f64());
    metrics::histogram!(metrics::COMMIT_ROWS).record(batch.len() as f64);

    let mut committed = vec![Committed::default(); batch.len()];
    for i in marked {
        committed[i].written = true;
    }
    for link in finished.enqueued {
        if let Some(&owner) = owners.get(&link) {
            committed[owner].enqueued.push(link);
        }
    }
    for job in &mut committed {
        job.enqueued.sort_unstable();
    }
    Ok(committed)
}

impl From<SaveRow> for Document {
    fn from(row: SaveRow) -> Self {
        Document::Pokemon(row)
    }
}

impl From<SaveRecord> for Document {
    fn from(row: SaveRecord) -> Self {
        Document::Record(row)
    }
}
