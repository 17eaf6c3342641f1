//! Batching of the consumer's database work across deliveries.
//!
//! Every handler hands its row to the [`Committer`] (or its id to the [`StateReader`]) and
//! waits for its answer. Each batcher takes whatever has queued up since its last round trip
//! (up to a bound) and serves it with one statement: under load one WAL flush serves many
//! deliveries. A batcher whose last batch held more than one request is busy and lingers
//! [`LINGER`] to gather more; at low load a lone request goes at once. Each delivery is still
//! acknowledged only after the commit that holds its row.
//!
//! A group commit is one statement, so one row the database refuses (a permanent error, see
//! [`ErrorClass`]) fails all of them; the rows of such a batch are then committed one by one,
//! and only the refused one gets the error.

use std::future::Future;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use pokeq_shared::store::{ErrorClass, ItemState, SaveRow, Store, StoreError};

/// Handle to the task that stores rows in group commits; cheap to share.
#[derive(Clone)]
pub struct Committer {
    requests: mpsc::Sender<(SaveRow, Reply<bool>)>,
}

impl Committer {
    /// Starts the task; it ends when every handle is dropped.
    pub fn spawn(store: Store, max_batch: usize) -> Self {
        let requests = spawn_batcher(max_batch, move |rows: Vec<SaveRow>| {
            let store = store.clone();
            async move { save_rows(&store, &rows).await }
        });
        Self { requests }
    }

    /// Stores `row` (marking its item done) in the next group commit; true if it was written,
    /// false if the item was done already.
    pub async fn save(&self, row: SaveRow) -> Result<bool, StoreError> {
        ask(&self.requests, row).await
    }
}

/// Stores `rows` in one group commit or, if the database refuses the batch's data, one by one:
/// whether each row was written, or the error of the rows at fault. `Err` for the whole batch
/// when the database is unavailable.
async fn save_rows(
    store: &Store,
    rows: &[SaveRow],
) -> Result<Vec<Result<bool, StoreError>>, StoreError> {
    match store.save_many(rows).await {
        Ok(written) => Ok(written.into_iter().map(Ok).collect()),
        Err(error) if error.is_permanent() && rows.len() > 1 => {
            tracing::warn!(
                rows = rows.len(),
                %error,
                "the database refused a group commit; committing its rows one by one"
            );
            let mut answers = Vec::with_capacity(rows.len());
            for row in rows {
                let answer = store.save_many(std::slice::from_ref(row)).await;
                answers.push(answer.map(|written| written.first().copied().unwrap_or(false)));
            }
            Ok(answers)
        }
        Err(error) => Err(error),
    }
}

/// Handle to the task that reads item states in batches; cheap to share.
#[derive(Clone)]
pub struct StateReader {
    requests: mpsc::Sender<((String, i32), Reply<ItemState>)>,
}

impl StateReader {
    pub fn spawn(store: Store, max_batch: usize) -> Self {
        let requests = spawn_batcher(max_batch, move |keys: Vec<(String, i32)>| {
            let store = store.clone();
            async move {
                // One statement per resource in the batch: a crawl's batches hold few.
                let mut resources: Vec<&str> = keys.iter().map(|(r, _)| r.as_str()).collect();
                resources.sort_unstable();
                resources.dedup();
                let mut states = std::collections::HashMap::new();
                for resource in resources {
                    let ids: Vec<i32> = keys
                        .iter()
                        .filter(|(r, _)| r == resource)
                        .map(|(_, id)| *id)
                        .collect();
                    for (id, state) in store.item_states(resource, &ids).await? {
                        states.insert((resource.to_owned(), id), state);
                    }
                }
                Ok(keys
                    .iter()
                    .map(|key| Ok(states.remove(key).unwrap_or_default()))
                    .collect())
            }
        });
        Self { requests }
    }

    /// The item's state, read together with whatever other ids are waiting.
    pub async fn state(&self, resource: &str, id: i32) -> Result<ItemState, StoreError> {
        ask(&self.requests, (resource.to_owned(), id)).await
    }
}

/// How long a busy batcher waits for more requests before a round trip. Measured with the
/// benchmark (20,000 items): none -> 2 ms cut Postgres's transactions per item from 0.31 to
/// 0.25; 2 -> 5 ms cut machine CPU per item from 0.53 to 0.50 with 2 consumers, and from 0.55
/// to 0.54 with 4. A job takes tens of milliseconds anyway.
const LINGER: Duration = Duration::from_millis(5);

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

async fn ask<R, T>(requests: &mpsc::Sender<(R, Reply<T>)>, request: R) -> Result<T, StoreError> {
    let (reply, answer) = oneshot::channel();
    requests
        .send((request, reply))
        .await
        .map_err(|_| stopped("the batcher has stopped"))?;
    answer
        .await
        .map_err(|_| stopped("the batcher dropped the request"))?
}

/// A batcher gone is a bug, not an outage nor the item's fault.
fn stopped(message: &str) -> StoreError {
    StoreError::Batch {
        message: message.to_owned(),
        class: ErrorClass::Operator,
    }
}

/// Runs batches of requests through `serve`, which answers each request in order (or fails
/// the whole batch), until every sender is dropped.
fn spawn_batcher<R, T, F, Fut>(max_batch: usize, serve: F) -> mpsc::Sender<(R, Reply<T>)>
where
    R: Send + 'static,
    T: Send + 'static,
    F: Fn(Vec<R>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Vec<Result<T, StoreError>>, StoreError>> + Send,
{
    let max_batch = max_batch.max(1);
    let (sender, mut receiver) = mpsc::channel::<(R, Reply<T>)>(max_batch * 2);
    tokio::spawn(async move {
        let mut batch = Vec::with_capacity(max_batch);
        let mut busy = false;
        while let Some(first) = receiver.recv().await {
            batch.push(first);
            if busy {
                tokio::time::sleep(LINGER).await;
            }
            while batch.len() < max_batch {
                match receiver.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            busy = batch.len() > 1;
            let (requests, replies): (Vec<R>, Vec<Reply<T>>) = batch.drain(..).unzip();
            match serve(requests).await {
                Ok(answers) => {
                    for (reply, answer) in replies.into_iter().zip(answers) {
                        let _ = reply.send(answer);
                    }
                }
                Err(error) => {
                    let (message, class) = (error.to_string(), error.class());
                    for reply in replies {
                        let _ = reply.send(Err(StoreError::Batch {
                            message: message.clone(),
                            class,
                        }));
                    }
                }
            }
        }
    });
    sender
}
