//! How an encoding job ended: what the worker returns and its statistics count.

/// How one job ended.
#[derive(Debug, Clone, PartialEq)]
pub enum JobOutcome {
    /// The ladder is recorded.
    Completed {
        /// The video.
        video_id: String,
        /// The attempt.
        attempt: u32,
    },
    /// The attempt is recorded as failed.
    Failed {
        /// The video.
        video_id: String,
        /// The attempt.
        attempt: u32,
        /// Why.
        reason: String,
        /// Whether it will be tried again.
        retryable: bool,
    },
    /// The video was deleted or the lease was lost; partial outputs were removed.
    Abandoned {
        /// The video.
        video_id: String,
        /// The attempt.
        attempt: u32,
        /// Why.
        reason: String,
    },
}
