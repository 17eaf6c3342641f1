//! The contract's exit codes in one place: 0 done, 2 bad usage or configuration, 1 a runtime
//! failure that retries could not cure.

use std::future::Future;
use std::process::ExitCode;

use crate::config::{ConfigError, LogFormat};
use crate::shutdown::{self, CancellationToken};
use crate::telemetry;

/// Exit status for a setting that failed validation.
pub const CONFIG: u8 = 2;
/// Exit status for a runtime failure.
pub const FAILURE: u8 = 1;

/// The body of every binary's `main`: reports a bad setting with exit 2, otherwise sets up
/// tracing and a runtime, runs `run` with a signal-driven shutdown token, and maps its error to
/// exit 1 with the whole error chain in the log.
pub fn main<C, T, F, Fut>(
    binary: &str,
    config: Result<C, ConfigError>,
    log_format: impl FnOnce(&C) -> LogFormat,
    run: F,
) -> ExitCode
where
    C: Send + 'static,
    T: Send + 'static,
    F: FnOnce(C, CancellationToken) -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
{
    main_with_workers(binary, None, config, log_format, run)
}

/// [`main`] on a runtime of `workers` threads unless `TOKIO_WORKER_THREADS` says otherwise
/// (`None`: tokio's default, one per core).
pub fn main_with_workers<C, T, F, Fut>(
    binary: &str,
    workers: Option<usize>,
    config: Result<C, ConfigError>,
    log_format: impl FnOnce(&C) -> LogFormat,
    run: F,
) -> ExitCode
where
    C: Send + 'static,
    T: Send + 'static,
    F: FnOnce(C, CancellationToken) -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
{
    let config = match config {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{binary}: {error}");
            return ExitCode::from(CONFIG);
        }
    };
    telemetry::init(log_format(&config));
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    // tokio reads TOKIO_WORKER_THREADS only when no count is set here.
    if let Some(workers) = workers
        && std::env::var_os("TOKIO_WORKER_THREADS").is_none()
    {
        builder.worker_threads(workers);
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("{binary}: cannot start the async runtime: {error}");
            return ExitCode::from(FAILURE);
        }
    };
    // The work runs as a spawned task, on the runtime's worker threads with the connection
    // tasks it talks to, not on this thread: waking across threads on every message cost the
    // consumer a third of its CPU (measured by the benchmark).
    let result = runtime.block_on(async move {
        let task = tokio::spawn(async move { run(config, shutdown::on_signal()).await });
        task.await
            .unwrap_or_else(|error| Err(anyhow::anyhow!("the task failed: {error}")))
    });
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "{binary} failed");
            ExitCode::from(FAILURE)
        }
    }
}
