//! Which room-event stream positions readers may see. Writers of different rooms commit
//! concurrently, so position N+1 can commit before N; a sync that advanced past N then would skip
//! it for good. Readers therefore stop below the lowest position still being written (DESIGN.md
//! section 4): every write registers before it takes a position and leaves after its commit.
//!
//! This tracks the writers of this process, which is all there is with SQLite. With PostgreSQL,
//! where several processes may write, readers take the bound from the database instead
//! (`Storage::stream_positions_and_visible_events`, over the reserved positions), except a sync
//! woken for this process's new messages: it goes by the push evaluator's position (which
//! follows the reservations), and its one read confirms that no lower position is reserved
//! (`RoomNews::snapshot`).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use crate::storage::EvaluationBatch;

#[derive(Default)]
struct Inner {
    /// Highest position committed and safe to show, ignoring pending writes.
    committed: i64,
    /// Highest position known to have been taken by a writer.
    taken: i64,
    next_ticket: u64,
    /// Pending writes: the position they took, or (before they know it) a floor their position is
    /// known to be above.
    pending: HashMap<u64, Pending>,
    /// The push evaluator's next batch, when a writer's commit holds it whole (see
    /// `StoredMessage::evaluation`); the latest one only: an earlier one would be stale.
    next_to_evaluate: Option<EvaluationBatch>,
}

#[derive(Clone, Copy)]
enum Pending {
    Above(i64),
    At(i64),
}

#[derive(Clone, Default)]
pub struct EventStream {
    inner: Arc<Mutex<Inner>>,
    /// Notified after every commit (the push evaluator waits on it).
    commits: Arc<tokio::sync::Notify>,
}

impl EventStream {
    pub fn new(max_committed: i64) -> Self {
        let inner = Inner { committed: max_committed, taken: max_committed, ..Inner::default() };
        Self { inner: Arc::new(Mutex::new(inner)), commits: Arc::default() }
    }

    /// Notified after each commit of this process.
    pub fn commits(&self) -> Arc<tokio::sync::Notify> {
        self.commits.clone()
    }

    /// The batch a commit handed to the push evaluator, if any since it last looked.
    pub fn take_next_to_evaluate(&self) -> Option<EvaluationBatch> {
        self.lock().next_to_evaluate.take()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The highest position below which every event is committed.
    pub fn visible(&self) -> i64 {
        let inner = self.lock();
        let bound = inner
            .pending
            .values()
            .map(|p| match *p {
                Pending::Above(floor) => floor,
                Pending::At(position) => position - 1,
            })
            .min();
        bound.map_or(inner.committed, |b| b.min(inner.committed))
    }

    /// The highest position committed, whether or not readers may pass it yet.
    pub fn committed(&self) -> i64 {
        self.lock().committed
    }

    /// Tells the push evaluator of commits made (see [`StreamWrite::committed_unannounced`]).
    pub fn announce_commit(&self) {
        self.commits.notify_waiters();
    }

    /// Registers a write before it takes its position.
    pub fn begin(&self) -> StreamWrite {
        let mut inner = self.lock();
        let ticket = inner.next_ticket;
        inner.next_ticket += 1;
        let floor = inner.taken;
        inner.pending.insert(ticket, Pending::Above(floor));
        StreamWrite { stream: self.clone(), ticket }
    }
}

/// A write in progress; dropping it (after commit or on failure) ends it.
pub struct StreamWrite {
    stream: EventStream,
    ticket: u64,
}

impl StreamWrite {
    pub fn took(&self, position: i64) {
        let mut inner = self.stream.lock();
        inner.taken = inner.taken.max(position);
        inner.pending.insert(self.ticket, Pending::At(position));
    }

    pub fn committed(self, position: i64) {
        let stream = self.stream.clone();
        self.committed_unannounced(position, None);
        stream.announce_commit();
    }

    /// Committed, with the push evaluator's next batch when the commit holds it; the evaluator
    /// hears of it from [`EventStream::announce_commit`]. Readers see it at once: a sync woken by
    /// it may take its bound from here.
    pub fn committed_unannounced(self, position: i64, next_to_evaluate: Option<EvaluationBatch>) {
        let mut inner = self.stream.lock();
        inner.committed = inner.committed.max(position);
        inner.pending.remove(&self.ticket);
        if next_to_evaluate.is_some() {
            inner.next_to_evaluate = next_to_evaluate;
        }
    }
}

impl Drop for StreamWrite {
    fn drop(&mut self) {
        self.stream.lock().pending.remove(&self.ticket);
    }
}

#[cfg(test)]
mod tests {
    use super::EventStream;

    #[test]
    fn readers_stop_below_pending_writes() {
        let stream = EventStream::new(10);
        let a = stream.begin();
        let b = stream.begin();
        assert_eq!(stream.visible(), 10);
        a.took(11);
        b.took(12);
        b.committed(12);
        // 12 is committed but 11 is not: readers must not pass 10.
        assert_eq!(stream.visible(), 10);
        a.committed(11);
        assert_eq!(stream.visible(), 12);
        // A write that fails leaves no trace.
        let c = stream.begin();
        c.took(13);
        drop(c);
        assert_eq!(stream.visible(), 12);
    }
}
