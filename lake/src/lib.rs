//! The QoE data lake: the tables Athena and DuckDB read, their Arrow columns and Parquet
//! files, and the sink that takes a stream into them through the stream and object store
//! ports.
//!
//! - [`tables`]: the tables (`qoe_events`, `video_events`), their columns, partitions, file
//!   keys and Athena DDL: one definition every writer and reader uses.
//! - [`columnar`]: stream records to Arrow columns.
//! - [`writer`]: Parquet files with each column's encoding and statistics chosen once.
//! - [`sink`]: the exactly-once sink (stream offsets in the file keys, flush markers).
//! - [`query`], [`report`], [`chart`] (feature `sql`, on by default): local SQL over the lake
//!   with DataFusion (`vodsource qoe query`, `qoe report`), the same table names and
//!   partitions as Athena, and the report's PNG chart.
//!
//! What players report, and its validation, is `vodsource-qoe`'s.

#[cfg(feature = "sql")]
pub mod chart;
pub mod columnar;
#[cfg(feature = "sql")]
pub mod query;
#[cfg(feature = "sql")]
pub mod report;
pub mod sink;
pub mod tables;
pub mod writer;
