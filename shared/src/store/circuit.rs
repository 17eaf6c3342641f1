//! Each consumer's API circuit (`api_circuit`), so that `pokeq status` can say the API is down.
//! The circuit itself is the `circuit` module's.

use super::{Store, StoreError};

impl Store {
    /// Records this process's API circuit: open (with since when and why), refreshed while it
    /// stays open, or closed (the row goes, with rows of processes long gone).
    pub async fn record_circuit(
        &self,
        process: &str,
        open: Option<(i64, &str)>,
    ) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        match open {
            Some((since_unix_ms, error)) => {
                client
                    .execute(
                        "insert into api_circuit (process, since, error, updated_at)
                         values ($1, to_timestamp($2::float8 / 1000), $3, now())
                         on conflict (process) do update
                            set since = excluded.since, error = excluded.error,
                                updated_at = now()",
                        &[&process, &(since_unix_ms as f64), &error],
                    )
                    .await?;
            }
            None => {
                client
                    .execute(
                        "delete from api_circuit
                         where process = $1 or updated_at < now() - interval '1 day'",
                        &[&process],
                    )
                    .await?;
            }
        }
        Ok(())
    }
}
