//! QoE analytics.
//!
//! Owns what players report and what becomes of it: the beacon schema (CMCD names where one
//! exists) and its validation, one event at a time so a bad event never costs the good ones
//! in its batch; the lake's tables, their Arrow columns and Parquet files; and the sink that
//! takes a stream into the lake through the stream and object store ports.

pub mod beacon;
pub mod chart;
pub mod columnar;
pub mod lake;
pub mod lakefile;
pub mod query;
pub mod report;
pub mod sink;
pub mod watch;
pub mod wire;

pub use beacon::{
    json_schemas, judge_batch, parse_batch, BatchError, BeaconError, EventResult, ObjectType, QoeEvent, QoeEventType,
    MAX_BATCH_BYTES, MAX_BATCH_EVENTS,
};
pub use watch::WatchState;
