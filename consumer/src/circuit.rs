//! What the consumer tells the world about its API circuit: `/readyz` says `degraded` while it
//! is open, and Postgres holds a row for it (`api_circuit`), so `pokeq status` can say which
//! consumers wait for the API and since when.

use std::sync::Arc;
use std::time::Duration;

use pokeq_shared::circuit::{Circuit, CircuitState};
use pokeq_shared::metrics::Health;
use pokeq_shared::shutdown::CancellationToken;
use pokeq_shared::store::Store;

/// While open, the row is refreshed this often; `pokeq status` ignores rows older than three
/// times this (their process is gone).
pub const REFRESH: Duration = Duration::from_secs(10);

/// Follows `circuit` until `shutdown`, in a task of its own.
pub fn report(
    circuit: &Circuit,
    store: Store,
    health: Arc<Health>,
    process: String,
    shutdown: CancellationToken,
) {
    let mut changes = circuit.watch();
    tokio::spawn(async move {
        loop {
            let state = changes.borrow_and_update().clone();
            health.set_api_down(state.is_open());
            record(&store, &process, &state).await;
            let wait = if state.is_open() {
                REFRESH
            } else {
                Duration::MAX
            };
            tokio::select! {
                () = shutdown.cancelled() => break,
                changed = changes.changed() => if changed.is_err() { break },
                () = sleep(wait) => {}
            }
        }
        // A consumer that stops is not waiting for the API any more.
        if circuit_was_open(&changes) {
            record(&store, &process, &CircuitState::Closed).await;
        }
    });
}

fn circuit_was_open(changes: &tokio::sync::watch::Receiver<CircuitState>) -> bool {
    changes.borrow().is_open()
}

async fn sleep(wait: Duration) {
    if wait == Duration::MAX {
        std::future::pending::<()>().await;
    } else {
        tokio::time::sleep(wait).await;
    }
}

/// Best effort: the database may be away too, and the next change or refresh tries again.
async fn record(store: &Store, process: &str, state: &CircuitState) {
    let open = match state {
        CircuitState::Open {
            since_unix_ms,
            error,
        } => Some((*since_unix_ms, error.as_str())),
        CircuitState::Closed => None,
    };
    let recording = store.record_circuit(process, open);
    match tokio::time::timeout(Duration::from_secs(5), recording).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(%error, "cannot record the API circuit"),
        Err(_) => tracing::debug!("recording the API circuit timed out"),
    }
}
