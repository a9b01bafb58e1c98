//! The encoding worker.
//!
//! Owns turning an uploaded source into an adaptive-bitrate ladder: probe, one decode feeding
//! every rung (each scaled from the next larger one), H.264/AAC encodes on their own threads,
//! HLS (fMP4/CMAF) and DASH over the same segments, poster and thumbnail sprite; and the worker
//! that claims encoding attempts from the event log, reports probe, progress (which extends the
//! lease), renditions and completion, and stops when the video is deleted or the lease is lost.
//! It knows the domain and the commands' ports, never SQL, HTTP or a particular object store.

pub mod chunking;
pub mod ladder;
pub mod manifest;
pub mod media;
pub mod memory;
pub mod outcome;
pub mod progressive;
pub mod stats;
pub mod worker;

pub use ladder::LadderConfig;
pub use media::limits::SourceLimits;
pub use stats::{EncoderStats, StatsSnapshot};
pub use worker::{JobOutcome, Worker, WorkerConfig, WorkerError};
