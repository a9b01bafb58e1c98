//! Adapters to real services, each implementing a port of `commands` or `projections`.
//!
//! - [`sqlite`]: the embedded event store (one file, WAL, group commit through one writer)
//!   and the embedded view store (views, checkpoints, leases, timeouts in one file).
//! - [`postgres`]: the distributed event store (group commit; appends serialized on one head
//!   row so positions are dense and commit-ordered; LISTEN/NOTIFY for live tailing).
//!
//! - [`stream`]: the embedded stream (a durable partitioned log with consumer-group offsets);
//!   [`kafka`] and [`kinesis`] the distributed ones; [`streams`] picks one from configuration.
//! - [`aws`]: the AWS SDK's configuration, shared by the AWS adapters.
//! - [`dynamo`]: the view store, leases and checkpoints on DynamoDB.
//! - [`s3`]: the object store on S3; `LocalObjectStore` the embedded one (a folder).
//!
//! Service-specific errors become the ports' `StoreError` here and never travel further.

pub mod aws;
pub mod dynamo;
mod group;
pub mod kafka;
pub mod kinesis;
mod objects;
mod plan;
pub mod postgres;
pub mod s3;
mod sigv4;
pub mod sqlite;
pub mod stream;
pub mod streams;
mod url;

pub use objects::LocalObjectStore;
pub use stream::{EmbeddedConsumer, EmbeddedLog};
pub use streams::{StreamUrl, Streams};
pub use url::{open_event_log, open_object_store, open_view_store, EventLogUrl, Views};
