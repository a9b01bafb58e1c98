//! The distributed event store on PostgreSQL.

mod event_log;
mod schema;

pub use event_log::PgEventLog;
