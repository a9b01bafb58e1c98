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
    /// This worker wrote its share of a chunked attempt; another worker writes the rest and
    /// completes it.
    ChunksWritten {
        /// The video.
        video_id: String,
        /// The attempt.
        attempt: u32,
        /// The chunks this worker wrote.
        chunks: Vec<u32>,
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
