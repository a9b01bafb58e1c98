//! QoE analytics.
//!
//! Owns what players report and what becomes of it: the beacon schema (CMCD names where one
//! exists) and its validation, one event at a time so a bad event never costs the good ones
//! in its batch. It knows nothing of HTTP, streams or storage.

pub mod beacon;
pub mod lake;
pub mod watch;

pub use beacon::{
    judge_batch, parse_batch, BatchError, BeaconError, EventResult, ObjectType, QoeEvent, QoeEventType,
    MAX_BATCH_BYTES, MAX_BATCH_EVENTS,
};
pub use watch::WatchState;
