use serde::{Deserialize, Serialize};

use crate::values::{ChunkOutput, ChunkSpan, EncodeStage, EncodingCost, Manifests, Rendition, SourceProbe};

/// Everything that can be asked of a video.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum VideoCommand {
    /// Create the video and declare the source that will be uploaded.
    Register {
        /// Principal that owns the video.
        owner: String,
        /// 1–200 characters.
        title: String,
        /// Up to 5000 characters.
        description: String,
        /// Up to 20 tags of up to 40 characters.
        tags: Vec<String>,
        /// The uploader's file name, without path.
        filename: String,
        /// `video/*`.
        content_type: String,
        /// Declared size of the source in bytes; 0 (undeclared, up to the policy's limit)
        /// only for a source fetched from `source_url`.
        size_bytes: u64,
        /// Where this service fetches the source from, instead of an upload (an absolute
        /// URL; the application checks its scheme and the fetcher its addresses).
        source_url: Option<String>,
        /// Publish on its own as soon as it can be played (playable or, at the latest,
        /// encoded), once.
        publish_when_playable: bool,
    },
    /// Fetching the source from the video's `source_url` failed for good.
    FailIngest {
        /// Why, for the owner to read.
        reason: String,
    },
    /// The source is stored; the caller has checked the object and passes what it found.
    CompleteUpload {
        /// Where the source is in the object store.
        object_key: String,
        /// Size of the stored object.
        size_bytes: u64,
        /// Checksum or entity tag of the stored object, if known.
        checksum: Option<String>,
    },
    /// Ask for the first encoding attempt (the upload process manager sends it).
    RequestEncoding,
    /// Ask for another round of attempts after a terminal failure (the owner sends it).
    RetryEncoding,
    /// A worker claims an attempt for `lease_secs` from now.
    ClaimEncoding {
        /// The claiming worker.
        worker_id: String,
        /// The attempt the worker saw requested.
        attempt: u32,
        /// Lease length in seconds.
        lease_secs: u32,
    },
    /// The claim holder reports the probe.
    RecordProbe {
        /// The claim holder.
        worker_id: String,
        /// The attempt it holds.
        attempt: u32,
        /// What it found.
        probe: SourceProbe,
    },
    /// The claim holder reports progress and extends its lease by `lease_secs` from now.
    RecordProgress {
        /// The claim holder.
        worker_id: String,
        /// The attempt it holds.
        attempt: u32,
        /// Current step.
        stage: EncodeStage,
        /// Rung being worked on, if any.
        rendition: Option<String>,
        /// 0 to 100.
        percent: f64,
        /// Frames per second being processed.
        fps: Option<f64>,
        /// Estimated seconds left.
        eta_seconds: Option<u32>,
        /// New lease length in seconds.
        lease_secs: u32,
    },
    /// The claim holder splits the attempt into chunks any worker may claim (after the probe).
    PlanChunks {
        /// The claim holder.
        worker_id: String,
        /// The attempt it holds.
        attempt: u32,
        /// The chunks: runs of frames from 0 to the end, each after the one before, and the
        /// audio at most once.
        chunks: Vec<ChunkSpan>,
    },
    /// A worker claims one chunk of a planned attempt, for `lease_secs`; a chunk whose lease
    /// lapsed may be claimed again.
    ClaimChunk {
        /// The claiming worker.
        worker_id: String,
        /// The current attempt.
        attempt: u32,
        /// The chunk's index in the plan.
        chunk: u32,
        /// Lease length in seconds.
        lease_secs: u32,
    },
    /// The holder of a chunk gives it up unwritten (it is stopping), so that another worker
    /// claims it at once instead of when the lease lapses.
    ReleaseChunk {
        /// The chunk's holder.
        worker_id: String,
        /// The current attempt.
        attempt: u32,
        /// The chunk's index in the plan.
        chunk: u32,
        /// Why, for the history.
        reason: String,
    },
    /// The holder of a chunk reports it written.
    CompleteChunk {
        /// The chunk's holder.
        worker_id: String,
        /// The attempt.
        attempt: u32,
        /// The chunk's index in the plan.
        chunk: u32,
        /// What it wrote and cost.
        output: ChunkOutput,
    },
    /// The claim holder reports one finished rung.
    RecordRendition {
        /// The claim holder.
        worker_id: String,
        /// The attempt it holds.
        attempt: u32,
        /// The finished rung.
        rendition: Rendition,
    },
    /// The claim holder reports that the attempt's manifests play: the first segments of the
    /// rungs players start with are stored and the encode keeps ahead of playback.
    MarkPlayable {
        /// The claim holder.
        worker_id: String,
        /// The attempt it holds.
        attempt: u32,
        /// Manifest keys (the same the completion will record).
        manifests: Manifests,
    },
    /// The claim holder reports the whole ladder written.
    CompleteEncoding {
        /// The claim holder.
        worker_id: String,
        /// The attempt it holds.
        attempt: u32,
        /// Manifest keys.
        manifests: Manifests,
        /// Poster image key.
        poster_key: Option<String>,
        /// Thumbnail sprite WebVTT key.
        thumbnails_key: Option<String>,
        /// Duration of the encoded media.
        duration_ms: u64,
        /// What the transcode cost.
        cost: EncodingCost,
    },
    /// The claim holder reports a failed attempt.
    FailEncoding {
        /// The claim holder.
        worker_id: String,
        /// The attempt it holds.
        attempt: u32,
        /// A reason a person understands.
        reason: String,
        /// Whether another attempt may succeed.
        retryable: bool,
    },
    /// The process manager recovers from a failed or lapsed `attempt`: it queues the next
    /// attempt after an exponential backoff, or, once `max_attempts` of this round are used,
    /// records a terminal failure (a dead letter).
    RequeueEncoding {
        /// The attempt that failed or whose lease lapsed.
        attempt: u32,
        /// Why.
        reason: String,
        /// Attempts allowed per round (a round starts at `RequestEncoding` or `RetryEncoding`).
        max_attempts: u32,
        /// Backoff before the second attempt; doubles each attempt.
        backoff_base_secs: u32,
        /// Ceiling of the backoff.
        backoff_max_secs: u32,
    },
    /// Change title, description or tags; `None` leaves a field as it is.
    UpdateMetadata {
        /// New title.
        title: Option<String>,
        /// New description.
        description: Option<String>,
        /// New tags.
        tags: Option<Vec<String>>,
    },
    /// Let viewers play the video; once it is playable (while encoding) or encoded.
    Publish,
    /// Stop playback.
    Unpublish,
    /// Delete the video (its history stays).
    Delete {
        /// Why, if given.
        reason: Option<String>,
    },
}

impl VideoCommand {
    /// The command's name in logs, spans and metrics (`register`, `claim_encoding`, …).
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::Register { .. } => "register",
            Self::FailIngest { .. } => "fail_ingest",
            Self::CompleteUpload { .. } => "complete_upload",
            Self::RequestEncoding => "request_encoding",
            Self::RetryEncoding => "retry_encoding",
            Self::ClaimEncoding { .. } => "claim_encoding",
            Self::RecordProbe { .. } => "record_probe",
            Self::RecordProgress { .. } => "record_progress",
            Self::RecordRendition { .. } => "record_rendition",
            Self::MarkPlayable { .. } => "mark_playable",
            Self::PlanChunks { .. } => "plan_chunks",
            Self::ClaimChunk { .. } => "claim_chunk",
            Self::ReleaseChunk { .. } => "release_chunk",
            Self::CompleteChunk { .. } => "complete_chunk",
            Self::CompleteEncoding { .. } => "complete_encoding",
            Self::FailEncoding { .. } => "fail_encoding",
            Self::RequeueEncoding { .. } => "requeue_encoding",
            Self::UpdateMetadata { .. } => "update_metadata",
            Self::Publish => "publish",
            Self::Unpublish => "unpublish",
            Self::Delete { .. } => "delete",
        }
    }
}
