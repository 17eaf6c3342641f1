//! Producer runs (`producer_runs`): a run's plan and figures so far, for `pokeq status`.

use super::{Store, StoreError};
use crate::pgerror::storable;

/// A producer run's figures so far (see [`Store::page_done`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RunProgress {
    pub pages_done: i64,
    pub listed: i64,
    pub published: i64,
    pub skipped: i64,
}

impl Store {
    /// Opens a `producer_runs` row for a run starting now.
    pub async fn start_run(&self) -> Result<i64, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                "insert into producer_runs (state) values ('running') returning id",
                &[],
            )
            .await?;
        Ok(row.get(0))
    }

    /// Records a run's plan: how many items and pages it will list.
    pub async fn plan_run(&self, run: i64, total: i64, pages: i64) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "update producer_runs set total = $2, pages_planned = $3, updated_at = now()
                 where id = $1",
                &[&run, &total, &pages],
            )
            .await?;
        Ok(())
    }

    /// Records a run's figures so far, as a page finishes. Totals, never lowered, rather than
    /// increments: repeated after a reply lost with the connection, or arriving out of order
    /// from pages finishing together, the row still counts each page once.
    pub async fn page_done(&self, run: i64, progress: RunProgress) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "update producer_runs
                 set pages_done = greatest(pages_done, $2), listed = greatest(listed, $3),
                     published = greatest(published, $4), skipped = greatest(skipped, $5),
                     updated_at = now()
                 where id = $1",
                &[
                    &run,
                    &progress.pages_done,
                    &progress.listed,
                    &progress.published,
                    &progress.skipped,
                ],
            )
            .await?;
        Ok(())
    }

    /// Closes a run as `done`, or `failed` with the error.
    pub async fn finish_run(&self, run: i64, error: Option<&str>) -> Result<(), StoreError> {
        let state = if error.is_some() { "failed" } else { "done" };
        let error = error.map(storable);
        let client = self.pool.get().await?;
        client
            .execute(
                "update producer_runs set state = $2, error = $3, finished_at = now(),
                        updated_at = now()
                 where id = $1",
                &[&run, &state, &error],
            )
            .await?;
        Ok(())
    }
}
