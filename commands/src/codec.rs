//! Turning Video events into stored events and back, with upcasting of old schema versions.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;
use vodsource_domain::{VideoEvent, EVENT_SCHEMA_VERSION};

use crate::ports::{EventMetadata, NewEvent, RecordedEvent};

/// Why a stored event could not become a `VideoEvent`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// A type this build does not know.
    #[error("unknown event type {event_type:?} at position {position}")]
    UnknownType {
        /// Global position.
        position: u64,
        /// The stored type.
        event_type: String,
    },
    /// Written by a newer build than this one.
    #[error("event {event_type} at position {position} has schema version {version}, newer than {supported}")]
    NewerSchema {
        /// Global position.
        position: u64,
        /// The stored type.
        event_type: String,
        /// The stored version.
        version: u32,
        /// The newest this build reads.
        supported: u32,
    },
    /// The payload does not fit the type.
    #[error("event {event_type} at position {position} does not deserialize: {reason}")]
    BadPayload {
        /// Global position.
        position: u64,
        /// The stored type.
        event_type: String,
        /// The deserializer's message.
        reason: String,
    },
}

impl DecodeError {
    /// The global position of the event that failed.
    pub fn position(&self) -> u64 {
        match self {
            DecodeError::UnknownType { position, .. }
            | DecodeError::NewerSchema { position, .. }
            | DecodeError::BadPayload { position, .. } => *position,
        }
    }
}

/// Rewrites the payload of one (type, version) into the next version.
pub type Upcast = fn(Value) -> Result<Value, String>;

/// Reads stored events as `VideoEvent`s, upcasting old schema versions on the way.
#[derive(Debug, Clone, Default)]
pub struct Decoder {
    upcasters: HashMap<(String, u32), Upcast>,
}

impl Decoder {
    /// A decoder with no upcasters: every event must be at the current schema version.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers how to lift `event_type` from `from_version` to `from_version + 1`.
    #[must_use]
    pub fn with_upcaster(mut self, event_type: &str, from_version: u32, upcast: Upcast) -> Self {
        self.upcasters.insert((event_type.to_owned(), from_version), upcast);
        self
    }

    /// Decodes one stored event.
    ///
    /// # Errors
    /// A [`DecodeError`] naming the position and type.
    pub fn decode(&self, event: &RecordedEvent) -> Result<VideoEvent, DecodeError> {
        if !VideoEvent::TYPES.contains(&event.event_type.as_str()) {
            return Err(DecodeError::UnknownType {
                position: event.position,
                event_type: event.event_type.clone(),
            });
        }
        if event.schema_version > EVENT_SCHEMA_VERSION {
            return Err(DecodeError::NewerSchema {
                position: event.position,
                event_type: event.event_type.clone(),
                version: event.schema_version,
                supported: EVENT_SCHEMA_VERSION,
            });
        }
        let bad = |reason: String| DecodeError::BadPayload {
            position: event.position,
            event_type: event.event_type.clone(),
            reason,
        };
        let decoded: VideoEvent = if event.schema_version == EVENT_SCHEMA_VERSION {
            serde_json::from_str(&event.payload).map_err(|e| bad(e.to_string()))?
        } else {
            let mut value: Value = serde_json::from_str(&event.payload).map_err(|e| bad(e.to_string()))?;
            for version in event.schema_version..EVENT_SCHEMA_VERSION {
                let upcast = self
                    .upcasters
                    .get(&(event.event_type.clone(), version))
                    .ok_or_else(|| bad(format!("no upcaster from schema version {version}")))?;
                value = upcast(value).map_err(bad)?;
            }
            serde_json::from_value(value).map_err(|e| bad(e.to_string()))?
        };
        if decoded.type_name() != event.event_type {
            return Err(bad(format!("payload holds a {}", decoded.type_name())));
        }
        Ok(decoded)
    }
}

/// Encodes a `VideoEvent` for appending.
pub fn encode(event: &VideoEvent, metadata: EventMetadata, occurred_at: DateTime<Utc>) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: event.type_name().to_owned(),
        schema_version: EVENT_SCHEMA_VERSION,
        // Serializing a plain enum of strings and numbers cannot fail.
        payload: serde_json::to_string(event).unwrap_or_default(),
        metadata,
        occurred_at,
    }
}
