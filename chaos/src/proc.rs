//! pokeq's real binaries as child processes: spawning with a clean environment, logs in files,
//! signals, exit statuses and `/metrics` scraping.

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::process::{Child, Command};

use crate::infra::tail;

/// Where `producer`, `consumer` and `pokeapi-stub` are.
pub struct Bins {
    dir: PathBuf,
}

pub const BINARIES: [&str; 3] = ["producer", "consumer", "pokeapi-stub"];

impl Bins {
    /// `dir`, or the directory of this executable (cargo puts every binary of a workspace
    /// build there).
    pub fn locate(dir: Option<PathBuf>) -> Result<Self> {
        let dir = match dir {
            Some(dir) => dir,
            None => std::env::current_exe()
                .context("cannot find this executable")?
                .parent()
                .context("this executable has no directory")?
                .to_path_buf(),
        };
        for name in BINARIES {
            if !dir.join(name).is_file() {
                bail!(
                    "{} not found: build every binary first (`cargo build --release --workspace`, \
                     the same profile as chaos) or pass --bin-dir",
                    dir.join(name).display()
                );
            }
        }
        Ok(Self { dir })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// Settings pokeq reads from the environment, removed from what children inherit so the
/// suite's flags and variables are the only ones in force.
fn inherited_setting(name: &str) -> bool {
    name.starts_with("POKEQ_")
        || name.starts_with("STUB_")
        || matches!(
            name,
            "AMQP_URL"
                | "DATABASE_URL"
                | "POKEAPI_URL"
                | "METRICS_ADDR"
                | "MANAGEMENT_URL"
                | "RUST_LOG"
                | "LOG_FORMAT"
        )
}

/// One child process.
pub struct Proc {
    pub name: String,
    child: Child,
    pid: u32,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    pub metrics_port: Option<u16>,
    /// `pokeq_api_requests_total` (all statuses) at the last successful scrape.
    pub api_requests: u64,
    /// Whether `api_requests` is final: scraped after the process could make no more requests.
    pub api_final: bool,
    pub started: Instant,
    pub status: Option<ExitStatus>,
    /// The suite sent it a signal, so its exit is expected.
    pub signalled: Option<(i32, Instant)>,
    pub exited_after: Option<Duration>,
    /// A consumer's `--shutdown-grace`.
    pub grace: Duration,
}

impl Proc {
    pub fn spawn(
        bins: &Bins,
        binary: &str,
        name: &str,
        args: &[String],
        env: &[(&str, String)],
        logs: &Path,
        metrics_port: Option<u16>,
    ) -> Result<Self> {
        let stdout = logs.join(format!("{name}.out"));
        let stderr = logs.join(format!("{name}.err"));
        let mut command = Command::new(bins.path(binary));
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&stdout)?)
            .stderr(fs::File::create(&stderr)?)
            // Its own process group: a Ctrl-C in the terminal reaches only the suite.
            .process_group(0)
            .kill_on_drop(true);
        for (key, _) in std::env::vars_os() {
            if inherited_setting(&key.to_string_lossy()) {
                command.env_remove(key);
            }
        }
        command
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info,tokio_postgres=warn");
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {binary}"))?;
        let pid = child.id().context("child without a pid")?;
        Ok(Self {
            name: name.to_owned(),
            child,
            pid,
            stdout,
            stderr,
            metrics_port,
            api_requests: 0,
            api_final: false,
            started: Instant::now(),
            status: None,
            signalled: None,
            exited_after: None,
            grace: Duration::ZERO,
        })
    }

    /// Sends `signal` (SIGTERM, SIGKILL, ...) unless the process is already gone.
    pub fn signal(&mut self, signal: i32) {
        if self.poll().is_some() {
            return;
        }
        self.signalled = Some((signal, Instant::now()));
        // SAFETY: kill has no memory preconditions; the pid is our unreaped child's.
        unsafe {
            libc::kill(self.pid as i32, signal);
        }
    }

    /// The exit status if the process has ended (reaping it).
    pub fn poll(&mut self) -> Option<ExitStatus> {
        if self.status.is_none()
            && let Ok(Some(status)) = self.child.try_wait()
        {
            self.record_exit(status);
        }
        self.status
    }

    fn record_exit(&mut self, status: ExitStatus) {
        self.status = Some(status);
        self.exited_after = self.signalled.map(|(_, at)| at.elapsed());
    }

    /// Waits up to `timeout` for the process to end.
    pub async fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.status.is_none()
            && let Ok(Ok(status)) = tokio::time::timeout(timeout, self.child.wait()).await
        {
            self.record_exit(status);
        }
        self.status
    }

    /// Updates `api_requests` from `/metrics`; false if the endpoint did not answer.
    pub async fn scrape(&mut self, http: &reqwest::Client) -> bool {
        let Some(port) = self.metrics_port else {
            return false;
        };
        let response = http
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await;
        let Ok(text) = (match response {
            Ok(response) if response.status().is_success() => response.text().await,
            _ => return false,
        }) else {
            return false;
        };
        self.api_requests = sum_metric(&text, "pokeq_api_requests_total");
        true
    }

    /// The ends of its stderr and stdout, for a failure report.
    pub fn tails(&self, lines: usize) -> String {
        let mut text = format!(
            "  --- {} ({}) stderr: {}\n",
            self.name,
            self.status.map_or_else(|| "running".into(), describe),
            self.stderr.display()
        );
        text.push_str(&tail(&self.stderr, lines));
        let out = tail(&self.stdout, 5);
        if !out.is_empty() {
            text.push_str(&format!("  --- {} stdout:\n{out}", self.name));
        }
        text
    }

    pub fn last_stdout_line(&self) -> Option<String> {
        let text = fs::read_to_string(&self.stdout).ok()?;
        text.lines().last().map(str::to_owned)
    }
}

/// `exit 0`, `exit 1`, `killed by signal 9`.
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => status.to_string(),
    }
}

/// The sum of every sample of a counter in Prometheus text format.
pub fn sum_metric(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_every_label_of_a_counter() {
        let text = "# TYPE pokeq_api_requests_total counter\n\
                    pokeq_api_requests_total{status=\"200\"} 1500\n\
                    pokeq_api_requests_total{status=\"503\"} 12\n\
                    pokeq_api_requests_total_other 99\n\
                    pokeq_jobs_total{outcome=\"done\"} 3\n";
        assert_eq!(sum_metric(text, "pokeq_api_requests_total"), 1512);
        assert_eq!(sum_metric(text, "pokeq_jobs_total"), 3);
        assert_eq!(sum_metric(text, "absent"), 0);
    }
}
