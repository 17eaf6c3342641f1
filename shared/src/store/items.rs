//! Item state (`ingest_items.status`): the state machine of DESIGN.md, and every statement
//! that moves an item through it; no statement elsewhere in pokeq writes `status`.
//!
//! ```text
//!         record_listed           mark_queued          save_many, mark_done, mark_unchanged
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
//! - (new) → `queued`: [`Store::enqueue_links`]; a consumer following links (`--follow`) found
//!   a document linked that no item stands for yet, and publishes its job next.
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
//! - `* → done`, with its row: [`Store::save_many`]; the consumer's commit of a fetched document.
//! - `* → done`, no row written: [`Store::mark_unchanged`]; the API answered 304 for the stored
//!   copy.
//! - `* → done`, for an item of another Pokédex resource: [`mark_done`], in the transaction of
//!   `resource_rows::save_many`, which then writes the records of the items it marked.
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

use super::rows::{BatchRow, SaveRow};
use super::{Store, StoreError};
use crate::job::{ErrorKind, RESOURCE};
use crate::pgerror::storable;
use crate::validators::Validators;

/// Prefix of `last_error` on a purged item, so that a later reader knows an operator removed its
/// dead letter on purpose (and a second purge does not prefix it twice).
pub const PURGED_PREFIX: &str = "purged by operator: ";

/// Marks items `done` unless they are already, returning those it marked. `$1` resources, `$2`
/// ids, `$3` names, `$4` attempts, `$5` ETags, `$6` Last-Modified values, one per item.
const MARK_DONE: &str =
    "insert into ingest_items (resource, id, name, status, attempts, updated_at,
                                  etag, last_modified)
     select resource, id, name, 'done', attempts, now(), etag, last_modified
     from unnest($1::text[], $2::int[], $3::text[], $4::int[], $5::text[], $6::text[])
          as t(resource, id, name, attempts, etag, last_modified)
     order by resource, id
     on conflict (resource, id) do update
        set status = 'done', attempts = excluded.attempts,
            name = coalesce(excluded.name, ingest_items.name), last_error = null,
            error_kind = null, updated_at = now(), etag = excluded.etag,
            last_modified = excluded.last_modified
        where ingest_items.status <> 'done'
     returning resource, id";

/// An item of any resource that [`mark_done`] moves to `done`, with what its fetch brought.
#[derive(Debug, Clone, Copy)]
pub struct DoneItem<'a> {
    pub resource: &'a str,
    pub id: i32,
    /// The name the item is known by; `None` keeps the one stored.
    pub name: Option<&'a str>,
    pub attempts: i32,
    pub validators: &'a Validators,
}

/// Edge `* → done`, for items of the Pokédex resources other than pokemon: marks `items` done,
/// except those done already, inside the caller's transaction `tx`, and returns the
/// `(resource, id)` of those it marked, so that the caller writes their records (and only theirs)
/// before committing. Items are marked in the order given: the caller sorts them by
/// `(resource, id)` so that two transactions lock the same items in the same order.
pub async fn mark_done(
    tx: &tokio_postgres::Transaction<'_>,
    items: &[DoneItem<'_>],
) -> Result<HashSet<(String, i32)>, StoreError> {
    let resources: Vec<&str> = items.iter().map(|item| item.resource).collect();
    let ids: Vec<i32> = items.iter().map(|item| item.id).collect();
    let names: Vec<Option<&str>> = items.iter().map(|item| item.name).collect();
    let attempts: Vec<i32> = items.iter().map(|item| item.attempts).collect();
    let etags: Vec<Option<&str>> = items
        .iter()
        .map(|item| item.validators.etag.as_deref())
        .collect();
    let modified: Vec<Option<&str>> = items
        .iter()
        .map(|item| item.validators.last_modified.as_deref())
        .collect();
    let marked = tx
        .query(
            MARK_DONE,
            &[&resources, &ids, &names, &attempts, &etags, &modified],
        )
        .await?;
    Ok(marked
        .iter()
        .map(|row| (row.get::<_, String>(0), row.get::<_, i32>(1)))
        .collect())
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

/// Marks the items of a batch done and upserts their rows, except items done already (see
/// `save_many`). `$1` is a JSON array of [`BatchRow`]s in id order, `$2` the resource. Returns
/// the ids written.
const SAVE_DONE: &str = "with input as (
        select * from jsonb_to_recordset($1) as r(
            id int, name text, attempts int, height int, weight int, base_experience int,
            types text[], abilities text[], stats jsonb, sprite_url text, species text,
            is_default boolean, sort_order int, etag text, last_modified text)
     ),
     item as (
        insert into ingest_items (resource, id, name, status, attempts, updated_at,
                                  etag, last_modified)
        select $2, id, name, 'done', attempts, now(), etag, last_modified from input
        on conflict (resource, id) do update
            set status = 'done', attempts = excluded.attempts, name = excluded.name,
                last_error = null, error_kind = null, updated_at = now(),
                etag = excluded.etag, last_modified = excluded.last_modified
            where ingest_items.status <> 'done'
        returning id
     )
     insert into pokemon (id, name, height_m, weight_kg, base_experience, types,
                          abilities, stats, sprite_url, species, is_default, sort_order)
     select input.id, name, round(height::numeric / 10, 1), round(weight::numeric / 10, 1),
            base_experience, types, abilities, stats, sprite_url, species, is_default,
            sort_order
     from input join item using (id)
     order by input.id
     on conflict (id) do update
        set name = excluded.name, height_m = excluded.height_m,
            weight_kg = excluded.weight_kg, base_experience = excluded.base_experience,
            types = excluded.types, abilities = excluded.abilities,
            stats = excluded.stats, sprite_url = excluded.sprite_url,
            species = excluded.species, is_default = excluded.is_default,
            sort_order = excluded.sort_order, ingested_at = now()
     returning id";

impl Store {
    /// Edge (new) → `pending`: records listed items as `pending`; items already known keep their
    /// state.
    pub async fn record_listed(
        &self,
        resource: &str,
        items: &[(i32, String)],
    ) -> Result<(), StoreError> {
        let (ids, names): (Vec<i32>, Vec<&str>) =
            items.iter().map(|(id, name)| (*id, name.as_str())).unzip();
        let client = self.pool.get().await?;
        client
            .execute(
                "insert into ingest_items (resource, id, name, status)
                 select $1, t.id, nullif(t.name, ''), 'pending'
                 from unnest($2::int[], $3::text[]) as t(id, name)
                 on conflict (resource, id) do nothing",
                &[&resource, &ids, &names],
            )
            .await?;
        Ok(())
    }

    /// Edge (new) → `queued`: the links of a stored document (`--follow`), inserted as `queued`
    /// items unless known already, in one statement; returns the `(resource, id)` of those it
    /// inserted, whose jobs the caller then publishes (before acknowledging the parent's
    /// delivery). Known items are left alone whatever their state: each linked document is
    /// enqueued once however many consumers store documents linking to it at the same time (the
    /// primary key decides which insert wins), and a rerun enqueues nothing. A crash between this
    /// and the publish leaves the items `queued` without a job: the producer's `--requeue-after`
    /// publishes them again.
    pub async fn enqueue_links(
        &self,
        links: &[(&str, i32)],
    ) -> Result<Vec<(String, i32)>, StoreError> {
        if links.is_empty() {
            return Ok(Vec::new());
        }
        let (resources, ids): (Vec<&str>, Vec<i32>) = links.iter().copied().unzip();
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "insert into ingest_items (resource, id, status, queued_at)
                 select resource, id, 'queued', now()
                 from unnest($1::text[], $2::int[]) as t(resource, id)
                 order by resource, id
                 on conflict (resource, id) do nothing
                 returning resource, id",
                &[&resources, &ids],
            )
            .await?;
        Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
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
    /// consumer enqueued ([`Store::enqueue_links`]) whose job may be lost: the consumer stopped
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

    /// Edge `* → done`, with the row: the consumer's commit. Writes the rows and marks their items
    /// `done`, all in one statement (one round trip, one commit, one WAL flush). A row whose item
    /// is already done is not written: of two consumers holding the same job, the second waits for
    /// the first's commit and then skips it; of two rows for one item in the same batch, the first
    /// is written. Rows are written in id order so that two batches holding the same ids lock them
    /// in the same order. Returns, for each row in the order given, whether it was written.
    pub async fn save_many(&self, rows: &[SaveRow]) -> Result<Vec<bool>, StoreError> {
        let mut order: Vec<usize> = (0..rows.len()).collect();
        order.sort_by_key(|&i| (rows[i].pokemon.id, i));
        order.dedup_by_key(|&mut i| rows[i].pokemon.id);
        let input: Vec<BatchRow> = order.iter().map(|&i| BatchRow::of(&rows[i])).collect();
        let client = self.pool.get().await?;
        let started = std::time::Instant::now();
        let statement = client.prepare_cached(SAVE_DONE).await?;
        let saved = client
            .query(
                &statement,
                &[&tokio_postgres::types::Json(&input), &RESOURCE],
            )
            .await?;
        metrics::histogram!(crate::metrics::DB_SECONDS).record(started.elapsed().as_secs_f64());
        metrics::histogram!(crate::metrics::COMMIT_ROWS).record(rows.len() as f64);
        let saved: std::collections::HashSet<i32> = saved.iter().map(|row| row.get(0)).collect();
        let mut written = vec![false; rows.len()];
        for i in order {
            written[i] = saved.contains(&rows[i].pokemon.id);
        }
        Ok(written)
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
