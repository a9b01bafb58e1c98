//! What a store (event log, view store, coordination, objects) can fail with: one taxonomy for
//! every port, so callers decide by kind (retry, conflict, not found, refuse) and never by
//! message. Each adapter maps its client's errors into these in one place, keeping the
//! client's error as the [`std::error::Error::source`] so the cause chain survives.

use std::sync::Arc;

use uuid::Uuid;

/// The cause an adapter keeps: its client's own error.
pub type Cause = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// What a store can fail with.
#[derive(Debug, Clone)]
pub enum StoreError {
    /// The stream's version is not the expected one (optimistic concurrency on the log).
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
    GenerationConflict {
        /// The view.
        view: String,
        /// The generation written.
        generation: u32,
        /// The live generation, when known.
        live: Option<u32>,
    },
    /// An event id already stored with other content or elsewhere.
    DuplicateEventId {
        /// The id.
        event_id: Uuid,
    },
    /// The caller no longer holds the lease that fences its writes.
    LeaseLost(String),
    /// What was asked for does not exist (an object).
    NotFound(String),
    /// The request itself is malformed, or refused by the store's rules.
    Invalid(String),
    /// The store cannot be reached, is locked or throttles; retrying later may work.
    Unavailable {
        /// What failed, and the cause's own words.
        message: String,
        /// The client's error.
        source: Option<Cause>,
    },
    /// A stored row cannot be read.
    Corrupt {
        /// Its global position.
        position: u64,
        /// What is wrong.
        reason: String,
    },
    /// Anything else: a bug, or a failure no caller can act on.
    Unexpected {
        /// What failed, and the cause's own words.
        message: String,
        /// The client's error.
        source: Option<Cause>,
    },
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Conflict {
                stream_id,
                expected,
                actual,
            } => write!(f, "stream {stream_id}: expected version {expected}, found {actual}"),
            Self::GenerationConflict { view, generation, live } => {
                write!(
                    f,
                    "view {view}: generation {generation} is neither live nor being rebuilt"
                )?;
                match live {
                    Some(live) => write!(f, " (live: {live})"),
                    None => Ok(()),
                }
            }
            Self::DuplicateEventId { event_id } => {
                write!(f, "event {event_id} is already stored at another place in the log")
            }
            Self::LeaseLost(name) => write!(f, "the lease on {name} is held by another owner"),
            Self::NotFound(what) => write!(f, "not found: {what}"),
            Self::Invalid(why) => write!(f, "invalid append: {why}"),
            Self::Unavailable { message, .. } => write!(f, "store unavailable: {message}"),
            Self::Corrupt { position, reason } => write!(f, "event at position {position} is unreadable: {reason}"),
            Self::Unexpected { message, .. } => write!(f, "store error: {message}"),
        }
    }
}

/// The source is the client's own error (not the `Arc` holding it), so callers can downcast.
impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Unavailable {
                source: Some(cause), ..
            }
            | Self::Unexpected {
                source: Some(cause), ..
            } => Some(cause.as_ref()),
            _ => None,
        }
    }
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
