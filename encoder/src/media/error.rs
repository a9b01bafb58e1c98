//! Why a transcode failed, and whether another attempt may succeed.

use ffmpeg_next as ffmpeg;

use crate::ladder::PlanError;

/// What went wrong, and whether trying again can help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaErrorKind {
    /// The source itself: another attempt fails the same way.
    Source,
    /// Reading or writing files: another attempt may succeed.
    Io,
    /// An encoder or muxer failed unexpectedly: another attempt may succeed.
    Internal,
    /// The job was cancelled.
    Cancelled,
}

/// Why a transcode did not produce a ladder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct MediaError {
    /// The class of failure.
    pub kind: MediaErrorKind,
    /// A reason a person understands.
    pub message: String,
}

impl MediaError {
    pub(crate) fn bad(message: impl Into<String>) -> Self {
        Self {
            kind: MediaErrorKind::Source,
            message: message.into(),
        }
    }

    pub(crate) fn io(message: impl Into<String>) -> Self {
        Self {
            kind: MediaErrorKind::Io,
            message: message.into(),
        }
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self {
            kind: MediaErrorKind::Internal,
            message: message.into(),
        }
    }

    pub(crate) fn cancelled(message: impl Into<String>) -> Self {
        Self {
            kind: MediaErrorKind::Cancelled,
            message: message.into(),
        }
    }

    /// Whether another attempt may succeed.
    pub fn retryable(&self) -> bool {
        matches!(self.kind, MediaErrorKind::Io | MediaErrorKind::Internal)
    }

    pub(crate) fn ffmpeg(context: &str, error: ffmpeg::Error) -> Self {
        Self::internal(format!("{context}: {error}"))
    }
}

impl From<PlanError> for MediaError {
    fn from(error: PlanError) -> Self {
        Self::bad(error.to_string())
    }
}
