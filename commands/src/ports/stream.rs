//! Streams of records with partitions, offsets and consumer groups: the QoE stream and the
//! `video-events` relay. Adapters: the embedded log, Kafka, Kinesis.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::error::StoreError;

/// A record to publish: the key picks the partition, so one key's records stay in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRecord {
    /// Partition key (a session id, a video id).
    pub key: String,
    /// The payload.
    pub value: Vec<u8>,
}

/// A record as a consumer receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Its partition.
    pub partition: u32,
    /// Its offset within the partition, from 0.
    pub offset: u64,
    /// Its key.
    pub key: String,
    /// Its payload.
    pub value: Vec<u8>,
    /// When the stream accepted it, ms since the epoch.
    pub timestamp_ms: i64,
}

/// Why a stream operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// The stream cannot be reached or written; retrying later may work.
    #[error("stream unavailable: {0}")]
    Unavailable(String),
    /// The request is malformed (a bad topic name, an offset past the end).
    #[error("invalid stream request: {0}")]
    Invalid(String),
    /// Stored data does not read back.
    #[error("stream data is corrupt: {0}")]
    Corrupt(String),
}

/// Appends records to topics.
#[async_trait]
pub trait StreamProducer: Send + Sync + 'static {
    /// Appends `records` to `topic`, each on the partition of its key, and returns once they
    /// are durable (acknowledged), with each one's partition and offset in order. The offset
    /// is `None` where the stream does not number records densely when it takes them
    /// (Kinesis: its consumers number a shard's records as they read them).
    ///
    /// # Errors
    /// `Unavailable` (the batch is not acknowledged; publish it again), `Invalid` for a bad
    /// topic name.
    async fn publish(&self, topic: &str, records: Vec<StreamRecord>) -> Result<Vec<(u32, Option<u64>)>, StreamError>;
}

/// One member of a consumer group on one topic.
#[async_trait]
pub trait StreamConsumer: Send + 'static {
    /// Up to `max` records after what the group has committed (or this member has already
    /// returned), waiting up to `wait` for the first one.
    ///
    /// # Errors
    /// `Unavailable`, `Corrupt`.
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>, StreamError>;

    /// Records that the group has processed each partition up to and including its offset.
    ///
    /// # Errors
    /// `Unavailable`, `Invalid` for an offset never delivered.
    async fn commit(&mut self, offsets: &[(u32, u64)]) -> Result<(), StreamError>;

    /// Partitions taken from this member since the last call (a group rebalance, a lapsed
    /// lease). Their records that were delivered and not committed will be delivered again,
    /// here or to another member, so whatever was built from them must be dropped, not
    /// written. (`poll` already leaves out records it read before a revocation it saw.)
    fn revoked(&mut self) -> Vec<u32> {
        Vec::new()
    }
}

#[async_trait]
impl StreamConsumer for Box<dyn StreamConsumer> {
    fn revoked(&mut self) -> Vec<u32> {
        (**self).revoked()
    }

    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>, StreamError> {
        (**self).poll(max, wait).await
    }

    async fn commit(&mut self, offsets: &[(u32, u64)]) -> Result<(), StreamError> {
        (**self).commit(offsets).await
    }
}

/// Where a consumer group has read a shard to, for streams whose positions are opaque
/// sequence numbers (Kinesis): the last processed record's sequence number, and the offset the
/// consumers gave that record (records are numbered 0, 1, 2, … in shard order as read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardCheckpoint {
    /// The stream's sequence number of the last processed record.
    pub sequence: String,
    /// Its offset.
    pub offset: u64,
}

/// Shard checkpoints of consumer groups, kept in the view store; a checkpoint is saved only
/// by the holder of the lease of the same name.
#[async_trait]
pub trait ShardCheckpointStore: Send + Sync + 'static {
    /// The checkpoint `name`, if one was saved.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn load_shard_checkpoint(&self, name: &str) -> Result<Option<ShardCheckpoint>, StoreError>;

    /// Saves the checkpoint `name` if `owner` holds the lease `name`.
    ///
    /// # Errors
    /// `LeaseLost` when another owner holds the lease; `Unavailable`.
    async fn save_shard_checkpoint(
        &self,
        name: &str,
        owner: &str,
        checkpoint: &ShardCheckpoint,
    ) -> Result<(), StoreError>;
}

/// What consumers keep their leases and checkpoints in, and who they are.
#[derive(Clone)]
pub struct ShardCoordination {
    /// Shard checkpoints (the view store).
    pub checkpoints: Arc<dyn ShardCheckpointStore>,
    /// Shard leases (the view store).
    pub leases: Arc<dyn crate::ports::LeaseStore>,
    /// The clock of lease expiry.
    pub clock: Arc<dyn crate::ports::Clock>,
    /// This process's name in leases.
    pub owner: String,
}
