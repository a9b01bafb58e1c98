use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use vodsource_domain::VideoEvent;

use crate::projector::{EventMeta, Projector, ViewChange};

/// A video whose encoding failed for good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterView {
    /// Video id.
    pub video_id: String,
    /// The last attempt.
    pub attempt: u32,
    /// Why it failed.
    pub reason: String,
    /// When.
    pub failed_at: DateTime<Utc>,
}

/// Lists terminal encoding failures until they are retried or the video is deleted.
#[derive(Debug, Default, Clone, Copy)]
pub struct DeadLetterProjector;

impl DeadLetterProjector {
    /// The projection's name.
    pub const NAME: &'static str = "dead_letters";
}

impl Projector for DeadLetterProjector {
    type View = DeadLetterView;

    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn handles(&self, event_type: &str) -> bool {
        matches!(event_type, "EncodingFailed" | "EncodingRequested" | "VideoDeleted")
    }

    fn project(
        &self,
        current: Option<DeadLetterView>,
        event: VideoEvent,
        meta: EventMeta<'_>,
    ) -> ViewChange<DeadLetterView> {
        let event = &event;
        match event {
            VideoEvent::EncodingFailed {
                attempt,
                reason,
                retryable: false,
                ..
            } => ViewChange::Put(DeadLetterView {
                video_id: meta.stream_id.to_owned(),
                attempt: *attempt,
                reason: reason.clone(),
                failed_at: meta.occurred_at,
            }),
            VideoEvent::EncodingRequested { .. } | VideoEvent::VideoDeleted { .. } if current.is_some() => {
                ViewChange::Delete
            }
            _ => ViewChange::Unchanged(current),
        }
    }
}
