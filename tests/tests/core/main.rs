//! Integration tests of the event-sourced core, against SQLite and a real PostgreSQL.

mod conformance;
mod dynamo;
mod faults;
mod helpers;
mod kafka;
mod kinesis;
mod lake;
mod pg_ordering;
mod process;
mod projections;
mod proxy;
mod s3;
mod stream;
