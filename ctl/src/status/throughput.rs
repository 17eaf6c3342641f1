//! The pace of the run: items finished over the last minute, and when the rest will be done.

use std::time::Duration;

use serde::Serialize;

use crate::table::age;

/// The window throughput is measured over.
pub(super) const THROUGHPUT_WINDOW: Duration = Duration::from_secs(60);

/// Items that reached `done` or `failed` over the last minute (by `ingest_items.updated_at`,
/// which the consumer sets in the statement that finishes the item), and the time the items
/// still `pending` or `queued` would take at that pace. Failed items count too: they leave the
/// work left just as done ones do.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Throughput {
    /// Seconds the rate is measured over: the last minute, or less if the first item of that
    /// minute finished later (a run that started 10 s ago is measured over those 10 s).
    pub window_seconds: f64,
    pub done: i64,
    pub failed: i64,
    /// Items finished per second over the window.
    pub per_second: f64,
    /// Seconds since the latest item finished (`None`: none in the last minute).
    pub last_finished_seconds_ago: Option<f64>,
    /// Items `pending` or `queued`.
    pub remaining: i64,
    /// `remaining / per_second`, rounded up; `None` when nothing remains or nothing finished.
    pub eta_seconds: Option<u64>,
}

impl Throughput {
    /// From the items finished within the window (`done`, `failed`), the age of the oldest and
    /// the newest of them (`None` when there are none), and the items left.
    pub fn new(
        done: i64,
        failed: i64,
        oldest: Option<f64>,
        newest: Option<f64>,
        remaining: i64,
    ) -> Self {
        let finished = done + failed;
        let full = THROUGHPUT_WINDOW.as_secs_f64();
        // At least a second: a handful of items finished in the same instant is no measure of
        // an infinite rate.
        let window_seconds = oldest.map_or(full, |age| age.clamp(1.0, full));
        let per_second = if finished > 0 {
            finished as f64 / window_seconds
        } else {
            0.0
        };
        // remaining / per_second, without the rounding error of the division.
        let eta_seconds = (remaining > 0 && finished > 0)
            .then(|| (remaining as f64 * window_seconds / finished as f64).ceil() as u64);
        Self {
            window_seconds,
            done,
            failed,
            per_second,
            last_finished_seconds_ago: newest,
            remaining,
            eta_seconds,
        }
    }

    /// One line for people: the rate and, while work remains, the ETA.
    pub fn describe(&self) -> String {
        if self.done + self.failed == 0 {
            return if self.remaining > 0 {
                format!(
                    "nothing finished in the last minute; {} remaining, no ETA",
                    self.remaining
                )
            } else {
                "nothing finished in the last minute".to_owned()
            };
        }
        let mut text = format!(
            "{}/s over the last {} ({} done, {} failed)",
            rate(self.per_second),
            age(self.window_seconds.round() as u64),
            self.done,
            self.failed
        );
        if let Some(eta) = self.eta_seconds {
            text.push_str(&format!(
                "; ETA {} for {} remaining",
                age(eta),
                self.remaining
            ));
        }
        if let Some(ago) = self.last_finished_seconds_ago.filter(|ago| *ago >= 10.0) {
            text.push_str(&format!(
                "; latest finished {} ago",
                age(ago.round() as u64)
            ));
        }
        text
    }
}

/// A rate for people: one decimal below 10/s, whole numbers above.
fn rate(per_second: f64) -> String {
    if per_second < 10.0 {
        format!("{per_second:.1}")
    } else {
        format!("{per_second:.0}")
    }
}
