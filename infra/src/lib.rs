//! Adapters to real services, each implementing a port of `commands` or `projections`.
//!
//! - [`sqlite`]: the embedded event store (one file, WAL, group commit through one writer)
//!   and the embedded view store (views, checkpoints, leases, timeouts in one file).
//! - [`postgres`]: the distributed event store (group commit; appends serialized on one head
//!   row so positions are dense and commit-ordered; LISTEN/NOTIFY for live tailing).
//!
//! - [`stream`]: the embedded stream (a durable partitioned log with consumer-group offsets).
//!
//! Service-specific errors become the ports' `StoreError` here and never travel further.

mod group;
pub mod kafka;
mod objects;
mod plan;
pub mod postgres;
pub mod sqlite;
pub mod stream;
mod url;

pub use objects::LocalObjectStore;
pub use stream::{EmbeddedConsumer, EmbeddedLog};
pub use url::{open_event_log, open_object_store, open_view_store, EventLogUrl};
