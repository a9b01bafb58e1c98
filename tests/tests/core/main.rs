//! Integration tests of the event-sourced core, against SQLite and a real PostgreSQL.

mod conformance;
#[cfg(feature = "distributed")]
mod dynamo;
mod faults;
mod helpers;
#[cfg(feature = "distributed")]
mod kafka;
#[cfg(feature = "distributed")]
mod kinesis;
mod lake;
#[cfg(feature = "distributed")]
mod pg_ordering;
mod process;
mod projections;
#[cfg(feature = "distributed")]
mod proxy;
#[cfg(feature = "distributed")]
mod s3;
mod stream;
mod webhook_sender;
mod webhook_signature;
