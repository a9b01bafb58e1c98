//! The relay: every video event of the store, in log order, onto the `video-events` stream,
//! keyed by video id, for consumers outside (the lake's `video_events` table, search,
//! notifications). Other streams of the log (the webhook registry) are not published.
//! At least once: the checkpoint is saved after the stream acknowledged a batch, so a crash in
//! between publishes the batch again, and consumers de-duplicate by `event_id`.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::ports::{
    CheckpointStore, Clock, EventLog, LeaseKeeper, LeaseStore, RecordedEvent, StoreError, StreamError, StreamProducer,
    StreamRecord,
};
use crate::Subscription;

/// The relay's topic.
pub const VIDEO_EVENTS_TOPIC: &str = "video-events";
/// Its checkpoint and lease name.
const NAME: &str = "video-events-relay";
/// How long the relay's lease lasts; renewed at a third of it.
const LEASE_TTL: Duration = Duration::from_secs(15);

/// Why the relay stopped a batch.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The event store or checkpoint store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stream refused the batch.
    #[error(transparent)]
    Stream(#[from] StreamError),
}

/// Publishes the log to the `video-events` stream.
pub struct Relay {
    log: Arc<dyn EventLog>,
    stream: Arc<dyn StreamProducer>,
    checkpoints: Arc<dyn CheckpointStore>,
    leases: Arc<dyn LeaseStore>,
    clock: Arc<dyn Clock>,
    owner: String,
}

/// One event as published: the stored event with its metadata and JSON payload.
fn record(event: &RecordedEvent) -> Result<StreamRecord, StreamError> {
    let value = serde_json::to_vec(event).map_err(|e| StreamError::Invalid(e.to_string()))?;
    Ok(StreamRecord {
        key: event.stream_id.clone(),
        value,
    })
}

impl Relay {
    /// A relay running as `owner`.
    pub fn new(
        log: Arc<dyn EventLog>,
        stream: Arc<dyn StreamProducer>,
        checkpoints: Arc<dyn CheckpointStore>,
        leases: Arc<dyn LeaseStore>,
        clock: Arc<dyn Clock>,
        owner: String,
    ) -> Self {
        Self {
            log,
            stream,
            checkpoints,
            leases,
            clock,
            owner,
        }
    }

    async fn publish(&self, batch: &[RecordedEvent], position: u64) -> Result<(), RelayError> {
        let records = batch
            .iter()
            .filter(|event| event.stream_type == vodsource_domain::VIDEO_STREAM_TYPE)
            .map(record)
            .collect::<Result<Vec<_>, _>>()?;
        if !records.is_empty() {
            self.stream.publish(VIDEO_EVENTS_TOPIC, records).await?;
        }
        self.checkpoints.save_checkpoint(NAME, &self.owner, position).await?;
        Ok(())
    }

    /// Publishes everything after the checkpoint; returns the position reached. For tests
    /// and one-shot runs.
    ///
    /// # Errors
    /// A store or stream failure (the checkpoint stays at the last acknowledged batch).
    pub async fn catch_up(&self) -> Result<u64, RelayError> {
        let start = self.checkpoints.load_checkpoint(NAME).await?;
        let mut subscription = Subscription::new(self.log.clone(), start);
        loop {
            let batch = subscription.try_next_batch().await?;
            if batch.is_empty() {
                return Ok(subscription.position());
            }
            self.publish(&batch, subscription.position()).await?;
        }
    }

    /// Follows the log until `shutdown`, holding the relay's lease; failures are retried
    /// with backoff from the checkpoint.
    ///
    /// # Errors
    /// Never; failures are logged and retried.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), RelayError> {
        tokio::pin!(shutdown);
        let mut lease = LeaseKeeper::new(NAME, self.owner.clone(), LEASE_TTL);
        let mut backoff = Duration::from_millis(100);
        loop {
            let error = tokio::select! {
                () = &mut shutdown => {
                    let _ = self.leases.release_lease(NAME, &self.owner).await;
                    return Ok(());
                }
                Err(error) = self.follow(&mut lease) => error,
            };
            tracing::warn!(error = %error, ?backoff, "video-events relay: retrying");
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }

    /// Waits for the lease, then publishes from the checkpoint on; returns only on a failure.
    async fn follow(&self, lease: &mut LeaseKeeper) -> Result<Infallible, RelayError> {
        while !lease.hold(&*self.leases, &*self.clock).await? {
            tokio::time::sleep(LEASE_TTL / 3).await;
        }
        let start = self.checkpoints.load_checkpoint(NAME).await?;
        let mut subscription = Subscription::new(self.log.clone(), start);
        loop {
            let batch = subscription.next_batch().await?;
            if !lease.hold(&*self.leases, &*self.clock).await? {
                return Err(RelayError::Store(StoreError::LeaseLost(NAME.into())));
            }
            self.publish(&batch, subscription.position()).await?;
        }
    }
}
