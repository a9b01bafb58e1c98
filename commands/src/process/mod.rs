//! Process managers: the reactions that need no encoder.
//!
//! [`EncodingSupervisor`] turns `SourceUploaded` into `RequestEncoding`, requeues retryable
//! failures with exponential backoff, tracks each claim's lease as a durable deadline and
//! requeues (or, after the last attempt, fails for good) attempts whose lease lapsed.

mod relay;
mod supervisor;

pub use relay::{Relay, RelayError, VIDEO_EVENTS_TOPIC};
pub use supervisor::{EncodingSupervisor, ProcessError, SupervisorConfig};
