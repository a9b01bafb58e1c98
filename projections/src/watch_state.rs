//! The `watch-state` consumer group on the QoE stream: each viewer's position in each video,
//! kept in the view store. The document version is the event time, so the store's conditional
//! put is what keeps a late or repeated event from moving a viewer back; the fold
//! ([`WatchState::fold`]) decides the rest. Stream offsets are committed after the views, so
//! a crash replays a batch, which changes nothing.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use vodsource_commands::ports::{Clock, LeaseKeeper, LeaseStore, StoreError, StreamConsumer, StreamError};
use vodsource_qoe::WatchState;

use crate::projector::IndexKey;
use crate::view_store::{Doc, DocChange, ViewStore};

/// The view (and lease) name.
pub const WATCH_STATE: &str = "watch_state";

/// The index partition of a viewer's videos, newest first.
pub fn viewer_partition(viewer_id: &str) -> String {
    format!("viewer:{viewer_id}")
}

/// Sort key of an event time: fixed width, so text order is time order.
pub fn time_sort_key(ms: i64) -> String {
    format!("{:020}", ms.max(0))
}

/// Why the runner stopped.
#[derive(Debug, thiserror::Error)]
pub enum WatchStateError {
    /// The view store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stream failed.
    #[error(transparent)]
    Stream(#[from] StreamError),
}

/// Follows the QoE stream into the watch-state view.
pub struct WatchStateRunner<C: StreamConsumer> {
    consumer: C,
    views: Arc<dyn ViewStore>,
    leases: Arc<dyn LeaseStore>,
    clock: Arc<dyn Clock>,
    owner: String,
    lease: LeaseKeeper,
}

impl<C: StreamConsumer> WatchStateRunner<C> {
    /// A runner reading `consumer` (group `watch-state`) as `owner`.
    pub fn new(
        consumer: C,
        views: Arc<dyn ViewStore>,
        leases: Arc<dyn LeaseStore>,
        clock: Arc<dyn Clock>,
        owner: String,
    ) -> Self {
        Self {
            lease: LeaseKeeper::new(WATCH_STATE, owner.clone(), Duration::from_secs(15)),
            consumer,
            views,
            leases,
            clock,
            owner,
        }
    }

    /// Applies one batch (up to `max` records, waiting up to `wait`); returns how many records.
    ///
    /// # Errors
    /// A store or stream failure; nothing of the batch is committed on the stream then.
    pub async fn step(&mut self, max: usize, wait: Duration) -> Result<usize, WatchStateError> {
        if !self.lease.hold(&*self.leases, &*self.clock).await? {
            // Another process keeps the view: wait rather than spin.
            tokio::time::sleep(wait).await;
            return Ok(0);
        }
        let batch = self.consumer.poll(max, wait).await?;
        if batch.is_empty() {
            return Ok(0);
        }
        let mut offsets: HashMap<u32, u64> = HashMap::new();
        let mut events = Vec::with_capacity(batch.len());
        for delivery in &batch {
            offsets
                .entry(delivery.partition)
                .and_modify(|o| *o = (*o).max(delivery.offset))
                .or_insert(delivery.offset);
            match vodsource_qoe::wire::decode_event(&delivery.value) {
                Ok(event) => events.push(event),
                Err(e) => {
                    tracing::warn!(partition = delivery.partition, offset = delivery.offset, error = %e, "skipping an unreadable QoE record")
                }
            }
        }
        let keys: Vec<String> = events
            .iter()
            .filter_map(|e| e.viewer_id.as_deref().map(|v| WatchState::key(v, &e.cid)))
            .collect();
        let generation = self.views.projection(WATCH_STATE).await?.generation;
        let stored = self.views.get_many(WATCH_STATE, generation, &keys).await?;
        let mut before: HashMap<String, Option<WatchState>> = HashMap::new();
        let mut after: HashMap<String, WatchState> = HashMap::new();
        for event in &events {
            let Some(viewer) = event.viewer_id.as_deref() else {
                continue;
            };
            let key = WatchState::key(viewer, &event.cid);
            let old = before
                .entry(key.clone())
                .or_insert_with(|| stored.get(&key).and_then(|d| serde_json::from_str(&d.body).ok()))
                .clone();
            let current = after.get(&key).cloned().or(old);
            if let Some(next) = WatchState::fold(current.as_ref(), event) {
                after.insert(key, next);
            }
        }
        let mut changes = Vec::with_capacity(after.len());
        for (key, state) in after {
            let index = IndexKey {
                partition: viewer_partition(&state.viewer_id),
                sort: time_sort_key(state.updated_at),
            };
            let unindex = before
                .get(&key)
                .and_then(Option::as_ref)
                .map(|old| IndexKey {
                    partition: viewer_partition(&old.viewer_id),
                    sort: time_sort_key(old.updated_at),
                })
                .filter(|old| *old != index)
                .into_iter()
                .collect();
            let body = serde_json::to_string(&state).map_err(|e| StoreError::Invalid(e.to_string()))?;
            changes.push(DocChange::Put(Doc {
                key,
                // (event time, duration known): the order the fold moves in, so the store's
                // conditional put keeps the newer document and takes a learnt duration.
                version: u64::try_from(state.updated_at).unwrap_or(0) * 2 + u64::from(state.duration_ms.is_some()),
                body,
                index: Some(vec![index]),
                unindex,
            }));
        }
        if !changes.is_empty() {
            self.views
                .commit(WATCH_STATE, generation, &self.owner, changes, 0)
                .await?;
        }
        let offsets: Vec<(u32, u64)> = offsets.into_iter().collect();
        self.consumer.commit(&offsets).await?;
        Ok(batch.len())
    }

    /// Runs until `shutdown`, retrying failures with backoff.
    ///
    /// # Errors
    /// Never; failures are logged and retried.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), WatchStateError> {
        tokio::pin!(shutdown);
        let mut backoff = Duration::from_millis(100);
        loop {
            tokio::select! {
                () = &mut shutdown => {
                    let _ = self.lease.release(&*self.leases).await;
                    return Ok(());
                }
                stepped = self.step(500, Duration::from_millis(500)) => match stepped {
                    Ok(_) => backoff = Duration::from_millis(100),
                    Err(e) => {
                        tracing::warn!(error = %e, ?backoff, "watch state: retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                    }
                }
            }
        }
    }
}
