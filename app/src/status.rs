//! The lifecycle status the catalog shows and filters on.

use serde::{Deserialize, Serialize};
use vodsource_domain::Stage;

/// Where a video is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Enum))]
#[cfg_attr(feature = "openapi", oai(rename_all = "snake_case"))]
#[serde(rename_all = "snake_case")]
pub enum VideoStatus {
    /// Registered; waiting for the source upload.
    AwaitingUpload,
    /// The source is stored.
    Uploaded,
    /// Waiting for an encoder.
    Queued,
    /// An encoder is working on it.
    Encoding,
    /// The last attempt failed; another will follow.
    Retrying,
    /// Encoded; can be published.
    Ready,
    /// Encoding failed for good (retry with `POST /videos/{id}/retry`).
    Failed,
}

impl VideoStatus {
    /// From the domain's stage.
    pub fn from_stage(stage: Stage) -> Self {
        match stage {
            Stage::Unregistered | Stage::AwaitingUpload => Self::AwaitingUpload,
            Stage::Uploaded => Self::Uploaded,
            Stage::Queued => Self::Queued,
            Stage::Encoding => Self::Encoding,
            Stage::Retrying => Self::Retrying,
            Stage::Ready => Self::Ready,
            Stage::Failed => Self::Failed,
        }
    }

    /// The stage's stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AwaitingUpload => "awaiting_upload",
            Self::Uploaded => "uploaded",
            Self::Queued => "queued",
            Self::Encoding => "encoding",
            Self::Retrying => "retrying",
            Self::Ready => "ready",
            Self::Failed => "failed",
        }
    }
}
