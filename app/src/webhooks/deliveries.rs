//! The delivery log: for each event sent to an endpoint, its attempts, the last answer's
//! status and latency, and when it is tried next. It is a view of the view store of its own,
//! `webhook/<id>`, written in batches by the endpoint's runner under the endpoint's lease (so
//! a runner that lost its endpoint writes nothing), keeping the newest events (1,000 by
//! default: `DispatchConfig::retained`).
//!
//! It is what operators and owners read; the checkpoint, not this log, is what makes
//! deliveries survive a crash.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use vodsource_commands::ports::{Clock, StoreError};
use vodsource_projections::{Doc, DocChange, ViewStore};

/// Records waiting to be written at most; past it, new records of delivered events are
/// dropped (and logged) rather than holding deliveries up.
const MAX_UNWRITTEN: usize = 50_000;
/// Records read per page when a recorder learns what the log holds.
const SCAN_PAGE: usize = 500;

/// Where an event's delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Failed so far; tried again at `next_attempt_at`.
    Retrying,
    /// Answered with a 2xx.
    Delivered,
    /// Failed for the whole retry period: the endpoint was marked failing.
    Failed,
    /// Not finished when its endpoint was marked failing; tried again when it is re-driven.
    Parked,
}

/// One event's delivery to one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    /// The event's position in the log.
    pub position: u64,
    /// Its public id (`Vodsource-Event-Id`).
    pub event_id: String,
    /// Its public type.
    pub event_type: String,
    /// The video it is about.
    pub video_id: String,
    /// Where it stands.
    pub state: DeliveryState,
    /// Attempts made.
    pub attempts: u32,
    /// The first attempt.
    pub first_attempt_at: DateTime<Utc>,
    /// The last attempt.
    pub last_attempt_at: DateTime<Utc>,
    /// The last answer's status, if one came.
    pub status_code: Option<u16>,
    /// From sending the last attempt to its answer (or failure), ms.
    pub latency_ms: u64,
    /// Why the last attempt failed.
    pub error: Option<String>,
    /// When it is tried next (retrying only).
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// The checkpoint and lease name of endpoint `id`'s runner, and its delivery log's view:
/// one name, so the log is written only by the lease holder.
pub fn consumer_name(id: &str) -> String {
    format!("webhook/{id}")
}

/// A record's key: newer positions sort first, so a scan in key order reads the log newest
/// first with no index to write.
fn key(position: u64) -> String {
    format!("{:020}", u64::MAX - position)
}

fn position_of(key: &str) -> Option<u64> {
    key.parse::<u64>().ok().map(|k| u64::MAX - k)
}

/// Up to `limit` records of endpoint `id`'s log, newest position first, below `before`.
///
/// # Errors
/// The store failed; a record that does not read is `Corrupt`.
pub async fn page(
    views: &dyn ViewStore,
    id: &str,
    before: Option<u64>,
    limit: usize,
) -> Result<Vec<DeliveryRecord>, StoreError> {
    let after = before.map(key);
    let found = views.scan(&consumer_name(id), after.as_deref(), limit).await?;
    found
        .into_iter()
        .map(|doc| {
            serde_json::from_str(&doc.body).map_err(|e| StoreError::Corrupt {
                position: position_of(&doc.key).unwrap_or(0),
                reason: format!("a delivery record does not read: {e}"),
            })
        })
        .collect()
}

/// Collects one runner's records and writes the latest of each in batches.
pub(crate) struct Recorder {
    views: Arc<dyn ViewStore>,
    clock: Arc<dyn Clock>,
    view: String,
    owner: String,
    retained: usize,
    unwritten: Mutex<BTreeMap<u64, DeliveryRecord>>,
    /// The latest record of every delivery not finished (to park them).
    open: Mutex<HashMap<u64, DeliveryRecord>>,
    /// Records not kept because too many waited, since the last write.
    dropped: AtomicU64,
    written: tokio::sync::Mutex<Written>,
}

/// What the store holds, as far as this recorder knows.
struct Written {
    generation: u32,
    positions: BTreeSet<u64>,
    version: u64,
}

impl Recorder {
    /// A recorder of endpoint `id`'s log, writing as lease holder `owner`; learns what the
    /// log holds.
    pub(crate) async fn open(
        views: Arc<dyn ViewStore>,
        clock: Arc<dyn Clock>,
        id: &str,
        owner: &str,
        retained: usize,
    ) -> Result<Self, StoreError> {
        let view = consumer_name(id);
        let generation = views.projection(&view).await?.generation;
        let mut positions = BTreeSet::new();
        let mut after: Option<String> = None;
        loop {
            let docs = views.scan(&view, after.as_deref(), SCAN_PAGE).await?;
            let Some(last) = docs.last() else { break };
            after = Some(last.key.clone());
            positions.extend(docs.iter().filter_map(|d| position_of(&d.key)));
            if docs.len() < SCAN_PAGE {
                break;
            }
        }
        Ok(Self {
            views,
            clock,
            view,
            owner: owner.to_owned(),
            retained: retained.max(1),
            unwritten: Mutex::default(),
            open: Mutex::default(),
            dropped: AtomicU64::new(0),
            written: tokio::sync::Mutex::new(Written {
                generation,
                positions,
                version: 0,
            }),
        })
    }

    /// Notes the latest state of a delivery.
    pub(crate) fn note(&self, record: DeliveryRecord) {
        {
            let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
            if record.state == DeliveryState::Retrying {
                open.insert(record.position, record.clone());
            } else {
                open.remove(&record.position);
            }
        }
        let mut unwritten = self.unwritten.lock().unwrap_or_else(PoisonError::into_inner);
        if unwritten.len() >= MAX_UNWRITTEN
            && record.state == DeliveryState::Delivered
            && !unwritten.contains_key(&record.position)
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        unwritten.insert(record.position, record);
    }

    /// Marks every delivery not finished as parked.
    pub(crate) fn park_all(&self) {
        let open: Vec<DeliveryRecord> = self
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .map(|(_, record)| record)
            .collect();
        for mut record in open {
            record.state = DeliveryState::Parked;
            record.next_attempt_at = None;
            self.note(record);
        }
    }

    /// Writes what was noted since the last write.
    ///
    /// # Errors
    /// `LeaseLost` when the runner no longer holds its endpoint; `Unavailable` (the records
    /// are kept for the next write).
    pub(crate) async fn flush(&self) -> Result<(), StoreError> {
        let mut written = self.written.lock().await;
        let batch = std::mem::take(&mut *self.unwritten.lock().unwrap_or_else(PoisonError::into_inner));
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!(view = %self.view, dropped, "the delivery log fell behind; records of delivered events left out");
        }
        if batch.is_empty() {
            return Ok(());
        }
        // Versions only grow, so a record never goes back to an older state.
        let now = u64::try_from(self.clock.now().timestamp_micros()).unwrap_or(0);
        let version = now.max(written.version + 1);
        let mut positions = written.positions.clone();
        positions.extend(batch.keys());
        let mut changes = Vec::with_capacity(batch.len());
        let mut gone = BTreeSet::new();
        while positions.len() > self.retained {
            let Some(oldest) = positions.pop_first() else { break };
            gone.insert(oldest);
            if written.positions.contains(&oldest) {
                changes.push(DocChange::Delete {
                    key: key(oldest),
                    unindex: Vec::new(),
                });
            }
        }
        for (position, record) in batch.iter().filter(|(p, _)| !gone.contains(p)) {
            let body = serde_json::to_string(record).map_err(|e| StoreError::Corrupt {
                position: *position,
                reason: format!("a delivery record does not serialize: {e}"),
            })?;
            changes.push(DocChange::Put(Doc {
                key: key(*position),
                version,
                body,
                index: None,
                unindex: Vec::new(),
            }));
        }
        let last = batch.keys().next_back().copied().unwrap_or(0);
        match self
            .views
            .commit(&self.view, written.generation, &self.owner, changes, last)
            .await
        {
            Ok(()) => {
                written.positions = positions;
                written.version = version;
                Ok(())
            }
            Err(e) => {
                let mut unwritten = self.unwritten.lock().unwrap_or_else(PoisonError::into_inner);
                for (position, record) in batch {
                    unwritten.entry(position).or_insert(record);
                }
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_newest_first_and_give_their_position_back() {
        let positions = [0, 1, 9, 10, 99, 1_000_000, u64::MAX];
        let mut keys: Vec<String> = positions.iter().map(|p| key(*p)).collect();
        keys.sort();
        let back: Vec<u64> = keys.iter().filter_map(|k| position_of(k)).collect();
        assert_eq!(back, [u64::MAX, 1_000_000, 99, 10, 9, 1, 0]);
        assert!(keys.iter().all(|k| k.len() == 20));
        assert_eq!(position_of("not a key"), None);
    }
}
