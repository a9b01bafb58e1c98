//! QoE: what players report, and nothing about where it goes.
//!
//! - [`beacon`]: the beacon schema (CMCD names where one exists) and its validation, one
//!   event at a time so a bad event never costs the good ones in its batch; the JSON Schemas
//!   the OpenAPI document publishes.
//! - [`wire`]: the compact binary record a QoE event travels as on the stream.
//! - [`watch`]: the watch-state fold (where a viewer is in a video), which the watch-state
//!   projection runs.
//!
//! Pure (serde, no I/O), so the API and the projections depend on it without the lake's
//! Arrow, Parquet or SQL engine; those live in `vodsource-lake`.

pub mod beacon;
pub mod watch;
pub mod wire;

pub use beacon::{
    json_schemas, judge_batch, parse_batch, BatchError, BeaconError, EventResult, ObjectType, QoeEvent, QoeEventType,
    MAX_BATCH_BYTES, MAX_BATCH_EVENTS,
};
pub use watch::WatchState;

/// The stream topic QoE events travel on (the beacon endpoint publishes, the lake sink and the
/// watch-state projection consume).
pub const QOE_TOPIC: &str = "qoe-events";
