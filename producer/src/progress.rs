//! Progress of a run for the person watching it: a bar on a terminal, a log line every few
//! seconds otherwise (a pod's or a CI job's log).

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Counters the producer bumps and the reporter reads.
#[derive(Debug, Default)]
pub struct Progress {
    pub pages_done: AtomicU64,
    pub listed: AtomicU64,
    pub published: AtomicU64,
    pub skipped: AtomicU64,
    /// Of `skipped`, list entries the database refused.
    pub refused: AtomicU64,
}

/// Reports until `stop` is cancelled; the bar is cleared at the end so the summary line stays
/// the last line of output.
pub fn report(progress: Arc<Progress>, pages: u64, stop: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let started = Instant::now();
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(pages);
            let style = ProgressStyle::with_template(
                "{bar:30} pages {pos}/{len}  {msg}  {elapsed_precise} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let published = progress.published.load(Ordering::Relaxed);
                bar.set_position(progress.pages_done.load(Ordering::Relaxed));
                bar.set_message(format!(
                    "published {published} ({:.0}/s)  skipped {}",
                    rate(published, started),
                    progress.skipped.load(Ordering::Relaxed)
                ));
            }
            bar.finish_and_clear();
        } else {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            tick.tick().await;
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let published = progress.published.load(Ordering::Relaxed);
                tracing::info!(
                    pages_done = progress.pages_done.load(Ordering::Relaxed),
                    pages,
                    listed = progress.listed.load(Ordering::Relaxed),
                    published,
                    per_second = rate(published, started) as u64,
                    "progress"
                );
            }
        }
    })
}

fn rate(count: u64, since: Instant) -> f64 {
    count as f64 / since.elapsed().as_secs_f64().max(0.001)
}
