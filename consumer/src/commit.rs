//! Group commit: the rows of many deliveries stored in one transaction.
//!
//! Every handler that has a row to store hands it to the committer and waits for its answer.
//! The committer takes whatever has queued up since its last commit (up to a bound) and writes
//! it in one transaction, so under load one WAL flush serves many deliveries, and at low load
//! a lone row is committed at once, with no linger. Each delivery is still acknowledged only
//! after the commit that holds its row.

use tokio::sync::{mpsc, oneshot};

use pokeq_shared::store::{SaveRow, Store, StoreError};

type Reply = oneshot::Sender<Result<bool, String>>;

/// Handle to the committer task; cheap to share.
#[derive(Clone)]
pub struct Committer {
    requests: mpsc::Sender<(SaveRow, Reply)>,
}

impl Committer {
    /// Starts the task; it ends when every handle is dropped.
    pub fn spawn(store: Store, max_batch: usize) -> Self {
        let (requests, receiver) = mpsc::channel(max_batch.max(1) * 2);
        tokio::spawn(run(store, receiver, max_batch.max(1)));
        Self { requests }
    }

    /// Stores `row` (marking its item done) in the next group commit; true if it was written,
    /// false if the item was done already.
    pub async fn save(&self, row: SaveRow) -> Result<bool, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send((row, reply))
            .await
            .map_err(|_| StoreError::Batch("the committer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Batch("the committer dropped the row".into()))?
            .map_err(StoreError::Batch)
    }
}

async fn run(store: Store, mut receiver: mpsc::Receiver<(SaveRow, Reply)>, max_batch: usize) {
    let mut batch = Vec::with_capacity(max_batch);
    while let Some(first) = receiver.recv().await {
        batch.push(first);
        while batch.len() < max_batch {
            match receiver.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        let (rows, replies): (Vec<SaveRow>, Vec<Reply>) = batch.drain(..).unzip();
        match store.save_many(&rows).await {
            Ok(written) => {
                for (reply, written) in replies.into_iter().zip(written) {
                    let _ = reply.send(Ok(written));
                }
            }
            Err(error) => {
                let error = error.to_string();
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }
}
