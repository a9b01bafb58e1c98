//! The embedded shape: SQLite files in the data directory.

mod connect;
mod coordination;
mod db;
mod event_log;
mod view_store;

pub use connect::{SqliteSettings, Synchronous};
pub use event_log::SqliteEventLog;
pub use view_store::SqliteViewStore;
