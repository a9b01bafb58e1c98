use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use vodsource_domain::{EncodeStage, Failure, Stage, VideoEvent};

use crate::projector::{EventMeta, Projector, ViewChange};

/// Where a video's encoding is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusView {
    /// Video id.
    pub video_id: String,
    /// Lifecycle stage.
    pub stage: Stage,
    /// Current attempt (0 before the first request).
    pub attempt: u32,
    /// Worker holding the current attempt.
    pub lease_holder: Option<String>,
    /// When that lease lapses.
    pub lease_until: Option<DateTime<Utc>>,
    /// Step the worker last reported.
    pub encode_stage: Option<EncodeStage>,
    /// Overall percent the worker last reported.
    pub percent: f64,
    /// Percent per rendition (100 once encoded).
    pub renditions: BTreeMap<String, f64>,
    /// Whether the current attempt plays (while encoding, or encoded).
    #[serde(default)]
    pub playable: bool,
    /// When it became playable.
    #[serde(default)]
    pub playable_at: Option<DateTime<Utc>>,
    /// Frames per second last reported.
    pub fps: Option<f64>,
    /// Seconds left, last reported.
    pub eta_seconds: Option<u32>,
    /// The last failure.
    pub last_error: Option<Failure>,
    /// Claimable from (after a requeue backoff).
    pub not_before: Option<DateTime<Utc>>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Stream version of the last change.
    pub version: u64,
}

/// Builds the encoding status of each video.
#[derive(Debug, Default, Clone, Copy)]
pub struct StatusProjector;

impl StatusProjector {
    /// The projection's name.
    pub const NAME: &'static str = "status";
}

impl Projector for StatusProjector {
    type View = StatusView;

    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn handles(&self, event_type: &str) -> bool {
        !matches!(event_type, "VideoPublished" | "VideoUnpublished" | "MetadataUpdated")
    }

    fn project(&self, current: Option<StatusView>, event: VideoEvent, meta: EventMeta<'_>) -> ViewChange<StatusView> {
        let event = &event;
        let existed = current.is_some();
        let mut view = match (current, event) {
            (None, VideoEvent::VideoRegistered { .. }) => StatusView {
                video_id: meta.stream_id.to_owned(),
                stage: Stage::AwaitingUpload,
                attempt: 0,
                lease_holder: None,
                lease_until: None,
                encode_stage: None,
                percent: 0.0,
                renditions: BTreeMap::new(),
                playable: false,
                playable_at: None,
                fps: None,
                eta_seconds: None,
                last_error: None,
                not_before: None,
                updated_at: meta.occurred_at,
                version: meta.version,
            },
            (Some(_), VideoEvent::VideoDeleted { .. }) => return ViewChange::Delete,
            (Some(current), _) => current,
            (None, _) => return ViewChange::Unchanged(None),
        };
        match event {
            VideoEvent::VideoRegistered { .. } if existed => return ViewChange::Unchanged(Some(view)),
            VideoEvent::SourceUploaded { .. } => view.stage = Stage::Uploaded,
            VideoEvent::SourceIngestFailed { reason } => {
                view.stage = Stage::Failed;
                view.last_error = Some(Failure {
                    attempt: 0,
                    reason: reason.clone(),
                    retryable: false,
                });
            }
            VideoEvent::EncodingRequested { attempt } => {
                view.new_attempt(*attempt, None);
                view.last_error = None;
            }
            VideoEvent::EncodingRequeued {
                attempt, not_before, ..
            } => view.new_attempt(*attempt, Some(*not_before)),
            VideoEvent::EncodingClaimed {
                worker_id, lease_until, ..
            } => {
                view.stage = Stage::Encoding;
                view.lease_holder = Some(worker_id.clone());
                view.lease_until = Some(*lease_until);
                view.not_before = None;
            }
            VideoEvent::SourceProbed { .. } => view.encode_stage = Some(EncodeStage::Probe),
            VideoEvent::EncodingProgressed {
                stage,
                rendition,
                percent,
                fps,
                eta_seconds,
                lease_until,
                ..
            } => {
                view.encode_stage = Some(*stage);
                view.percent = *percent;
                view.fps = *fps;
                view.eta_seconds = *eta_seconds;
                view.lease_until = Some(*lease_until);
                if let Some(name) = rendition {
                    let entry = view.renditions.entry(name.clone()).or_insert(0.0);
                    *entry = entry.max(*percent);
                }
            }
            VideoEvent::RenditionEncoded { rendition, .. } => {
                view.renditions.insert(rendition.name.clone(), 100.0);
            }
            VideoEvent::VideoPlayable { .. } => {
                view.playable = true;
                view.playable_at = Some(meta.occurred_at);
            }
            VideoEvent::EncodingCompleted { .. } => {
                view.stage = Stage::Ready;
                if !view.playable {
                    view.playable = true;
                    view.playable_at = Some(meta.occurred_at);
                }
                view.percent = 100.0;
                view.eta_seconds = Some(0);
                view.lease_holder = None;
                view.lease_until = None;
                view.last_error = None;
            }
            VideoEvent::EncodingFailed {
                attempt,
                reason,
                retryable,
                ..
            } => {
                view.stage = if *retryable { Stage::Retrying } else { Stage::Failed };
                view.lease_holder = None;
                view.lease_until = None;
                view.playable = false;
                view.playable_at = None;
                view.last_error = Some(Failure {
                    attempt: *attempt,
                    reason: reason.clone(),
                    retryable: *retryable,
                });
            }
            VideoEvent::VideoRegistered { .. } => {}
            // The chunks of a split attempt show through its progress reports.
            VideoEvent::VideoPublished {}
            | VideoEvent::VideoUnpublished {}
            | VideoEvent::MetadataUpdated { .. }
            | VideoEvent::VideoDeleted { .. }
            | VideoEvent::EncodingPlanned { .. }
            | VideoEvent::ChunkClaimed { .. }
            | VideoEvent::ChunkReleased { .. }
            | VideoEvent::ChunkEncoded { .. } => return ViewChange::Unchanged(Some(view)),
        }
        view.updated_at = meta.occurred_at;
        view.version = meta.version;
        ViewChange::Put(view)
    }
}

impl StatusView {
    fn new_attempt(&mut self, attempt: u32, not_before: Option<DateTime<Utc>>) {
        self.stage = Stage::Queued;
        self.attempt = attempt;
        self.not_before = not_before;
        self.lease_holder = None;
        self.lease_until = None;
        self.encode_stage = None;
        self.percent = 0.0;
        self.fps = None;
        self.eta_seconds = None;
        self.renditions.clear();
        self.playable = false;
        self.playable_at = None;
    }
}
