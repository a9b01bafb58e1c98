//! Read models of the video log.
//!
//! A [`Projector`] is a pure function from (current view, event) to a [`ViewChange`]. The
//! [`Runner`] tails the global log from the projection's durable checkpoint, folds a batch of
//! events over the views it touches, and commits the changed documents together with the new
//! checkpoint through the [`ViewStore`] port — a key-value shape with conditional writes, so a
//! DynamoDB adapter fits it as well as SQLite. [`rebuild`] replays from position 0 into a
//! shadow generation and swaps it in atomically.

mod catalog;
mod dead_letters;
mod projector;
mod rebuild;
mod runner;
mod status;
mod view_store;
mod watch_state;

pub use catalog::{catalog_sort_key, CatalogProjector, CatalogRendition, CatalogView, CATALOG_ALL};
pub use dead_letters::{DeadLetterProjector, DeadLetterView};
pub use projector::{EventMeta, IndexKey, Projector, ViewChange};
pub use rebuild::{rebuild, RebuildProgress};
pub use runner::{Runner, RunnerConfig, RunnerError};
pub use status::{StatusProjector, StatusView};
pub use view_store::{Doc, DocChange, IndexCursor, IndexedDoc, ProjectionState, ProjectionStatus, ViewStore};
pub use watch_state::{time_sort_key, viewer_partition, WatchStateError, WatchStateRunner, WATCH_STATE};

/// The names of the built-in projections, in the order they are started.
pub const PROJECTIONS: [&str; 3] = [CatalogProjector::NAME, StatusProjector::NAME, DeadLetterProjector::NAME];
