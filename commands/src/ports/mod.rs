//! The ports (traits) that `infra` implements.

mod clock;
mod coordination;
mod error;
mod event_log;
mod fetch;
mod idempotency;
mod objects;
mod stream;
mod webhook;

pub use clock::{ManualClock, SystemClock};
pub use coordination::{CheckpointStore, JobQueue, LeaseKeeper, LeaseStore, TimeoutStore};
pub use error::{Cause, StoreError};
pub use event_log::{AppendRequest, Appended, EventLog, EventMetadata, ExpectedVersion, NewEvent, RecordedEvent};
pub use fetch::{Download, FetchError, Fetcher};
pub use idempotency::{IdempotencyStore, Reservation, StoredResponse};
pub use objects::{check_key, Access, ObjectMeta, ObjectStore, Part, PutError};
pub use stream::{
    Delivery, ShardCheckpoint, ShardCheckpointStore, ShardCoordination, StreamConsumer, StreamError, StreamProducer,
    StreamRecord,
};
pub use vodsource_domain::Clock;
pub use webhook::{SendError, WebhookRequest, WebhookResponse, WebhookSender};
