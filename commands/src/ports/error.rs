//! What a store (event log, view store, coordination, objects) can fail with: one taxonomy for
//! every port, so callers decide by kind (retry, conflict, not found, refuse) and never by
//! message. Each adapter maps its client's errors into these in one place, keeping the
//! client's error as the [`std::error::Error::source`] so the cause chain survives.

use std::sync::Arc;

use uuid::Uuid;

/// The cause an adapter keeps: its client's own error.
pub type Cause = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// What a store can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The stream's version is not the expected one (optimistic concurrency on the log).
    #[error("stream {stream_id}: expected version {expected}, found {actual}")]
    Conflict {
        /// The stream.
        stream_id: String,
        /// What the writer expected.
        expected: u64,
        /// What the stream holds.
        actual: u64,
    },
    /// A write to a view named a generation that is neither its live one nor the one being
    /// rebuilt (a rebuild began, finished or was abandoned meanwhile).
    #[error("view {view}: generation {generation} is neither live nor being rebuilt{}", live.map(|l| format!(" (live: {l})")).unwrap_or_default())]
    GenerationConflict {
        /// The view.
        view: String,
        /// The generation written.
        generation: u32,
        /// The live generation, when known.
        live: Option<u32>,
    },
    /// An event id already stored with other content or elsewhere.
    #[error("event {event_id} is already stored at another place in the log")]
    DuplicateEventId {
        /// The id.
        event_id: Uuid,
    },
    /// The caller no longer holds the lease that fences its writes.
    #[error("the lease on {0} is held by another owner")]
    LeaseLost(String),
    /// What was asked for does not exist (an object).
    #[error("not found: {0}")]
    NotFound(String),
    /// The request itself is malformed, or refused by the store's rules.
    #[error("invalid append: {0}")]
    Invalid(String),
    /// The store cannot be reached, is locked or throttles; retrying later may work.
    #[error("store unavailable: {message}")]
    Unavailable {
        /// What failed, and the cause's own words.
        message: String,
        /// The client's error.
        #[source]
        source: Option<Cause>,
    },
    /// A stored row cannot be read.
    #[error("event at position {position} is unreadable: {reason}")]
    Corrupt {
        /// Its global position.
        position: u64,
        /// What is wrong.
        reason: String,
    },
    /// Anything else: a bug, or a failure no caller can act on.
    #[error("store error: {message}")]
    Unexpected {
        /// What failed, and the cause's own words.
        message: String,
        /// The client's error.
        #[source]
        source: Option<Cause>,
    },
}

impl StoreError {
    /// `Unavailable` without a cause.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::Unavailable {
            message: message.into(),
            source: None,
        }
    }

    /// `Unavailable`: `context`, then `cause`'s own words; `cause` kept as the source.
    pub fn unavailable_from(
        context: impl std::fmt::Display,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Unavailable {
            message: format!("{context}: {cause}"),
            source: Some(Arc::new(cause)),
        }
    }

    /// `Unexpected` without a cause.
    pub fn unexpected(message: impl Into<String>) -> Self {
        Self::Unexpected {
            message: message.into(),
            source: None,
        }
    }

    /// `Unexpected`: `context`, then `cause`'s own words; `cause` kept as the source.
    pub fn unexpected_from(
        context: impl std::fmt::Display,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Unexpected {
            message: format!("{context}: {cause}"),
            source: Some(Arc::new(cause)),
        }
    }

    /// Whether retrying the same request later may succeed.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

/// Equal when of one kind with equal fields; causes are compared by their words.
impl PartialEq for StoreError {
    fn eq(&self, other: &Self) -> bool {
        use StoreError as E;
        match (self, other) {
            (
                E::Conflict {
                    stream_id: a,
                    expected: b,
                    actual: c,
                },
                E::Conflict {
                    stream_id: x,
                    expected: y,
                    actual: z,
                },
            ) => (a, b, c) == (x, y, z),
            (
                E::GenerationConflict {
                    view: a,
                    generation: b,
                    live: c,
                },
                E::GenerationConflict {
                    view: x,
                    generation: y,
                    live: z,
                },
            ) => (a, b, c) == (x, y, z),
            (E::DuplicateEventId { event_id: a }, E::DuplicateEventId { event_id: x }) => a == x,
            (E::LeaseLost(a), E::LeaseLost(x)) | (E::NotFound(a), E::NotFound(x)) | (E::Invalid(a), E::Invalid(x)) => {
                a == x
            }
            (E::Unavailable { message: a, .. }, E::Unavailable { message: x, .. })
            | (E::Unexpected { message: a, .. }, E::Unexpected { message: x, .. }) => a == x,
            (E::Corrupt { position: a, reason: b }, E::Corrupt { position: x, reason: y }) => (a, b) == (x, y),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn a_cause_is_kept_as_the_source_and_named_in_the_message() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let error = StoreError::unavailable_from("PostgreSQL at db:5432 is unreachable", io);
        assert_eq!(
            error.to_string(),
            "store unavailable: PostgreSQL at db:5432 is unreachable: connection refused"
        );
        let source = error.source().expect("the cause");
        assert_eq!(
            source.downcast_ref::<std::io::Error>().map(std::io::Error::kind),
            Some(std::io::ErrorKind::ConnectionRefused)
        );
        assert!(error.is_transient());
        assert!(StoreError::unavailable("locked").source().is_none());
        assert!(!StoreError::NotFound("sources/v1/source.mp4".into()).is_transient());
    }
}
