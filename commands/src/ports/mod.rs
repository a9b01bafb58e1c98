//! The ports (traits) that `infra` implements.

mod clock;
mod coordination;
mod event_log;

pub use clock::{ManualClock, SystemClock};
pub use coordination::{CheckpointStore, LeaseStore, TimeoutStore};
pub use event_log::{
    AppendRequest, Appended, EventLog, EventMetadata, ExpectedVersion, NewEvent, RecordedEvent, StoreError,
};
pub use vodsource_domain::Clock;
