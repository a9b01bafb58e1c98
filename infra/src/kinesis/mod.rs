//! The stream ports on Amazon Kinesis Data Streams (aws-sdk-kinesis).
//!
//! Topics are streams and partitions are shards: partition N is `shardId-…N`, so the numbers
//! stay put when a stream is resharded.
//!
//! Producer: `PutRecords` in requests of up to 500 records and 5 MiB, keyed by the record's
//! key (Kinesis hashes it to a shard). Records a request refuses one by one (throttling) are
//! sent again with backoff; a publish returns once every record is stored.
//!
//! Consumer groups: Kinesis has none, so they are built here as the KCL builds them. A member
//! holds a lease per shard in the lease store (`kinesis/<stream>/<group>/<shard>`), renewed
//! while it polls; a shard whose lease lapses (its member died) is taken by another member.
//! Kinesis sequence numbers say order but not count, so a group numbers each shard's records
//! as it reads them (0, 1, 2, … from the start of the shard): offsets are the same on every
//! read, which the lake sink's file names and exactly-once rest on. A commit saves the
//! record's sequence number and offset in the view store under the lease's name (only its
//! holder may), and a member that takes a shard resumes after that sequence number.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_kinesis::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, ShardIteratorType, StreamStatus};
use aws_sdk_kinesis::Client;
use vodsource_commands::ports::{Delivery, ShardCheckpoint, StreamConsumer, StreamError, StreamProducer, StreamRecord};

use vodsource_commands::ports::ShardCoordination;

/// Records per `PutRecords` request (the service's limit).
const MAX_PUT_RECORDS: usize = 500;
/// Bytes (keys and data) per `PutRecords` request (the service's limit is 5 MiB).
const MAX_PUT_BYTES: usize = 5 * 1024 * 1024;
/// Records per `GetRecords` call (the service's limit).
const MAX_GET_RECORDS: usize = 10_000;
/// Attempts of a record that the service refuses (throttling).
const PUT_ATTEMPTS: u32 = 8;
/// Between `GetRecords` rounds that found nothing (a shard allows 5 calls a second).
const IDLE_POLL: Duration = Duration::from_millis(200);
/// How often a member lists the stream's shards (to see new ones after a reshard).
const LIST_EVERY: Duration = Duration::from_secs(30);

fn failed<E>(what: &str, e: &aws_sdk_kinesis::error::SdkError<E>) -> StreamError
where
    E: std::error::Error + Send + Sync + 'static,
{
    StreamError::Unavailable(format!("kinesis {what}: {}", DisplayErrorContext(e)))
}

/// The partition number of a shard id (`shardId-000000000003` is 3).
fn shard_number(shard_id: &str) -> Result<u32, StreamError> {
    shard_id
        .rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| StreamError::Corrupt(format!("unexpected Kinesis shard id {shard_id:?}")))
}

/// Kinesis Data Streams: the producer, and the factory of streams and consumers.
#[derive(Clone)]
pub struct KinesisStream {
    client: Client,
    coordination: ShardCoordination,
    lease_ttl: Duration,
}

impl KinesisStream {
    /// A client over `config`; consumers keep leases (`lease_ttl` long) and checkpoints in
    /// `coordination`.
    pub fn new(config: &SdkConfig, coordination: ShardCoordination, lease_ttl: Duration) -> Self {
        Self {
            client: Client::new(config),
            coordination,
            lease_ttl,
        }
    }

    /// Creates `stream` with `shards` shards unless it exists, and waits (up to a minute) for
    /// it to be active.
    ///
    /// # Errors
    /// The service refuses or cannot be reached, or the stream does not become active.
    pub async fn create_stream(&self, stream: &str, shards: u32) -> Result<(), StreamError> {
        let shards = i32::try_from(shards).map_err(|_| StreamError::Invalid(format!("{shards} shards")))?;
        match self
            .client
            .create_stream()
            .stream_name(stream)
            .shard_count(shards)
            .send()
            .await
        {
            Ok(_) => {}
            Err(e) if e.as_service_error().is_some_and(|e| e.is_resource_in_use_exception()) => {}
            Err(e) => return Err(failed("create stream", &e)),
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let summary = self
                .client
                .describe_stream_summary()
                .stream_name(stream)
                .send()
                .await
                .map_err(|e| failed("describe stream", &e))?;
            let status = summary.stream_description_summary().map(|s| s.stream_status().clone());
            if matches!(status, Some(StreamStatus::Active | StreamStatus::Updating)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(StreamError::Unavailable(format!(
                    "kinesis stream {stream} is not active after a minute ({status:?})"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A member of consumer group `group` on `stream`.
    ///
    /// # Errors
    /// `Invalid` names.
    pub fn consumer(&self, stream: &str, group: &str) -> Result<KinesisConsumer, StreamError> {
        if group.is_empty() || group.contains('/') {
            return Err(StreamError::Invalid(format!("bad group name {group:?}")));
        }
        Ok(KinesisConsumer {
            client: self.client.clone(),
            stream: stream.to_owned(),
            group: group.to_owned(),
            coordination: self.coordination.clone(),
            lease_ttl: self.lease_ttl,
            known: Vec::new(),
            held: BTreeMap::new(),
            listed_at: None,
            renewed_at: None,
            revoked: Vec::new(),
        })
    }
}

#[async_trait]
impl StreamProducer for KinesisStream {
    async fn publish(&self, topic: &str, records: Vec<StreamRecord>) -> Result<Vec<(u32, Option<u64>)>, StreamError> {
        if let Some(bad) = records.iter().find(|r| r.key.is_empty() || r.key.chars().count() > 256) {
            return Err(StreamError::Invalid(format!(
                "a Kinesis partition key is 1 to 256 characters, not {:?}",
                bad.key
            )));
        }
        let mut acks = vec![(0, None); records.len()];
        let mut start = 0;
        while start < records.len() {
            // One request: up to 500 records and 5 MiB.
            let mut end = start;
            let mut bytes = 0;
            while end < records.len() && end - start < MAX_PUT_RECORDS {
                let size = records[end].key.len() + records[end].value.len();
                if end > start && bytes + size > MAX_PUT_BYTES {
                    break;
                }
                bytes += size;
                end += 1;
            }
            self.put(topic, &records, (start..end).collect(), &mut acks).await?;
            start = end;
        }
        Ok(acks)
    }
}

impl KinesisStream {
    /// Stores the records at `pending`, sending again those the service refuses.
    async fn put(
        &self,
        topic: &str,
        records: &[StreamRecord],
        mut pending: Vec<usize>,
        acks: &mut [(u32, Option<u64>)],
    ) -> Result<(), StreamError> {
        let mut backoff = Duration::from_millis(50);
        for attempt in 1..=PUT_ATTEMPTS {
            let entries = pending
                .iter()
                .map(|&i| {
                    PutRecordsRequestEntry::builder()
                        .partition_key(&records[i].key)
                        .data(Blob::new(records[i].value.clone()))
                        .build()
                        .map_err(|e| StreamError::Invalid(format!("kinesis record: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let output = self
                .client
                .put_records()
                .stream_name(topic)
                .set_records(Some(entries))
                .send()
                .await
                .map_err(|e| failed("put records", &e))?;
            let mut refused = Vec::new();
            let mut reason = String::new();
            for (&i, result) in pending.iter().zip(output.records()) {
                match (result.error_code(), result.shard_id()) {
                    (None, Some(shard)) => acks[i] = (shard_number(shard)?, None),
                    (code, _) => {
                        reason = format!("{}: {}", code.unwrap_or("?"), result.error_message().unwrap_or(""));
                        refused.push(i);
                    }
                }
            }
            if refused.is_empty() {
                return Ok(());
            }
            tracing::debug!(refused = refused.len(), attempt, %reason, "kinesis refused records; sending them again");
            pending = refused;
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
        Err(StreamError::Unavailable(format!(
            "kinesis put records: {} records still refused after {PUT_ATTEMPTS} attempts",
            pending.len()
        )))
    }
}

/// A shard this member holds.
struct Held {
    id: String,
    /// Where the next `GetRecords` reads; `None`: to be asked for (first read, or expired).
    iterator: Option<String>,
    /// The sequence number of the last record read (or committed, before the first read).
    last_sequence: Option<String>,
    /// The offset of the next record read.
    next_offset: u64,
    /// Read and not yet committed: (offset, sequence number).
    delivered: VecDeque<(u64, String)>,
    /// The shard is closed (resharded) and read to its end.
    ended: bool,
}

/// One member of a consumer group on one stream.
pub struct KinesisConsumer {
    client: Client,
    stream: String,
    group: String,
    coordination: ShardCoordination,
    lease_ttl: Duration,
    /// Every shard of the stream: (partition, shard id).
    known: Vec<(u32, String)>,
    held: BTreeMap<u32, Held>,
    listed_at: Option<Instant>,
    renewed_at: Option<Instant>,
    /// Shards lost and not yet reported by `revoked`.
    revoked: Vec<u32>,
}

impl KinesisConsumer {
    fn lease_name(&self, shard_id: &str) -> String {
        format!("kinesis/{}/{}/{shard_id}", self.stream, self.group)
    }

    /// The partitions this member holds.
    pub fn partitions(&self) -> Vec<u32> {
        self.held.keys().copied().collect()
    }

    async fn list_shards(&mut self) -> Result<(), StreamError> {
        let mut shards = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let request = match &token {
                Some(token) => self.client.list_shards().next_token(token),
                None => self.client.list_shards().stream_name(&self.stream),
            };
            let page = request.send().await.map_err(|e| failed("list shards", &e))?;
            for shard in page.shards() {
                shards.push((shard_number(shard.shard_id())?, shard.shard_id().to_owned()));
            }
            match page.next_token() {
                Some(next) => token = Some(next.to_owned()),
                None => break,
            }
        }
        shards.sort();
        self.known = shards;
        self.listed_at = Some(Instant::now());
        Ok(())
    }

    /// Renews the leases of held shards and takes free ones, every third of the lease's time.
    async fn keep_leases(&mut self) -> Result<(), StreamError> {
        if self.renewed_at.is_some_and(|at| at.elapsed() < self.lease_ttl / 3) {
            return Ok(());
        }
        if self.listed_at.is_none_or(|at| at.elapsed() >= LIST_EVERY) {
            self.list_shards().await?;
        }
        let store = |e: vodsource_commands::ports::StoreError| StreamError::Unavailable(format!("lease store: {e}"));
        for (partition, shard_id) in self.known.clone() {
            let name = self.lease_name(&shard_id);
            let c = &self.coordination;
            let holds = c
                .leases
                .hold_lease(&name, &c.owner, &*c.clock, self.lease_ttl)
                .await
                .map_err(store)?;
            match (holds, self.held.contains_key(&partition)) {
                (true, false) => {
                    let checkpoint = c.checkpoints.load_shard_checkpoint(&name).await.map_err(store)?;
                    tracing::info!(stream = %self.stream, group = %self.group, shard = %shard_id, from = ?checkpoint, "took a shard");
                    self.held.insert(
                        partition,
                        Held {
                            id: shard_id,
                            iterator: None,
                            next_offset: checkpoint.as_ref().map_or(0, |c| c.offset + 1),
                            last_sequence: checkpoint.map(|c| c.sequence),
                            delivered: VecDeque::new(),
                            ended: false,
                        },
                    );
                }
                (false, true) => {
                    tracing::warn!(stream = %self.stream, group = %self.group, shard = %shard_id, "lost a shard's lease to another member");
                    self.held.remove(&partition);
                    self.revoked.push(partition);
                }
                _ => {}
            }
        }
        self.renewed_at = Some(Instant::now());
        Ok(())
    }

    /// Reads up to `max` records of one held shard.
    async fn read(&mut self, partition: u32, max: usize, out: &mut Vec<Delivery>) -> Result<(), StreamError> {
        let Some(shard) = self.held.get_mut(&partition) else {
            return Ok(());
        };
        if shard.ended {
            return Ok(());
        }
        let iterator = match shard.iterator.take() {
            Some(iterator) => iterator,
            None => {
                let request = self
                    .client
                    .get_shard_iterator()
                    .stream_name(&self.stream)
                    .shard_id(&shard.id);
                let request = match &shard.last_sequence {
                    Some(sequence) => request
                        .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                        .starting_sequence_number(sequence),
                    None => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
                };
                let output = request.send().await.map_err(|e| failed("get shard iterator", &e))?;
                output
                    .shard_iterator()
                    .map(str::to_owned)
                    .ok_or_else(|| StreamError::Unavailable(format!("kinesis gave no iterator for {}", shard.id)))?
            }
        };
        let limit = i32::try_from(max.min(MAX_GET_RECORDS)).unwrap_or(1);
        let output = match self
            .client
            .get_records()
            .shard_iterator(&iterator)
            .limit(limit)
            .send()
            .await
        {
            Ok(output) => output,
            Err(e) if e.as_service_error().is_some_and(|e| e.is_expired_iterator_exception()) => {
                // Asked for again after the last record read.
                return Ok(());
            }
            Err(e) => {
                let code = e.code().unwrap_or_default().to_owned();
                shard.iterator = Some(iterator);
                if code == "ProvisionedThroughputExceededException" {
                    return Ok(());
                }
                return Err(failed("get records", &e));
            }
        };
        for record in output.records() {
            let offset = shard.next_offset;
            shard.next_offset += 1;
            shard.delivered.push_back((offset, record.sequence_number().to_owned()));
            shard.last_sequence = Some(record.sequence_number().to_owned());
            out.push(Delivery {
                partition,
                offset,
                key: record.partition_key().unwrap_or_default().to_owned(),
                value: record.data().as_ref().to_vec(),
                timestamp_ms: record
                    .approximate_arrival_timestamp()
                    .and_then(|t| t.to_millis().ok())
                    .unwrap_or_default(),
            });
        }
        match output.next_shard_iterator() {
            Some(next) => shard.iterator = Some(next.to_owned()),
            None => shard.ended = true,
        }
        Ok(())
    }
}

#[async_trait]
impl StreamConsumer for KinesisConsumer {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>, StreamError> {
        let deadline = Instant::now() + wait;
        let mut out = Vec::new();
        loop {
            self.keep_leases().await?;
            let partitions: Vec<u32> = self.held.keys().copied().collect();
            for partition in partitions {
                if out.len() >= max {
                    break;
                }
                self.read(partition, max - out.len(), &mut out).await?;
            }
            let now = Instant::now();
            if !out.is_empty() || now >= deadline {
                return Ok(out);
            }
            tokio::time::sleep(IDLE_POLL.min(deadline - now)).await;
        }
    }

    fn revoked(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.revoked)
    }

    async fn commit(&mut self, offsets: &[(u32, u64)]) -> Result<(), StreamError> {
        for &(partition, offset) in offsets {
            let name = match self.held.get(&partition) {
                Some(shard) => self.lease_name(&shard.id),
                None => {
                    return Err(StreamError::Unavailable(format!(
                        "kinesis {}: partition {partition} is no longer held by this member of {}",
                        self.stream, self.group
                    )))
                }
            };
            let Some(shard) = self.held.get_mut(&partition) else {
                continue;
            };
            let Some(sequence) = shard
                .delivered
                .iter()
                .find(|(o, _)| *o == offset)
                .map(|(_, s)| s.clone())
            else {
                return Err(StreamError::Invalid(format!(
                    "kinesis {}: offset {offset} of partition {partition} was not delivered (or is committed)",
                    self.stream
                )));
            };
            let c = &self.coordination;
            c.checkpoints
                .save_shard_checkpoint(&name, &c.owner, &ShardCheckpoint { sequence, offset })
                .await
                .map_err(|e| StreamError::Unavailable(format!("kinesis checkpoint of {name}: {e}")))?;
            while shard.delivered.front().is_some_and(|(o, _)| *o <= offset) {
                shard.delivered.pop_front();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_ids_number_partitions() {
        assert_eq!(shard_number("shardId-000000000000"), Ok(0));
        assert_eq!(shard_number("shardId-000000000017"), Ok(17));
        assert!(matches!(shard_number("shard"), Err(StreamError::Corrupt(_))));
    }
}
