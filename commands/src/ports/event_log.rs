use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use uuid::Uuid;

use super::error::StoreError;

/// Who and what caused an event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMetadata {
    /// The request or flow this event belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Uuid>,
    /// The event or command that caused this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    /// The principal (user, worker or process manager) that caused it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// Anything else the caller attached. (Nested rather than flattened: serde's flatten
    /// buffers every field and cost a fifth of replay time.)
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, String>,
}

/// An event to append.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// UUID v7, chosen by the writer: re-sending the same id does not duplicate the event.
    pub event_id: Uuid,
    /// The event's type name.
    pub event_type: String,
    /// The schema version the payload was written with.
    pub schema_version: u32,
    /// JSON text.
    pub payload: String,
    /// Correlation, causation, actor.
    pub metadata: EventMetadata,
    /// When the event happened.
    pub occurred_at: DateTime<Utc>,
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordedEvent {
    /// Position in the global log: strictly increasing in commit order, from 1.
    pub position: u64,
    /// The stream (aggregate) id.
    pub stream_id: String,
    /// The stream (aggregate) type.
    pub stream_type: String,
    /// Version within the stream, from 1.
    pub version: u64,
    /// The event id.
    pub event_id: Uuid,
    /// The type name.
    pub event_type: String,
    /// The schema version it was written with.
    pub schema_version: u32,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// Correlation, causation, actor.
    pub metadata: EventMetadata,
    /// JSON text.
    #[serde(serialize_with = "raw_json")]
    pub payload: String,
}

fn raw_json<S: serde::Serializer>(payload: &str, serializer: S) -> Result<S::Ok, S::Error> {
    match serde_json::from_str::<serde_json::Value>(payload) {
        Ok(value) => value.serialize(serializer),
        Err(_) => serializer.serialize_str(payload),
    }
}

/// What the writer believes the stream's version is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// No check.
    Any,
    /// The stream must have exactly this many events (0: it must not exist).
    Exact(u64),
}

/// Events to append to one stream, atomically.
#[derive(Debug, Clone, PartialEq)]
pub struct AppendRequest {
    /// Stream id.
    pub stream_id: String,
    /// Stream type.
    pub stream_type: String,
    /// Optimistic concurrency check.
    pub expected: ExpectedVersion,
    /// At least one event.
    pub events: Vec<NewEvent>,
}

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Global position of the first event.
    pub first_position: u64,
    /// Global position of the last event.
    pub last_position: u64,
    /// The stream's version after the append.
    pub version: u64,
    /// True when every event was already stored (a re-send): nothing new was written.
    pub duplicate: bool,
}

/// An append-only event store with per-stream versions and a global order.
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Appends events to one stream if its version matches. Re-sending events whose ids are
    /// already stored in the same place returns their positions with `duplicate: true`.
    ///
    /// # Errors
    /// `Conflict` on a version mismatch, `DuplicateEventId` when an id is stored elsewhere,
    /// `Unavailable` when the store cannot be reached.
    async fn append(&self, request: AppendRequest) -> Result<Appended, StoreError>;

    /// Appends to several streams; each request succeeds or fails on its own, as
    /// [`EventLog::append`] would. Stores that commit in groups write them together.
    ///
    /// # Errors
    /// The outer error when the store cannot be reached at all.
    async fn append_many(&self, requests: Vec<AppendRequest>) -> Result<Vec<Result<Appended, StoreError>>, StoreError> {
        let mut out = Vec::with_capacity(requests.len());
        for request in requests {
            out.push(self.append(request).await);
        }
        Ok(out)
    }

    /// Up to `limit` events of one stream with a version above `after_version`, in order, in
    /// time proportional to `limit` (not to the stream's length).
    ///
    /// # Errors
    /// `Unavailable` or `Corrupt`.
    async fn read_stream(
        &self,
        stream_id: &str,
        after_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// The version of `stream_id`'s last event at or before global `position` (0 when it
    /// has none): where a reader that saw the log up to `position` resumes in the stream.
    /// Stores answer in time proportional to the stream's events after `position`, never to
    /// the whole stream.
    ///
    /// # Errors
    /// `Unavailable` or `Corrupt`.
    async fn stream_version_at(&self, stream_id: &str, position: u64) -> Result<u64, StoreError>;

    /// Up to `limit` events with a position above `after`, in global order. A reader that
    /// pages through with the last position it saw never skips an event.
    ///
    /// # Errors
    /// `Unavailable` or `Corrupt`.
    async fn read_all(&self, after: u64, limit: usize) -> Result<Vec<RecordedEvent>, StoreError>;

    /// The position of the last committed event (0 when empty).
    ///
    /// # Errors
    /// `Unavailable`.
    async fn head(&self) -> Result<u64, StoreError>;

    /// A signal carrying the head position, raised after appends this store learns about
    /// (its own, and on PostgreSQL other processes' through LISTEN/NOTIFY).
    fn watch_head(&self) -> watch::Receiver<u64>;

    /// How to name this store in logs and health checks (no secrets).
    fn describe(&self) -> String;
}
