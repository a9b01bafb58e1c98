//! Adapters to real services, each implementing ports of `commands` or `projections`; one
//! folder per adapter, and every distributed one behind a Cargo feature of its name (all on
//! by default; without them this is the embedded shape alone).
//!
//! Embedded, always built:
//! - [`sqlite`]: the event store (one file, WAL, group commit through one writer) and the
//!   view store (views, checkpoints, leases, timeouts, idempotency keys in one file).
//! - [`embedded_log`]: the stream (a durable partitioned log with consumer-group offsets).
//! - [`local`]: the object store in a folder.
//!
//! Distributed:
//! - [`postgres`] (feature `postgres`): the event store (group commit; appends serialized on
//!   one head row so positions are dense and commit-ordered; LISTEN/NOTIFY for live tailing).
//! - [`dynamodb`] (`dynamodb`): the view store, leases, checkpoints, deadlines, the job queue
//!   and idempotency keys.
//! - [`kafka`] (`kafka`) and [`kinesis`] (`kinesis`): the stream.
//! - [`s3`] (`s3`): the object store, presigned uploads, the bucket's setup.
//! - [`aws`]: the AWS SDK's configuration, shared by the AWS adapters.
//!
//! Always built too: [`egress`], the requests made to URLs users name (a source to ingest),
//! every address checked against server-side request forgery.
//!
//! Shared: [`append`] (the group commit and append planning both event stores run), and
//! [`open`] and [`streams`], which pick an adapter from the URL in configuration (a URL whose
//! adapter this build leaves out is refused with the feature's name).
//!
//! Service-specific errors become the ports' `StoreError` in each adapter and never travel
//! further.

pub(crate) mod append;
pub mod aws;
#[cfg(feature = "dynamodb")]
pub mod dynamodb;
pub mod egress;
pub mod embedded_log;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "kinesis")]
pub mod kinesis;
pub mod local;
pub mod open;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "s3")]
pub mod s3;
pub mod sqlite;
pub mod streams;

pub use embedded_log::{EmbeddedConsumer, EmbeddedLog};
pub use local::LocalObjectStore;
pub use open::{open_event_log, open_object_store, open_view_store, EventLogUrl, Views};
pub use streams::{StreamUrl, Streams};
pub use vodsource_commands::ports::ShardCoordination;
