use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use crate::values::{ChunkOutput, ChunkSpan, EncodeStage, EncodingCost, Manifests, Rendition, SourceProbe};

/// The schema version every event is written with today. Older versions are upcast on read.
pub const EVENT_SCHEMA_VERSION: u32 = 1;

/// Everything that can happen to a video. Serialized externally tagged: `{"VideoRegistered": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)] // the fields are described on the command that produces them
pub enum VideoEvent {
    /// A video exists and awaits its source.
    VideoRegistered {
        owner: String,
        title: String,
        description: String,
        tags: Vec<String>,
        filename: String,
        content_type: String,
        size_bytes: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        source_url: Option<String>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        publish_when_playable: bool,
    },
    /// The source could not be fetched from the video's `source_url`: a terminal failure
    /// (the address is refused, the server refused, the file is too large, or every attempt
    /// failed). The video takes no source after it.
    SourceIngestFailed { reason: String },
    /// The source bytes are in the object store. `checksum` is the store's tag of exactly
    /// these bytes (S3's ETag), when it keeps one.
    SourceUploaded {
        object_key: String,
        size_bytes: u64,
        checksum: Option<String>,
    },
    /// An encoding attempt is wanted. `attempt` counts from 1 over the video's life.
    EncodingRequested { attempt: u32 },
    /// A worker won the claim of an attempt until `lease_until`.
    EncodingClaimed {
        attempt: u32,
        worker_id: String,
        lease_until: DateTime<Utc>,
    },
    /// The source's streams as the worker found them.
    SourceProbed {
        attempt: u32,
        worker_id: String,
        probe: SourceProbe,
    },
    /// Progress of the current attempt; also extends the lease.
    EncodingProgressed {
        attempt: u32,
        worker_id: String,
        stage: EncodeStage,
        rendition: Option<String>,
        percent: f64,
        fps: Option<f64>,
        eta_seconds: Option<u32>,
        lease_until: DateTime<Utc>,
    },
    /// The attempt is split into chunks, each a unit of work any worker may claim; the
    /// attempt completes when every chunk is written.
    EncodingPlanned {
        attempt: u32,
        worker_id: String,
        chunks: Vec<ChunkSpan>,
    },
    /// A worker won the claim of one chunk until `lease_until` (the attempt's lease lasts
    /// at least as long).
    ChunkClaimed {
        attempt: u32,
        chunk: u32,
        worker_id: String,
        lease_until: DateTime<Utc>,
    },
    /// A chunk's holder gave it up unwritten; any worker may claim it now.
    ChunkReleased {
        attempt: u32,
        chunk: u32,
        worker_id: String,
        reason: String,
    },
    /// A chunk is written: its segments are stored.
    ChunkEncoded {
        attempt: u32,
        chunk: u32,
        worker_id: String,
        output: ChunkOutput,
    },
    /// One rung of the ladder is written.
    RenditionEncoded {
        attempt: u32,
        worker_id: String,
        rendition: Rendition,
    },
    /// The attempt's manifests play while it goes on encoding: HLS `EVENT` playlists that
    /// grow, a dynamic MPD. The video may be published from now on.
    VideoPlayable {
        attempt: u32,
        worker_id: String,
        manifests: Manifests,
    },
    /// Every output is written; the video can be published.
    EncodingCompleted {
        attempt: u32,
        worker_id: String,
        manifests: Manifests,
        poster_key: Option<String>,
        thumbnails_key: Option<String>,
        duration_ms: u64,
        cost: EncodingCost,
    },
    /// An attempt failed. `retryable: false` is terminal (a dead letter); `worker_id` is
    /// `None` when the process manager gave up after the last attempt.
    EncodingFailed {
        attempt: u32,
        worker_id: Option<String>,
        reason: String,
        retryable: bool,
    },
    /// A failed or abandoned attempt is queued again as `attempt`, claimable from `not_before`.
    EncodingRequeued {
        attempt: u32,
        reason: String,
        not_before: DateTime<Utc>,
    },
    /// Viewers may play the video.
    VideoPublished {},
    /// Viewers may no longer play the video.
    VideoUnpublished {},
    /// Changed fields only; `None` means unchanged.
    MetadataUpdated {
        title: Option<String>,
        description: Option<String>,
        tags: Option<Vec<String>>,
    },
    /// The video is gone for users; its history stays.
    VideoDeleted { reason: Option<String> },
}

impl VideoEvent {
    /// Every event type name, as stored.
    pub const TYPES: [&'static str; 20] = [
        "VideoRegistered",
        "SourceIngestFailed",
        "SourceUploaded",
        "EncodingRequested",
        "EncodingClaimed",
        "SourceProbed",
        "EncodingProgressed",
        "RenditionEncoded",
        "VideoPlayable",
        "EncodingPlanned",
        "ChunkClaimed",
        "ChunkReleased",
        "ChunkEncoded",
        "EncodingCompleted",
        "EncodingFailed",
        "EncodingRequeued",
        "VideoPublished",
        "VideoUnpublished",
        "MetadataUpdated",
        "VideoDeleted",
    ];

    /// The stored type name of this event.
    pub fn type_name(&self) -> &'static str {
        match self {
            VideoEvent::VideoRegistered { .. } => "VideoRegistered",
            VideoEvent::SourceIngestFailed { .. } => "SourceIngestFailed",
            VideoEvent::SourceUploaded { .. } => "SourceUploaded",
            VideoEvent::EncodingRequested { .. } => "EncodingRequested",
            VideoEvent::EncodingClaimed { .. } => "EncodingClaimed",
            VideoEvent::SourceProbed { .. } => "SourceProbed",
            VideoEvent::EncodingProgressed { .. } => "EncodingProgressed",
            VideoEvent::RenditionEncoded { .. } => "RenditionEncoded",
            VideoEvent::VideoPlayable { .. } => "VideoPlayable",
            VideoEvent::EncodingPlanned { .. } => "EncodingPlanned",
            VideoEvent::ChunkClaimed { .. } => "ChunkClaimed",
            VideoEvent::ChunkReleased { .. } => "ChunkReleased",
            VideoEvent::ChunkEncoded { .. } => "ChunkEncoded",
            VideoEvent::EncodingCompleted { .. } => "EncodingCompleted",
            VideoEvent::EncodingFailed { .. } => "EncodingFailed",
            VideoEvent::EncodingRequeued { .. } => "EncodingRequeued",
            VideoEvent::VideoPublished {} => "VideoPublished",
            VideoEvent::VideoUnpublished {} => "VideoUnpublished",
            VideoEvent::MetadataUpdated { .. } => "MetadataUpdated",
            VideoEvent::VideoDeleted { .. } => "VideoDeleted",
        }
    }
}

impl DomainEvent for VideoEvent {
    fn event_type(&self) -> String {
        self.type_name().to_owned()
    }

    fn event_version(&self) -> String {
        EVENT_SCHEMA_VERSION.to_string()
    }
}
