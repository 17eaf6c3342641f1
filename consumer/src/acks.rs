//! Acknowledgements in runs.
//!
//! Every `basic.ack` costs the broker a command on the queue (for a quorum queue, an entry in
//! its Raft log). Deliveries on a channel carry consecutive tags, and one `basic.ack` with
//! `multiple` settles every outstanding tag up to its own. So the [`Acker`] collects the tags
//! whose jobs are finished and, whenever the run of finished tags from the oldest unsettled one
//! grows, acknowledges the whole run at once. A tag finished out of order waits at most
//! [`LINGER`] for the tags before it, then is acknowledged alone, so a slow job never holds the
//! others' prefetch slots. A delivery is still acknowledged only after its job's commit.

use std::collections::BTreeSet;
use std::time::Duration;

use lapin::Channel;
use lapin::options::BasicAckOptions;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Longest wait of a finished delivery for the ones delivered before it.
pub const LINGER: Duration = Duration::from_millis(10);

/// What became of a delivery, told to the [`Acker`].
#[derive(Debug, Clone, Copy)]
enum Settled {
    /// Finished: acknowledge it.
    Ack(u64),
    /// Already handed back (nacked) by the caller: only stop waiting for it.
    Gone(u64),
}

/// Handle to the task that acknowledges deliveries of one channel; cheap to clone.
#[derive(Clone)]
pub struct Acker {
    settled: mpsc::UnboundedSender<Settled>,
}

impl Acker {
    /// Starts the task for `channel`, whose first delivery has tag 1. It ends, after sending
    /// what it holds, when every handle is dropped.
    pub fn spawn(channel: Channel) -> (Self, JoinHandle<()>) {
        let (settled, received) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(channel, received));
        (Self { settled }, task)
    }

    /// Acknowledges the delivery `tag`, soon.
    pub fn ack(&self, tag: u64) {
        let _ = self.settled.send(Settled::Ack(tag));
    }

    /// The delivery `tag` was nacked by the caller: it is no longer waited for.
    pub fn forget(&self, tag: u64) {
        let _ = self.settled.send(Settled::Gone(tag));
    }
}

async fn run(channel: Channel, mut received: mpsc::UnboundedReceiver<Settled>) {
    let mut runs = Runs::default();
    let mut open = true;
    while open {
        let deadline = runs.oldest_waiting().map(|since| since + LINGER);
        tokio::select! {
            next = received.recv() => match next {
                Some(settled) => {
                    runs.note(settled, Instant::now());
                    while let Ok(settled) = received.try_recv() {
                        runs.note(settled, Instant::now());
                    }
                }
                None => open = false,
            },
            () = sleep_until(deadline) => {}
        }
        let now = Instant::now();
        let linger = if open { LINGER } else { Duration::ZERO };
        let (run_end, singles) = runs.take(now, linger);
        let mut acks = Vec::with_capacity(singles.len() + 1);
        if let Some(tag) = run_end {
            acks.push((tag, true));
        }
        acks.extend(singles.into_iter().map(|tag| (tag, false)));
        for (tag, multiple) in acks {
            if let Err(error) = channel.basic_ack(tag, BasicAckOptions { multiple }).await {
                // The channel is gone: the broker requeues everything unacknowledged, and the
                // session reconnects. Redelivered jobs are found done.
                tracing::debug!(%error, tag, "cannot acknowledge");
                return;
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The bookkeeping of [`run`], apart from the channel so that it can be tested alone.
#[derive(Debug)]
struct Runs {
    /// The oldest tag neither acknowledged nor forgotten.
    floor: u64,
    /// Finished tags above the floor, not acknowledged yet, with when they finished.
    waiting: BTreeSet<(u64, Instant)>,
    /// Tags above the floor already settled (acknowledged alone, or nacked).
    done: BTreeSet<u64>,
}

impl Default for Runs {
    fn default() -> Self {
        Self {
            floor: 1,
            waiting: BTreeSet::new(),
            done: BTreeSet::new(),
        }
    }
}

impl Runs {
    fn note(&mut self, settled: Settled, now: Instant) {
        match settled {
            Settled::Ack(tag) if tag >= self.floor => {
                self.waiting.insert((tag, now));
            }
            Settled::Gone(tag) if tag >= self.floor => {
                self.done.insert(tag);
            }
            _ => {}
        }
    }

    fn oldest_waiting(&self) -> Option<Instant> {
        self.waiting.iter().map(|(_, since)| *since).min()
    }

    /// What to acknowledge now: the end of the run from the floor (one ack with `multiple`),
    /// if it holds a finished tag; and, alone, the finished tags that waited `linger` or more.
    fn take(&mut self, now: Instant, linger: Duration) -> (Option<u64>, Vec<u64>) {
        let mut run_end = None;
        loop {
            if let Some(&(tag, since)) = self.waiting.first()
                && tag == self.floor
            {
                self.waiting.remove(&(tag, since));
                run_end = Some(tag);
            } else if !self.done.remove(&self.floor) {
                break;
            }
            self.floor += 1;
        }
        let overdue: Vec<(u64, Instant)> = self
            .waiting
            .iter()
            .filter(|(_, since)| now.duration_since(*since) >= linger)
            .copied()
            .collect();
        let mut singles = Vec::with_capacity(overdue.len());
        for entry in overdue {
            self.waiting.remove(&entry);
            self.done.insert(entry.0);
            singles.push(entry.0);
        }
        (run_end, singles)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_finished_tags_are_acknowledged_as_one_run() {
        let t0 = Instant::now();
        let mut runs = Runs::default();
        for tag in [3, 1, 2, 5] {
            runs.note(Settled::Ack(tag), t0);
        }
        assert_eq!(runs.take(t0, LINGER), (Some(3), vec![]), "5 waits for 4");
        runs.note(Settled::Gone(4), t0);
        assert_eq!(runs.take(t0, LINGER), (Some(5), vec![]), "4 was nacked");
        assert_eq!(runs.floor, 6);
    }

    #[test]
    fn a_tag_finished_out_of_order_is_acknowledged_alone_after_the_linger() {
        let t0 = Instant::now();
        let mut runs = Runs::default();
        runs.note(Settled::Ack(2), t0);
        runs.note(Settled::Ack(3), t0);
        assert_eq!(runs.take(t0, LINGER), (None, vec![]));
        let later = t0 + LINGER;
        assert_eq!(runs.take(later, LINGER), (None, vec![2, 3]));
        // When 1 finishes, the floor passes 2 and 3 without acknowledging them again.
        runs.note(Settled::Ack(1), later);
        assert_eq!(runs.take(later, LINGER), (Some(1), vec![]));
        assert_eq!(runs.floor, 4);
        assert!(runs.done.is_empty() && runs.waiting.is_empty());
    }
}
