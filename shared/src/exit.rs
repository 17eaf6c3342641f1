//! The contract's exit codes in one place: 0 done, 2 bad usage or configuration, 1 a runtime
//! failure that retries could not cure.

use std::future::Future;
use std::process::ExitCode;

use crate::broker::BrokerError;
use crate::config::{ConfigError, LogFormat, Misconfigured};
use crate::shutdown::{self, CancellationToken};
use crate::store::StoreError;
use crate::telemetry;

/// The error and its causes on one line, each cause once: many errors (a connection error that
/// quotes the driver's message, the driver's error that quotes the OS's) already carry their
/// source's text, and `{:#}` would print it again.
pub fn describe(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let part = cause.to_string();
        if part.is_empty() || text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

/// Exit status for a setting that failed validation, or that RabbitMQ or Postgres refused.
pub const CONFIG: u8 = 2;
/// Exit status for a runtime failure.
pub const FAILURE: u8 = 1;

/// The refused setting somewhere in `error`'s chain, however it was wrapped: retry loops ask
/// this to give up at once, and [`code`] to exit 2.
pub fn misconfiguration(error: &anyhow::Error) -> Option<&Misconfigured> {
    error.chain().find_map(|cause| {
        if let Some(refused) = cause.downcast_ref::<Misconfigured>() {
            return Some(refused);
        }
        match (
            cause.downcast_ref::<BrokerError>(),
            cause.downcast_ref::<StoreError>(),
        ) {
            (Some(BrokerError::Misconfigured(refused)), _)
            | (_, Some(StoreError::Misconfigured(refused))) => Some(refused),
            _ => None,
        }
    })
}

/// The exit status for an error a binary's `run` returned: [`CONFIG`] for a refused setting or
/// a bad one, else [`FAILURE`].
pub fn code(error: &anyhow::Error) -> u8 {
    if misconfiguration(error).is_some() || error.downcast_ref::<ConfigError>().is_some() {
        CONFIG
    } else {
        FAILURE
    }
}

/// The body of every binary's `main`: reports a bad setting with exit 2, otherwise sets up
/// tracing and a runtime, runs `run` with a signal-driven shutdown token, and maps its error to
/// exit 1 with the whole error chain in the log, or to exit 2 if a service refused a setting.
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
            let code = code(&error);
            if code == CONFIG {
                tracing::error!(error = describe(&error), "{binary}: configuration error");
            } else {
                tracing::error!(error = describe(&error), "{binary} failed");
            }
            ExitCode::from(code)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn each_cause_is_described_once() {
        let io = std::io::Error::other("connection refused");
        let error = anyhow::Error::new(io)
            .context("error connecting to server: connection refused")
            .context("cannot connect to Postgres at postgres://x");
        assert_eq!(
            super::describe(&error),
            "cannot connect to Postgres at postgres://x: error connecting to server: connection refused"
        );
    }

    use super::*;

    fn refused() -> Misconfigured {
        Misconfigured::new(
            "AMQP_URL",
            "amqp://u:pw@h/%2f",
            "RabbitMQ refused the login",
        )
    }

    #[test]
    fn a_refused_setting_exits_2_however_it_is_wrapped() {
        let broker = anyhow::Error::from(BrokerError::Misconfigured(refused()))
            .context("cannot declare the RabbitMQ topology");
        let store = anyhow::Error::from(StoreError::Misconfigured(refused())).context("opening");
        let bare = anyhow::Error::from(refused()).context("reconnecting");
        for error in [&broker, &store, &bare] {
            assert_eq!(code(error), CONFIG, "{error:#}");
            let shown = format!("{error:#}");
            assert!(shown.contains("AMQP_URL=amqp://u:****@h/%2f"), "{shown}");
        }
        assert_eq!(
            misconfiguration(&broker).map(|m| m.setting),
            Some("AMQP_URL")
        );
    }

    #[test]
    fn other_failures_exit_1() {
        let lost = BrokerError::Connect {
            url: "amqp://h".into(),
            reason: "connection refused".into(),
        };
        assert_eq!(
            code(&anyhow::Error::from(lost).context("reconnecting")),
            FAILURE
        );
        assert_eq!(code(&anyhow::anyhow!("RabbitMQ unreachable")), FAILURE);
        let bad = ConfigError::new("POKEQ_PREFIX", "a b", "no spaces");
        assert_eq!(code(&anyhow::Error::from(bad)), CONFIG);
    }
}
