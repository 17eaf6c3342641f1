//! `pokeq status --wait`: block until a run is over, so that a script or a CI job can run
//! `producer && pokeq status --wait` and act on the exit status.
//!
//! Over means that no item is `pending` or `queued` in Postgres and the jobs queue holds no
//! ready job (counted exactly, over AMQP). An item stays `queued` wherever its job is (ready,
//! held by a consumer, waiting in a retry queue), so Postgres alone says whether the items are
//! finished; the jobs queue adds the jobs whose item is not recorded as unfinished (a replay, a
//! second copy). Jobs a consumer holds unacknowledged cannot be counted over AMQP, and the
//! management API's figure lags by seconds, so they are not waited for.
//!
//! Exit status: 0 when every item is done, 1 when some failed (counts by kind), 2 when
//! `--timeout` passed first. A source that fails on the first look ends the wait at once (exit
//! 1: a wrong URL or prefix is not worth waiting for), and so does a setting a source refuses
//! at any look (exit 2); later failures (a database restart) are shown and waited through,
//! within the timeout.

use std::time::Duration;

use pokeq_shared::config::{Common, format_duration};
use pokeq_shared::store::Store;
use pokeq_shared::topology::{RetryDelays, Topology};
use serde::Serialize;
use tokio::time::Instant;

use crate::Console;
use crate::probe::{ProbeError, QueueProbe};
use crate::status::{Items, Missing, Throughput, items_and_throughput, with_store};
use crate::table::age;

/// Time between two looks at Postgres and the jobs queue.
const POLL: Duration = Duration::from_secs(1);
/// Time between progress lines when the output is not a terminal (a terminal gets one line,
/// redrawn at every look).
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct WaitConfig {
    /// Give up after this long; `None` waits as long as it takes.
    pub timeout: Option<Duration>,
}

/// `--timeout` passed with work left: exit status 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct WaitTimeout(pub String);

/// What one look found.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub items: Items,
    pub throughput: Throughput,
    /// Jobs ready in the jobs queue, counted now.
    pub jobs_ready: u32,
}

impl Snapshot {
    fn is_over(&self) -> bool {
        self.items.pending == 0 && self.items.queued == 0 && self.jobs_ready == 0
    }
}

/// Where the wait looks: the real services, or a script in the tests.
pub(crate) trait Look {
    async fn look(&mut self) -> Result<Snapshot, Missing>;
}

/// Postgres and the broker, each connected on first use and reconnected after a failure.
struct Services<'a> {
    common: &'a Common,
    jobs: String,
    store: Option<Store>,
    probe: Option<QueueProbe>,
}

impl Look for Services<'_> {
    async fn look(&mut self) -> Result<Snapshot, Missing> {
        let (items, throughput) = with_store(self.common, &mut self.store, async |client| {
            items_and_throughput(client).await
        })
        .await
        .map_err(|missing| Missing {
            reason: format!("database unavailable: {}", missing.reason),
            ..missing
        })?;
        let jobs_ready = self.jobs_ready().await?;
        Ok(Snapshot {
            items,
            throughput,
            jobs_ready,
        })
    }
}

impl Services<'_> {
    async fn jobs_ready(&mut self) -> Result<u32, Missing> {
        let unavailable = |error: ProbeError| {
            let missing = error.missing();
            Missing {
                reason: format!("RabbitMQ unavailable: {}", missing.reason),
                ..missing
            }
        };
        if self.probe.as_ref().is_some_and(|p| !p.connected()) {
            self.probe = None;
        }
        if self.probe.is_none() {
            let opened = QueueProbe::open(self.common).await.map_err(unavailable)?;
            self.probe = Some(opened);
        }
        let Some(probe) = self.probe.as_mut() else {
            return Err(Missing::outage("RabbitMQ unavailable".to_owned()));
        };
        match probe.counts(&self.jobs).await {
            Ok(Some(counts)) => Ok(counts.ready),
            Ok(None) => Err(Missing::outage(format!(
                "the jobs queue {} is not declared (is POKEQ_PREFIX right?)",
                self.jobs
            ))),
            Err(error) => {
                if let Some(failed) = self.probe.take() {
                    failed.close().await;
                }
                Err(unavailable(error))
            }
        }
    }

    async fn close(&mut self) {
        if let Some(probe) = self.probe.take() {
            probe.close().await;
        }
    }
}

pub async fn run(
    common: &Common,
    config: &WaitConfig,
    json: bool,
    console: &mut Console<'_>,
) -> anyhow::Result<()> {
    let topology = Topology::new(&common.prefix, common.queue_type, RetryDelays::default());
    let mut services = Services {
        common,
        jobs: topology.jobs(),
        store: None,
        probe: None,
    };
    let result = wait(
        &mut services,
        config.timeout,
        json,
        &topology.jobs(),
        console,
    )
    .await;
    services.close().await;
    result
}

/// The `--json` document of a finished wait.
#[derive(Debug, Serialize)]
struct Ending<'a> {
    /// `done`, `failed` or `timeout`.
    outcome: &'static str,
    waited_seconds: f64,
    items: Option<&'a Items>,
    jobs_ready: Option<u32>,
    throughput: Option<&'a Throughput>,
}

/// Looks every [`POLL`] until the run is over or `timeout` passes, printing progress unless
/// `json`.
pub(crate) async fn wait(
    source: &mut impl Look,
    timeout: Option<Duration>,
    json: bool,
    jobs: &str,
    console: &mut Console<'_>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let deadline = timeout.map(|t| started + t);
    let mut last: Option<Snapshot> = None;
    let mut shown_at: Option<Instant> = None;
    // A progress line on a terminal that has not been ended with a newline yet.
    let mut line_open = false;
    loop {
        let looked = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, source.look()).await.ok(),
            None => Some(source.look().await),
        };
        let trouble = match looked {
            Some(Ok(snapshot)) if snapshot.is_over() => {
                if line_open {
                    writeln!(console.out)?;
                }
                return finish(&snapshot, started.elapsed(), json, console);
            }
            Some(Ok(snapshot)) => {
                last = Some(snapshot);
                None
            }
            Some(Err(Missing {
                misconfigured: Some(refused),
                ..
            })) => {
                if line_open {
                    writeln!(console.out)?;
                }
                return Err(anyhow::Error::new(refused).context("cannot wait"));
            }
            Some(Err(missing)) if last.is_none() => {
                if line_open {
                    writeln!(console.out)?;
                }
                anyhow::bail!("cannot wait: {}", missing.reason);
            }
            Some(Err(missing)) => Some(missing.reason),
            // The deadline passed during the look.
            None => None,
        };
        let now = Instant::now();
        if deadline.is_some_and(|deadline| now >= deadline) {
            if line_open {
                writeln!(console.out)?;
            }
            return timed_out(last.as_ref(), started.elapsed(), json, jobs, console);
        }
        if !json {
            let line = progress(last.as_ref(), trouble.as_deref(), now - started, jobs);
            if console.terminal {
                write!(console.out, "\r\x1b[2K{line}")?;
                line_open = true;
            } else if shown_at.is_none_or(|at| now - at >= PROGRESS_EVERY) {
                writeln!(console.out, "{line}")?;
                shown_at = Some(now);
            }
            console.out.flush()?;
        }
        let next = now + POLL;
        tokio::time::sleep_until(deadline.map_or(next, |deadline| deadline.min(next))).await;
    }
}

/// One progress line: where the items stand, what the jobs queue holds, and the pace.
fn progress(
    last: Option<&Snapshot>,
    trouble: Option<&str>,
    elapsed: Duration,
    jobs: &str,
) -> String {
    let mut line = format!("waiting {}: ", age(elapsed.as_secs()));
    if let Some(snapshot) = last {
        let items = &snapshot.items;
        line.push_str(&format!(
            "{} done, {} failed, {} pending, {} queued; {} ready in {jobs}",
            items.done, items.failed, items.pending, items.queued, snapshot.jobs_ready
        ));
        let pace = &snapshot.throughput;
        if pace.per_second > 0.0 {
            line.push_str(&format!("; {:.1}/s", pace.per_second));
            if let Some(eta) = pace.eta_seconds {
                line.push_str(&format!(", ETA {}", age(eta)));
            }
        } else {
            line.push_str("; nothing finished in the last minute");
        }
    }
    if let Some(trouble) = trouble {
        if last.is_some() {
            line.push_str(" | ");
        }
        line.push_str(&format!(
            "{trouble}; trying again every {}",
            format_duration(POLL)
        ));
    }
    line
}

fn kinds(items: &Items) -> String {
    items
        .failed_by_kind
        .iter()
        .map(|(kind, n)| format!("{kind} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn finish(
    snapshot: &Snapshot,
    elapsed: Duration,
    json: bool,
    console: &mut Console<'_>,
) -> anyhow::Result<()> {
    let items = &snapshot.items;
    let failed = items.failed > 0;
    if json {
        let ending = Ending {
            outcome: if failed { "failed" } else { "done" },
            waited_seconds: elapsed.as_secs_f64(),
            items: Some(items),
            jobs_ready: Some(snapshot.jobs_ready),
            throughput: Some(&snapshot.throughput),
        };
        serde_json::to_writer_pretty(&mut *console.out, &ending)?;
        writeln!(console.out)?;
    } else if failed {
        writeln!(
            console.out,
            "finished with failures after {}: {} done, {} failed ({})",
            age(elapsed.as_secs()),
            items.done,
            items.failed,
            kinds(items)
        )?;
    } else {
        writeln!(
            console.out,
            "done after {}: {} done, none failed",
            age(elapsed.as_secs()),
            items.done
        )?;
    }
    if failed {
        anyhow::bail!(
            "{} item{} failed: {}",
            items.failed,
            if items.failed == 1 { "" } else { "s" },
            kinds(items)
        );
    }
    Ok(())
}

fn timed_out(
    last: Option<&Snapshot>,
    elapsed: Duration,
    json: bool,
    jobs: &str,
    console: &mut Console<'_>,
) -> anyhow::Result<()> {
    let waited = age(elapsed.as_secs());
    let message = match last {
        Some(snapshot) => {
            let items = &snapshot.items;
            format!(
                "timed out after {waited}: {} pending, {} queued, {} ready in {jobs} \
                 ({} done, {} failed)",
                items.pending, items.queued, snapshot.jobs_ready, items.done, items.failed
            )
        }
        None => format!("timed out after {waited} before Postgres and RabbitMQ answered"),
    };
    if json {
        let ending = Ending {
            outcome: "timeout",
            waited_seconds: elapsed.as_secs_f64(),
            items: last.map(|s| &s.items),
            jobs_ready: last.map(|s| s.jobs_ready),
            throughput: last.map(|s| &s.throughput),
        };
        serde_json::to_writer_pretty(&mut *console.out, &ending)?;
        writeln!(console.out)?;
    } else {
        writeln!(console.out, "{message}")?;
    }
    Err(WaitTimeout(message).into())
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, VecDeque};

    use super::*;

    /// Answers from a script, the last one repeated; each look takes `delay`.
    struct Script {
        answers: VecDeque<Result<Snapshot, Missing>>,
        delay: Duration,
        looks: usize,
    }

    impl Script {
        fn new(answers: Vec<Result<Snapshot, Missing>>) -> Self {
            Self {
                answers: answers.into(),
                delay: Duration::ZERO,
                looks: 0,
            }
        }
    }

    impl Look for Script {
        async fn look(&mut self) -> Result<Snapshot, Missing> {
            self.looks += 1;
            tokio::time::sleep(self.delay).await;
            let empty = || Err(Missing::outage("empty".into()));
            if self.answers.len() > 1 {
                self.answers.pop_front().unwrap_or_else(empty)
            } else {
                self.answers.front().cloned().unwrap_or_else(empty)
            }
        }
    }

    fn at(pending: i64, queued: i64, done: i64, failed: &[(&str, i64)], ready: u32) -> Snapshot {
        let failed_by_kind: BTreeMap<String, i64> =
            failed.iter().map(|(k, n)| ((*k).to_owned(), *n)).collect();
        let failed = failed_by_kind.values().sum();
        Snapshot {
            items: Items {
                pending,
                queued,
                done,
                failed,
                total: pending + queued + done + failed,
                failed_by_kind,
                resources: Vec::new(),
            },
            throughput: Throughput::new(done, failed, Some(30.0), Some(0.0), pending + queued),
            jobs_ready: ready,
        }
    }

    async fn run(
        script: &mut Script,
        timeout: Option<Duration>,
        terminal: bool,
    ) -> (anyhow::Result<()>, String, Duration) {
        let mut out = Vec::new();
        let mut console = Console {
            out: &mut out,
            input: None,
            terminal,
        };
        let started = Instant::now();
        let result = wait(script, timeout, false, "p.jobs", &mut console).await;
        let elapsed = started.elapsed();
        (result, String::from_utf8(out).expect("UTF-8"), elapsed)
    }

    #[tokio::test(start_paused = true)]
    async fn ends_once_no_item_is_left_and_no_job_is_ready() {
        let mut script = Script::new(vec![
            Ok(at(0, 2, 0, &[], 2)),
            // Every item finished, but a job is still ready (a replayed copy): not over yet.
            Ok(at(0, 0, 2, &[], 1)),
            Ok(at(0, 0, 2, &[], 0)),
        ]);
        let (result, out, elapsed) = run(&mut script, None, false).await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(elapsed, 2 * POLL);
        assert_eq!(script.looks, 3);
        assert_eq!(
            out,
            "waiting 0s: 0 done, 0 failed, 0 pending, 2 queued; 2 ready in p.jobs; \
             nothing finished in the last minute\n\
             done after 2s: 2 done, none failed\n"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failed_items_end_the_wait_with_exit_1_and_their_counts_by_kind() {
        let mut script = Script::new(vec![
            Ok(at(0, 3, 0, &[], 3)),
            Ok(at(0, 0, 1, &[("not_found", 2)], 0)),
        ]);
        let (result, out, _) = run(&mut script, Some(Duration::from_secs(60)), false).await;
        let error = result.expect_err("failed items");
        assert_eq!(crate::exit_code(&error), 1);
        assert_eq!(error.to_string(), "2 items failed: not_found 2");
        assert!(
            out.ends_with("finished with failures after 1s: 1 done, 2 failed (not_found 2)\n"),
            "{out}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn times_out_with_exit_2_printing_progress_every_few_seconds() {
        let mut script = Script::new(vec![Ok(at(1, 3, 5, &[], 3))]);
        let (result, out, elapsed) = run(&mut script, Some(Duration::from_secs(12)), false).await;
        let error = result.expect_err("timeout");
        assert_eq!(crate::exit_code(&error), 2);
        assert_eq!(elapsed, Duration::from_secs(12));
        let lines: Vec<&str> = out.lines().collect();
        let progress: Vec<&str> = lines
            .iter()
            .filter(|l| l.starts_with("waiting"))
            .copied()
            .collect();
        assert_eq!(progress.len(), 3, "at 0, 5 and 10 s: {out}");
        assert!(progress[2].starts_with("waiting 10s: 5 done"), "{out}");
        assert!(progress[2].ends_with("; 0.2/s, ETA 24s"), "{out}");
        assert_eq!(
            lines.last().copied(),
            Some("timed out after 12s: 1 pending, 3 queued, 3 ready in p.jobs (5 done, 0 failed)")
        );
        assert_eq!(error.to_string(), lines[lines.len() - 1]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_look_that_hangs_ends_at_the_deadline() {
        let mut script = Script::new(vec![Ok(at(0, 1, 0, &[], 1))]);
        script.delay = Duration::from_secs(3600);
        let (result, out, elapsed) = run(&mut script, Some(Duration::from_secs(3)), false).await;
        assert_eq!(crate::exit_code(&result.expect_err("timeout")), 2);
        assert_eq!(elapsed, Duration::from_secs(3));
        assert_eq!(
            out,
            "timed out after 3s before Postgres and RabbitMQ answered\n"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_source_failing_at_first_ends_the_wait_and_later_is_waited_through() {
        let mut wrong = Script::new(vec![Err(Missing::outage(
            "the jobs queue p.jobs is not declared".into(),
        ))]);
        let (result, _, elapsed) = run(&mut wrong, None, false).await;
        let error = result.expect_err("fails at once");
        assert_eq!(crate::exit_code(&error), 1);
        assert!(error.to_string().contains("not declared"), "{error}");
        assert_eq!(elapsed, Duration::ZERO);

        let mut restart = Script::new(vec![
            Ok(at(0, 1, 0, &[], 1)),
            Err(Missing::outage(
                "database unavailable: connection refused".into(),
            )),
            Ok(at(0, 0, 1, &[], 0)),
        ]);
        let (result, out, _) = run(&mut restart, None, true).await;
        assert!(result.is_ok(), "{result:?}");
        // On a terminal, every look redraws the line.
        assert!(
            out.contains(
                "\r\x1b[2Kwaiting 1s: 0 done, 0 failed, 0 pending, 1 queued; 1 ready in p.jobs; \
                 nothing finished in the last minute | database unavailable: connection \
                 refused; trying again every 1s"
            ),
            "{out:?}"
        );
        assert!(
            out.ends_with("\ndone after 2s: 1 done, none failed\n"),
            "{out:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_setting_ends_the_wait_with_exit_2_whenever_it_comes() {
        let refused = Missing {
            reason: "database unavailable: password refused".into(),
            misconfigured: Some(pokeq_shared::config::Misconfigured::new(
                "DATABASE_URL",
                "postgres://app:hunter2@db/pokeq",
                "Postgres refused the login",
            )),
        };
        let mut script = Script::new(vec![Ok(at(0, 1, 0, &[], 1)), Err(refused)]);
        let (result, _, elapsed) = run(&mut script, None, false).await;
        let error = result.expect_err("refused");
        assert_eq!(crate::exit_code(&error), 2);
        assert_eq!(elapsed, POLL);
        let shown = format!("{error:#}");
        assert!(
            shown.contains("DATABASE_URL=postgres://app:****@db/pokeq"),
            "{shown}"
        );
    }
}
