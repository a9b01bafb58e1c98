use chrono::{DateTime, Utc};

use crate::Stage;

/// Why a command was refused. Each variant is one invariant.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VideoError {
    /// The video was never registered.
    #[error("video is not registered")]
    NotRegistered,
    /// `Register` sent to an existing video.
    #[error("video is already registered")]
    AlreadyRegistered,
    /// Any command after `Delete`.
    #[error("video is deleted")]
    Deleted,
    /// Title, description or tags out of bounds.
    #[error("invalid {field}: {reason}")]
    InvalidMetadata {
        /// `title`, `description` or `tags`.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Declared file name, content type or size refused.
    #[error("invalid source: {0}")]
    InvalidSource(String),
    /// The stored object is not the size that was declared.
    #[error("uploaded size {actual} does not match the declared size {declared}")]
    SizeMismatch {
        /// Declared at registration.
        declared: u64,
        /// Found in the object store.
        actual: u64,
    },
    /// Encoding asked for before the source is uploaded.
    #[error("the source is not uploaded yet")]
    SourceNotUploaded,
    /// Publish asked for before the video plays (playable while encoding, or encoded).
    #[error("video cannot be published before it plays: playable while encoding, or encoded (stage: {0})")]
    NotEncoded(Stage),
    /// The command does not fit the current stage.
    #[error("cannot {action} while the video is {stage}")]
    InvalidState {
        /// What was asked.
        action: &'static str,
        /// Where the video is.
        stage: Stage,
    },
    /// Someone else holds a live lease on the attempt.
    #[error("attempt {attempt} is claimed by {holder} until {until}")]
    LeaseHeld {
        /// The claimed attempt.
        attempt: u32,
        /// The worker holding it.
        holder: String,
        /// When the lease lapses.
        until: DateTime<Utc>,
    },
    /// The attempt's lease lapsed; it must be requeued, not reused.
    #[error("the lease on attempt {attempt} expired at {until}")]
    LeaseExpired {
        /// The attempt.
        attempt: u32,
        /// When it lapsed.
        until: DateTime<Utc>,
    },
    /// A worker other than the claim holder reported.
    #[error("worker {worker} does not hold the claim on attempt {attempt}")]
    NotClaimHolder {
        /// The reporting worker.
        worker: String,
        /// The attempt.
        attempt: u32,
    },
    /// The command names an attempt that is not the current one.
    #[error("attempt {given} is stale; the current attempt is {current}")]
    StaleAttempt {
        /// In the command.
        given: u32,
        /// On the video.
        current: u32,
    },
    /// A claim before the requeue backoff has passed.
    #[error("attempt {attempt} may not be claimed before {until}")]
    BackoffActive {
        /// The attempt.
        attempt: u32,
        /// When it may be claimed.
        until: DateTime<Utc>,
    },
    /// Completion reported with no rendition recorded.
    #[error("an encoding cannot complete without renditions")]
    NoRenditions,
    /// A chunk command that does not fit the attempt's chunks.
    #[error("chunk {chunk} of attempt {attempt}: {reason}")]
    Chunk {
        /// The attempt.
        attempt: u32,
        /// The chunk (its index in the plan).
        chunk: u32,
        /// What is wrong.
        reason: String,
    },
    /// A plan of chunks that cannot be followed.
    #[error("invalid chunk plan: {0}")]
    InvalidPlan(String),
    /// Progress outside 0–100 or a zero lease.
    #[error("invalid progress: {0}")]
    InvalidProgress(String),
}
