//! Group commit: one writer task per store drains every append waiting for it into one
//! transaction, so N concurrent commands cost one commit (one fsync) instead of N.

use std::future::Future;

use tokio::sync::{mpsc, oneshot, watch};
use vodsource_commands::ports::{AppendRequest, Appended, StoreError};

/// Appends in one transaction at most.
const MAX_REQUESTS: usize = 1024;

pub(crate) type Outcomes = Vec<Result<Appended, StoreError>>;

pub(crate) struct Pending {
    requests: Vec<AppendRequest>,
    reply: oneshot::Sender<Result<Outcomes, StoreError>>,
}

/// Writes one batch in one transaction: per-request outcomes and the head after commit. The
/// batch is handed over by value, so a writer that works on another thread need not copy it.
pub(crate) trait BatchWriter: Send + 'static {
    fn write(
        &mut self,
        batch: Vec<AppendRequest>,
    ) -> impl Future<Output = Result<(Outcomes, u64), StoreError>> + Send + '_;
}

/// The sending side of a writer task.
#[derive(Clone)]
pub(crate) struct GroupCommit {
    queue: mpsc::Sender<Pending>,
}

impl GroupCommit {
    /// Starts the writer task; it ends when every `GroupCommit` clone is dropped.
    pub(crate) fn spawn<W: BatchWriter>(mut writer: W, head: watch::Sender<u64>) -> Self {
        let (queue, mut rx) = mpsc::channel::<Pending>(4096);
        tokio::spawn(async move {
            let mut batch: Vec<Pending> = Vec::new();
            while let Some(first) = rx.recv().await {
                let mut count = first.requests.len();
                batch.push(first);
                while count < MAX_REQUESTS {
                    match rx.try_recv() {
                        Ok(next) => {
                            count += next.requests.len();
                            batch.push(next);
                        }
                        Err(_) => break,
                    }
                }
                let mut requests = Vec::with_capacity(count);
                let mut waiting = Vec::with_capacity(batch.len());
                for pending in batch.drain(..) {
                    waiting.push((pending.requests.len(), pending.reply));
                    requests.extend(pending.requests);
                }
                match writer.write(requests).await {
                    Ok((outcomes, new_head)) => {
                        let mut outcomes = outcomes.into_iter();
                        for (count, reply) in waiting {
                            let mine: Outcomes = outcomes.by_ref().take(count).collect();
                            let _ = reply.send(Ok(mine));
                        }
                        head.send_if_modified(|h| {
                            let moved = new_head > *h;
                            *h = (*h).max(new_head);
                            moved
                        });
                    }
                    Err(e) => {
                        for (_, reply) in waiting {
                            let _ = reply.send(Err(e.clone()));
                        }
                    }
                }
            }
        });
        Self { queue }
    }

    /// Queues `requests` and waits for their outcomes.
    pub(crate) async fn submit(&self, requests: Vec<AppendRequest>) -> Result<Outcomes, StoreError> {
        let (reply, outcome) = oneshot::channel();
        self.queue
            .send(Pending { requests, reply })
            .await
            .map_err(|_| StoreError::unavailable("the event store writer has stopped"))?;
        outcome
            .await
            .map_err(|_| StoreError::unavailable("the event store writer has stopped"))?
    }

    /// Queues one request.
    pub(crate) async fn submit_one(&self, request: AppendRequest) -> Result<Appended, StoreError> {
        self.submit(vec![request])
            .await?
            .pop()
            .unwrap_or_else(|| Err(StoreError::unexpected("the writer returned no outcome")))
    }
}
