//! Integration tests of the event-sourced core, against SQLite and a real PostgreSQL.

mod conformance;
mod helpers;
