//! The vodsource domain: the `Video` aggregate, its commands, events and invariants.
//!
//! Everything here is pure. Deciding (`handle`) and applying (`apply`) have no side effects;
//! whatever a decision needs from outside the aggregate — today only the time — comes through
//! [`VideoServices`]. This crate knows nothing of HTTP, SQL, streams or object stores.

mod aggregate;
mod command;
mod error;
mod event;
mod services;
mod values;

#[cfg(test)]
mod tests;

pub use aggregate::{Chunk, Claim, Failure, Video};
pub use command::VideoCommand;
pub use error::VideoError;
pub use event::{VideoEvent, EVENT_SCHEMA_VERSION};
pub use services::{Clock, Policy, VideoServices};
pub use values::{
    is_video_type, redact_paths, validate_chunk_plan, ChunkOutput, ChunkSegment, ChunkSpan, ChunkTrack, EncodeStage,
    EncodingCost, Manifests, Metadata, Rendition, SourceProbe, SpriteSheet, Stage, MAX_CHUNKS, MAX_DESCRIPTION_CHARS,
    MAX_SOURCE_URL_BYTES, MAX_TAGS, MAX_TAG_CHARS, MAX_TITLE_CHARS, VIDEO_TYPE_PATTERN,
};

/// The stream type of every video stream in the event store.
pub const VIDEO_STREAM_TYPE: &str = "video";
