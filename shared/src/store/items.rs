//! Item state (`ingest_items.status`): the state machine of DESIGN.md, and every statement
//! that moves an item through it; no statement elsewhere in pokeq writes `status`.
//!
//! ```text
//!         record_listed           mark_queued              finish, mark_unchanged
//! (new) ─────────────────► pending ───────────────► queued ─────────────────────────► done
//!                           ▲  ▲                    │ │ ▲  ⟲ record_attempt            │
//!                           │  └─ claim_for_publish ┘ │ │                              │
//!                           │             mark_failed │ │ requeue_for_replay           │
//!                           │                         ▼ │                              │
//!                           │                       failed ⟲ mark_purged               │
//!                           │                         │                                │
//!                           └─────────────────────────┴────────────────────────────────┘
//!                             claim_for_publish: failed with --retry-failed, done with --refresh
//! ```
//!
//! Each edge, its function, and who takes it when:
//! - (new) → `pending`: [`Store::record_listed`]; the producer lists an item for the first time.
//! - (new) → `queued`: [`finish`], with the links; a consumer following links (`--follow`)
//!   stored a document linking to items that no row stands for yet, and publishes their jobs
//!   after the commit.
//! - `pending → queued`: [`Store::mark_queued`]; the broker confirmed the item's job.
//! - `queued → pending`: [`Store::claim_for_publish`]; a producer rerun finds the item untouched
//!   for `requeue_after` (its job may be lost) and publishes it again.
//! - `queued → pending`: [`Store::claim_stale_links`]; a `--follow` producer run finds an item of
//!   a resource it does not list untouched for `requeue_after` (a consumer enqueued it as a link
//!   and may have crashed before publishing its job) and publishes it again.
//! - `failed → pending`: [`Store::claim_for_publish`] with `--retry-failed`.
//! - `done → pending`: [`Store::claim_for_publish`] with `--refresh`.
//! - `queued → queued`: [`Store::record_attempt`]; a transient failure, the job waits in a retry
//!   queue.
//! - `* → done`, with its row: [`finish`]; the consumer's group commit of fetched documents (see
//!   `crate::commit`, which writes the rows of the items marked in the same transaction).
//! - `* → done`, no row written: [`Store::mark_unchanged`]; the API answered 304 for the stored
//!   copy.
//! - `* → failed`: [`Store::mark_failed`]; permanent, exhausted or dead-lettered by the broker.
//! - `* → queued`, attempts reset: [`Store::requeue_for_replay`]; `pokeq dead replay`.
//! - `* → failed`, marked purged: [`Store::mark_purged`]; `pokeq dead purge` (the item is
//!   `failed` already unless its letter came from elsewhere).
//!
//! `*` is any state but `done`, or no row at all where the function inserts one (a job whose
//! item was never listed: published by hand, or the table cleared). `done` is final for a run:
//! only `--refresh` moves a done item, so a duplicate delivery or the replay of a finished job
//! cannot undo it. [`Store::item_states`] and [`Store::status_counts`] only read.

use std::collections::HashSet;
use std::time::Duration;

use super::{Store, StoreError};
use crate::job::{ErrorKind, RESOURCE};
use crate::pgerror::storable;
use crate::validators::Validators;

/// Prefix of `last_error` on a purged item, so that a later reader knows an operator removed its
/// dead letter on purpose (and a second purge does not prefix it twice).
pub const PURGED_PREFIX: &str = "purged by operator: ";

/// Edges `* → done` and (new) → `queued`, in one statement: marks items `done` unless they are
/// already, and inserts the links of a crawl as `queued` unless an item stands for them already.
/// `$1` resources, `$2` ids, `$3` names, `$4` statuses (`done` for an item marked, `queued` for a
/// link), `$5` attempts, `$6` ETags, `$7` Last-Modified values, one per item; no item twice.
/// Returns the items it marked or inserted, with their status.
///
/// One statement in `(resource, id)` order takes every row lock the commit needs in one order:
/// two consumers' group commits, each marking documents and enqueueing links, cannot deadlock
/// (with a statement for the marks and another for the links, each could hold a row the other's
/// second statement waits for). A link whose item exists is locked by the `do update` (its
/// `where` leaves the row as it is) until the commit; the consumer's set of links known keeps
/// that to a link's first sight.
const FINISH: &str =
    "insert into ingest_items (resource, id, name, status, attempts, updated_at, queued_at,
                                  etag, last_modified)
     select resource, id, name, status, attempts, now(),
            case when status = 'queued' then now() end, etag, last_modified
     from unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::int[], $6::text[],
                 $7::text[])
          as t(resource, id, name, status, attempts, etag, last_modified)
     order by resource, id
     on conflict (resource, id) do update
        set status = 'done', attempts = excluded.attempts,
            name = coalesce(excluded.name, ingest_items.name), last_error = null,
            error_kind = null, updated_at = now(), etag = excluded.etag,
            last_modified = excluded.last_modified
        where excluded.status = 'done' and ingest_items.status <> 'done'
     returning resource, id, status";

/// An item that [`finish`] moves to `done`, with what its fetch brought.
#[derive(Debug, Clone, Copy)]
pub struct DoneItem<'a> {
    pub resource: &'static str,
    pub id: i32,
    /// The name the item is known by; `None` keeps the one stored.
    pub name: Option<&'a str>,
    pub attempts: i32,
    pub validators: &'a Validators,
}

/// What [`finish`] changed.
#[derive(Debug, Default)]
pub struct Finished {
    /// The items it marked `done`: their rows are the caller's to write.
    pub marked: HashSet<(&'static str, i32)>,
    /// The links it inserted as `queued`: their jobs are the caller's to publish.
    pub enqueued: HashSet<(&'static str, i32)>,
}

/// Edges `* → done` (a consumer's group commit of fetched documents, of any resource) and
/// (new) → `queued` (the links those documents name, for a crawl that follows links), inside the
/// caller's transaction `tx`, which then writes the rows of the items marked (and only theirs)
/// before committing: a document is never `done` without its row, nor without its links known.
/// Items done already are left alone, and so are links an item stands for, whatever its state.
/// A link that is also one of `items` is taken as the item.
pub async fn finish(
    tx: &deadpool_postgres::Transaction<'_>,
    items: &[DoneItem<'_>],
    links: &[(&'static str, i32)],
) -> Result<Finished, StoreError> {
    if items.is_empty() && links.is_empty() {
        return Ok(Finished::default());
    }
    let marking: HashSet<(&str, i32)> = items.iter().map(|item| (item.resource, item.id)).collect();
    let links: Vec<(&'static str, i32)> = links
        .iter()
        .copied()
        .filter(|link| !marking.contains(link))
        .collect();
    let count = items.len() + links.len();
    let mut resources: Vec<&str> = Vec::with_capacity(count);
    let mut ids: Vec<i32> = Vec::with_capacity(count);
    let mut names: Vec<Option<&str>> = Vec::with_capacity(count);
    let mut statuses: Vec<&str> = Vec::with_capacity(count);
    let mut attempts: Vec<i32> = Vec::with_capacity(count);
    let mut etags: Vec<Option<&str>> = Vec::with_capacity(count);
    let mut modified: Vec<Option<&str>> = Vec::with_capacity(count);
    for item in items {
        resources.push(item.resource);
        ids.push(item.id);
        names.push(item.name);
        statuses.push("done");
        attempts.push(item.attempts);
        etags.push(item.validators.etag.as_deref());
        modified.push(item.validators.last_modified.as_deref());
    }
    for &(resource, id) in &links {
        resources.push(resource);
        ids.push(id);
        names.push(None);
        statuses.push("queued");
        attempts.push(0);
        etags.push(None);
        modified.push(None);
    }
    let statement = tx.prepare_cached(FINISH).await?;
    let rows = tx
        .query(
            &statement,
            &[
                &resources, &ids, &names, &statuses, &attempts, &etags, &modified,
            ],
        )
        .await?;
    // The names are the callers' own `&'static str`s: a row answers by its position's.
    let known: std::collections::HashMap<(&str, i32), &'static str> = items
        .iter()
        .map(|item| ((item.resource, item.id), item.resource))
        .chain(
            links
                .iter()
                .map(|&(resource, id)| ((resource, id), resource)),
        )
        .collect();
    let mut finished = Finished::default();
    for row in &rows {
        let (resource, id): (&str, i32) = (row.get(0), row.get(1));
        let Some(&resource) = known.get(&(resource, id)) else {
            continue;
        };
        if row.get::<_, &str>(2) == "done" {
            finished.marked.insert((resource, id));
        } else {
            finished.enqueued.insert((resource, id));
        }
    }
    Ok(finished)
}

/// An item as the consumer finds it before fetching.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ItemState {
    pub done: bool,
    /// Validators of the stored copy (empty if never stored).
    pub validators: Validators,
}

/// Counts of items by status.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StatusCounts {
    pub pending: i64,
    pub queued: i64,
    pub done: i64,
    pub failed: i64,
}

impl StatusCounts {
    /// From the rows of `select status, count(*) ... group by status`, for callers that count
    /// over their own connection.
    pub fn from_rows(rows: &[tokio_postgres::Row]) -> Self {
        let mut counts = Self::default();
        for row in rows {
            let n: i64 = row.get(1);
            match row.get::<_, &str>(0) {
                "pending" => counts.pending = n,
                "queued" => counts.queued = n,
                "done" => counts.done = n,
                "failed" => counts.failed = n,
                _ => {}
            }
        }
        counts
    }
}

impl Store {
    /// Edge (new) → `pending`: records listed items as `pending`; items already known keep their
    /// state. Returns the ids it inserted: new items, which the producer publishes without asking
    /// again (only the others need [`Store::claim_for_publish`]).
    pub async fn record_listed(
        &self,
        resource: &str,
        items: &[(i32, String)],
    ) -> Result<Vec<i32>, StoreError> {
        let (ids, names): (Vec<i32>, Vec<&str>) =
            items.iter().map(|(id, name)| (*id, name.as_str())).unzip();
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "insert into ingest_items (resource, id, name, status)
                 select $1, t.id, nullif(t.name, ''), 'pending'
                 from unnest($2::int[], $3::text[]) as t(id, name)
                 on conflict (resource, id) do nothing
                 returning id",
                &[&resource, &ids, &names],
            )
            .await?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    /// Edges `queued → pending`, `failed → pending` and `done → pending`, for a producer run. Of
    /// `ids`, the ones a producer must publish: those `pending` (never confirmed), those `queued`
    /// but untouched for `requeue_after` (their job may be lost: a purged queue, a classic queue's
    /// lost message), with `retry_failed` those `failed`, and with `refresh` those `done`; all but
    /// the pending ones move back to `pending`. An item's last touch is its `updated_at`, which
    /// every step of its job moves (queued, each retry attempt recorded, ...), or its `queued_at`
    /// if later.
    pub async fn claim_for_publish(
        &self,
        resource: &str,
        ids: &[i32],
        retry_failed: bool,
        refresh: bool,
        requeue_after: Duration,
    ) -> Result<Vec<i32>, StoreError> {
        let client = self.pool.get().await?;
        // Pending items are only read: rewriting them would double the producer's writes on a
        // first run. The select sees the statuses from before the update.
        let rows = client
            .query(
                "with moved as (
                    update ingest_items set status = 'pending', updated_at = now()
                    where resource = $1 and id = any($2)
                      and (($3 and status = 'failed') or ($4 and status = 'done')
                           or (status = 'queued' and greatest(updated_at, queued_at)
                               <= now() - make_interval(secs => $5)))
                    returning id
                 )
                 select id from ingest_items
                 where resource = $1 and id = any($2) and status = 'pending'
                 union all
                 select id from moved",
                &[
                    &resource,
                    &ids,
                    &retry_failed,
                    &refresh,
                    &requeue_after.as_secs_f64(),
                ],
            )
            .await?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    /// Edge `queued → pending`, for a producer run with `--follow`: the items of resources other
    /// than `listed` (which the run's lists cover) `queued` and untouched for `requeue_after`,
    /// moved back to `pending` for the run to publish again, with their names. They are links a
    /// consumer enqueued ([`finish`]) whose job may be lost: the consumer stopped
    /// between inserting them and publishing, or the broker lost the job.
    pub async fn claim_stale_links(
        &self,
        listed: &[&str],
        requeue_after: Duration,
    ) -> Result<Vec<(String, i32, String)>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "update ingest_items set status = 'pending', updated_at = now()
                 where status = 'queued' and resource <> all($1)
                   and greatest(updated_at, queued_at) <= now() - make_interval(secs => $2)
                 returning resource, id, coalesce(name, '')",
                &[&listed, &requeue_after.as_secs_f64()],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| (row.get(0), row.get(1), row.get(2)))
            .collect())
    }

    /// Edge `pending → queued`, for jobs the broker confirmed. An item a consumer already finished
    /// (done or failed) stays as it is.
    pub async fn mark_queued(&self, resource: &str, ids: &[i32]) -> Result<u64, StoreError> {
        let client = self.pool.get().await?;
        Ok(client
            .execute(
                "update ingest_items set status = 'queued', queued_at = now(), updated_at = now()
                 where resource = $1 and id = any($2) and status = 'pending'",
                &[&resource, &ids],
            )
            .await?)
    }

    /// Reads, moves nothing. What the consumer needs before fetching, for many ids in one
    /// statement: whether each item is done, and the validators of the copy stored. Ids without a
    /// row are absent.
    pub async fn item_states(
        &self,
        resource: &str,
        ids: &[i32],
    ) -> Result<std::collections::HashMap<i32, ItemState>, StoreError> {
        let client = self.pool.get().await?;
        // An unnamed statement, planned for its actual ids each time: a cached generic plan,
        // made while the table was nearly empty, scans the whole table for every batch once it
        // has grown (found by the benchmark).
        let rows = client
            .query(
                "select id, status = 'done', etag, last_modified
                 from ingest_items where resource = $1 and id = any($2)",
                &[&resource, &ids],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| {
                let state = ItemState {
                    done: row.get(1),
                    validators: Validators {
                        etag: row.get(2),
                        last_modified: row.get(3),
                    },
                };
                (row.get(0), state)
            })
            .collect())
    }

    /// Edge `queued → queued`: records a transient failure; the item stays `queued` (its job waits
    /// in a retry queue), with its attempts and last error.
    pub async fn record_attempt(
        &self,
        resource: &str,
        id: i32,
        attempts: i32,
        error: &str,
    ) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "insert into ingest_items (resource, id, status, attempts, last_error)
                 values ($1, $2, 'queued', $3, $4)
                 on conflict (resource, id) do update
                    set attempts = excluded.attempts, last_error = excluded.last_error,
                        updated_at = now()
                    where ingest_items.status <> 'done'",
                &[&resource, &id, &attempts, &storable(error)],
            )
            .await?;
        Ok(())
    }

    /// Edge `* → done`, no row written: the API confirmed the stored copy current (HTTP 304).
    /// Returns false if the item was done already.
    pub async fn mark_unchanged(
        &self,
        resource: &str,
        id: i32,
        attempts: i32,
    ) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        let changed = client
            .execute(
                "update ingest_items
                 set status = 'done', attempts = $3, last_error = null, error_kind = null,
                     updated_at = now()
                 where resource = $1 and id = $2 and status <> 'done'",
                &[&resource, &id, &attempts],
            )
            .await?;
        Ok(changed > 0)
    }

    /// Edge `* → failed`: the item's job was dead-lettered (permanent, exhausted, or by the
    /// broker), with the reason (a done item stays done).
    pub async fn mark_failed(
        &self,
        resource: &str,
        id: i32,
        kind: ErrorKind,
        attempts: i32,
        error: &str,
    ) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "insert into ingest_items (resource, id, status, attempts, last_error, error_kind)
                 values ($1, $2, 'failed', $3, $4, $5)
                 on conflict (resource, id) do update
                    set status = 'failed', attempts = excluded.attempts,
                        last_error = excluded.last_error, error_kind = excluded.error_kind,
                        updated_at = now()
                    where ingest_items.status <> 'done'",
                &[&resource, &id, &attempts, &storable(error), &kind.as_str()],
            )
            .await?;
        Ok(())
    }

    /// Edge `* → queued`, attempts reset: `pokeq dead replay` published the item's job again
    /// (confirmed, before this). A `done` item stays done: its replayed job will be acked without
    /// an API call. `name` may be empty (a job without one), which stores none. `resource` is the
    /// job's: a letter of any Pokédex resource can be replayed.
    pub async fn requeue_for_replay(
        &self,
        resource: &str,
        id: i32,
        name: &str,
    ) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "insert into ingest_items (resource, id, name, status, attempts)
                 values ($1, $2, nullif($3, ''), 'queued', 0)
                 on conflict (resource, id) do update
                    set status = 'queued', attempts = 0, updated_at = now()
                    where ingest_items.status <> 'done'",
                &[&resource, &id, &name],
            )
            .await?;
        Ok(())
    }

    /// Edge `* → failed`, marked purged: `pokeq dead purge` removes the item's dead letter for good
    /// (after this). The item ends `failed` (unless `done`), its kind kept or else the letter's
    /// `kind`, and its `last_error` prefixed with [`PURGED_PREFIX`] (once): its job will not run
    /// unless the producer is rerun with `--retry-failed`. `resource` is the letter's job's.
    pub async fn mark_purged(
        &self,
        resource: &str,
        id: i32,
        kind: &str,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "update ingest_items
                 set status = 'failed',
                     error_kind = coalesce(error_kind, $3),
                     last_error = case when last_error like $5 || '%' then last_error
                                       else $5 || coalesce($4, last_error, $3) end,
                     updated_at = now()
                 where resource = $1 and id = $2 and status <> 'done'",
                &[&resource, &id, &kind, &error, &PURGED_PREFIX],
            )
            .await?;
        Ok(())
    }

    /// Reads, moves nothing: how many items are in each state.
    pub async fn status_counts(&self) -> Result<StatusCounts, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "select status, count(*) from ingest_items where resource = $1 group by status",
                &[&RESOURCE],
            )
            .await?;
        Ok(StatusCounts::from_rows(&rows))
    }
}
