//! Statements that many requests make at the same moment, made as one. A message to a room of
//! 100 members wakes 100 syncs, and each would run the same two statements for its own user; 32
//! senders in 32 rooms would each store their message with a statement and a commit of their own.
//! On PostgreSQL every statement pays a round trip and the executor's start-up (locks, plan nodes)
//! whatever the few rows it touches, and every commit its WAL flush. A request that finds fewer
//! than [`IN_FLIGHT`] batches running starts one at once, so a lone request waits for nothing; the
//! others queue and go together in the next batch, which starts as soon as a running one ends.

use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use tokio::sync::oneshot;

use super::Storage;
use crate::error::{Error, Result};

/// Batches of one kind running at once: PostgreSQL's cores are few, and a batch started while the
/// others run would only take requests that the next one could carry.
const IN_FLIGHT: usize = 2;
/// Requests per batch at most: a batch's statement grows with them.
const MAX_BATCH: usize = 128;

/// Runs one statement for a batch of requests; answers in the requests' order.
pub(super) type BatchStatement<Req, Resp> = fn(Storage, Vec<Req>) -> BoxFuture<'static, Result<Vec<Resp>>>;

type Waiting<Req, Resp> = Vec<(Req, oneshot::Sender<Result<Resp>>)>;

pub(super) struct Batcher<Req, Resp> {
    queue: Mutex<Queue<Req, Resp>>,
    statement: BatchStatement<Req, Resp>,
}

struct Queue<Req, Resp> {
    waiting: Waiting<Req, Resp>,
    running: usize,
}

impl<Req: Send + 'static, Resp: Send + 'static> Batcher<Req, Resp> {
    pub(super) fn new(statement: BatchStatement<Req, Resp>) -> Arc<Self> {
        Arc::new(Self { queue: Mutex::new(Queue { waiting: Vec::new(), running: 0 }), statement })
    }

    /// Answers `request` within a batch.
    pub(super) async fn run(self: &Arc<Self>, storage: &Storage, request: Req) -> Result<Resp> {
        let (reply, answer) = oneshot::channel();
        let batch = {
            let mut queue = self.lock();
            queue.waiting.push((request, reply));
            if queue.running < IN_FLIGHT {
                queue.running += 1;
                Some(queue.take())
            } else {
                None
            }
        };
        if let Some(batch) = batch {
            // A task of its own: a caller that goes away (a client hanging up) must not take the
            // other requests of its batch with it.
            tokio::spawn(Arc::clone(self).lead(storage.clone(), batch));
        }
        answer.await.map_err(|_| Error::internal("a batched statement ended without an answer"))?
    }

    /// Runs batches until no request waits.
    async fn lead(self: Arc<Self>, storage: Storage, mut batch: Waiting<Req, Resp>) {
        let mut running = Running { batcher: &self, ended: false };
        loop {
            let (requests, replies): (Vec<Req>, Vec<_>) = batch.into_iter().unzip();
            let count = requests.len();
            match (self.statement)(storage.clone(), requests).await {
                Ok(answers) if answers.len() == count => {
                    for (reply, answer) in replies.into_iter().zip(answers) {
                        let _ = reply.send(Ok(answer));
                    }
                }
                Ok(_) => {
                    for reply in replies {
                        let _ = reply
                            .send(Err(Error::internal("a batched statement answered the wrong number of requests")));
                    }
                }
                Err(e) if count == 1 => {
                    if let Some(reply) = replies.into_iter().next() {
                        let _ = reply.send(Err(e));
                    }
                }
                Err(e) => {
                    let message = e.to_string();
                    for reply in replies {
                        let _ = reply.send(Err(Error::internal(&message)));
                    }
                }
            }
            // Checked and given up under one lock: a request queued in between would find every
            // batch running and wait for one that no longer comes.
            let mut queue = self.lock();
            if queue.waiting.is_empty() {
                queue.running -= 1;
                running.ended = true;
                return;
            }
            batch = queue.take();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue<Req, Resp>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<Req, Resp> Queue<Req, Resp> {
    fn take(&mut self) -> Waiting<Req, Resp> {
        let rest = self.waiting.split_off(self.waiting.len().min(MAX_BATCH));
        std::mem::replace(&mut self.waiting, rest)
    }
}

/// A running batch's place, given back should its leader end early: by a panic, or with the
/// runtime. Waiting requests that no other batch will take then fail rather than wait forever.
struct Running<'a, Req, Resp> {
    batcher: &'a Batcher<Req, Resp>,
    ended: bool,
}

impl<Req, Resp> Drop for Running<'_, Req, Resp> {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let mut queue = self.batcher.queue.lock().unwrap_or_else(|p| p.into_inner());
        queue.running -= 1;
        if queue.running == 0 {
            for (_, reply) in queue.waiting.drain(..) {
                let _ = reply.send(Err(Error::internal("a batched statement failed")));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Mutex, time::Duration};

    use super::*;

    /// Sizes of the batches the test statement ran, in order.
    static SIZES: Mutex<Vec<usize>> = Mutex::new(Vec::new());

    /// Answers each request with its double, slowly enough for others to queue behind it.
    fn doubled(_: Storage, requests: Vec<u32>) -> BoxFuture<'static, Result<Vec<u32>>> {
        Box::pin(async move {
            SIZES.lock().unwrap().push(requests.len());
            tokio::time::sleep(Duration::from_millis(200)).await;
            if requests.contains(&13) {
                return Err(Error::internal("unlucky"));
            }
            Ok(requests.into_iter().map(|r| r * 2).collect())
        })
    }

    #[tokio::test]
    async fn requests_queue_behind_running_batches_and_get_their_own_answers() {
        // The statement never touches it; a batch only passes it along.
        let file = std::env::temp_dir().join(format!("axon-batch-test-{}.db", std::process::id()));
        let storage = Storage::open(&format!("sqlite:{}", file.display()), 1).await.unwrap();
        let batcher = Batcher::new(doubled);
        let mut calls = Vec::new();
        for request in 1..=6u32 {
            let (batcher, storage) = (batcher.clone(), storage.clone());
            calls.push(tokio::spawn(async move { batcher.run(&storage, request).await }));
            // Each request is queued before the next is made.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut answers = Vec::new();
        for call in calls {
            answers.push(call.await.unwrap().unwrap());
        }
        assert_eq!(answers, [2, 4, 6, 8, 10, 12]);
        // The first two start at once; the other four wait and go together.
        assert_eq!(*SIZES.lock().unwrap(), [1, 1, 4]);

        // A failed batch fails each of its requests, and the next batch runs as usual.
        let (unlucky, other) = tokio::join!(batcher.run(&storage, 13), batcher.run(&storage, 14));
        assert!(unlucky.is_err());
        assert_eq!(other.unwrap(), 28, "a batch of its own: two may run at once");
        let (unlucky, other) = tokio::join!(
            async {
                let running = batcher.run(&storage, 1);
                let running_too = batcher.run(&storage, 2);
                tokio::join!(running, running_too)
            },
            async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                tokio::join!(batcher.run(&storage, 13), batcher.run(&storage, 5))
            }
        );
        assert_eq!((unlucky.0.unwrap(), unlucky.1.unwrap()), (2, 4));
        assert!(other.0.is_err() && other.1.is_err(), "13 and 5 went in one batch, which failed");
        assert_eq!(batcher.lock().running, 0, "every batch gave its place back");
        drop(storage);
        let _ = std::fs::remove_file(file);
    }
}
