//! The API request rate every process shares (`api_rate`): slots reserved in windows, and the
//! pause the API asked for. The pacing itself is the `rate` module's.

use super::{Store, StoreError};

impl Store {
    /// Reserves `slots` request slots at `rate` per second on the shared limiter `name`:
    /// returns how long from now until the first slot (zero or negative: now). Slots follow
    /// each other at `1 / rate`.
    pub async fn reserve_rate(&self, name: &str, rate: f64, slots: u32) -> Result<f64, StoreError> {
        let window = f64::from(slots) / rate;
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(
                "insert into api_rate as r (name, next_at)
                 values ($1, clock_timestamp() + make_interval(secs => $2))
                 on conflict (name) do update
                    set next_at = greatest(r.next_at, clock_timestamp())
                                  + make_interval(secs => $2)
                 returning extract(epoch from
                    (next_at - make_interval(secs => $2) - clock_timestamp()))::float8",
            )
            .await?;
        let row = client.query_one(&statement, &[&name, &window]).await?;
        Ok(row.get(0))
    }

    /// Moves the shared limiter `name` at least `seconds` ahead, so every process sharing it
    /// waits as the API asked one of them to (`Retry-After`).
    pub async fn hold_rate(&self, name: &str, seconds: f64) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "insert into api_rate as r (name, next_at)
                 values ($1, clock_timestamp() + make_interval(secs => $2))
                 on conflict (name) do update set next_at = greatest(r.next_at, excluded.next_at)",
                &[&name, &seconds],
            )
            .await?;
        Ok(())
    }
}
