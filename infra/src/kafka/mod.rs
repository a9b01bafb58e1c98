//! The stream ports on Kafka (any Kafka-protocol broker) through rdkafka with its bundled
//! librdkafka.
//!
//! Producer: idempotent (`enable.idempotence`, `acks=all`), so a retried send is never
//! written twice and a key's records keep their order; keys are partitioned with murmur2, as
//! the Java clients do, so other producers agree on a session's partition. A publish returns
//! once every record is acknowledged.
//!
//! Consumer: a consumer group member with manual commits; a commit is synchronous, because the
//! lake sink's exactly-once rests on knowing a range is committed before it plans the next.
//! A rebalance that takes partitions away is recorded as it happens (librdkafka runs the
//! callback inside `recv`): `poll` drops what it had read of them in the same call, and
//! `revoked` tells the caller, whose uncommitted work on them will be read again.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer as RdConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{Message, Offset, TopicPartitionList};
use vodsource_commands::ports::{Delivery, StreamConsumer, StreamError, StreamProducer, StreamRecord};

fn unavailable(what: &str, e: &KafkaError) -> StreamError {
    StreamError::Unavailable(format!("kafka {what}: {e}"))
}

/// A Kafka cluster: the producer, and the factory of consumers and topics.
#[derive(Clone)]
pub struct KafkaStream {
    brokers: String,
    producer: FutureProducer,
}

impl KafkaStream {
    /// Connects to `brokers` (`host:port[,host:port]`). The connection is lazy: a broker that
    /// is down shows as `Unavailable` on the first publish.
    ///
    /// # Errors
    /// A configuration librdkafka refuses.
    pub fn connect(brokers: &str) -> Result<Self, StreamError> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "2")
            .set("partitioner", "murmur2_random")
            .set("message.timeout.ms", "30000")
            .create()
            .map_err(|e| StreamError::Invalid(format!("kafka producer: {e}")))?;
        Ok(Self {
            brokers: brokers.to_owned(),
            producer,
        })
    }

    /// The bootstrap brokers.
    pub fn brokers(&self) -> &str {
        &self.brokers
    }

    /// Creates `topic` with `partitions` partitions unless it exists.
    ///
    /// # Errors
    /// The broker refuses or cannot be reached.
    pub async fn create_topic(&self, topic: &str, partitions: i32) -> Result<(), StreamError> {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .create()
            .map_err(|e| StreamError::Invalid(format!("kafka admin: {e}")))?;
        let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
        let options = AdminOptions::new().operation_timeout(Some(Timeout::After(Duration::from_secs(10))));
        let results = admin
            .create_topics([&new], &options)
            .await
            .map_err(|e| unavailable("create topic", &e))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(StreamError::Unavailable(format!("kafka create topic {name}: {code}")));
                }
            }
        }
        Ok(())
    }

    /// A member of consumer group `group` on `topic`, starting after the group's committed
    /// offsets (from the beginning when it has none).
    ///
    /// # Errors
    /// A configuration librdkafka refuses.
    pub fn consumer(&self, topic: &str, group: &str) -> Result<KafkaConsumer, StreamError> {
        let consumer: RdConsumer<GroupContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "1000")
            .set("enable.partition.eof", "false")
            .create_with_context(GroupContext::default())
            .map_err(|e| StreamError::Invalid(format!("kafka consumer: {e}")))?;
        consumer.subscribe(&[topic]).map_err(|e| unavailable("subscribe", &e))?;
        Ok(KafkaConsumer {
            inner: Arc::new(consumer),
            topic: topic.to_owned(),
            revoked: Vec::new(),
        })
    }
}

#[async_trait]
impl StreamProducer for KafkaStream {
    async fn publish(&self, topic: &str, records: Vec<StreamRecord>) -> Result<Vec<(u32, Option<u64>)>, StreamError> {
        let sends = records.iter().map(|record| {
            self.producer.send(
                FutureRecord::to(topic).key(&record.key).payload(&record.value),
                Timeout::After(Duration::from_secs(30)),
            )
        });
        let mut acks = Vec::with_capacity(records.len());
        for result in futures::future::join_all(sends).await {
            let delivery = result.map_err(|(e, _)| unavailable("publish", &e))?;
            acks.push((
                u32::try_from(delivery.partition).unwrap_or_default(),
                u64::try_from(delivery.offset).ok(),
            ));
        }
        Ok(acks)
    }
}

/// Records the partitions each rebalance takes from the member.
#[derive(Default)]
pub struct GroupContext {
    revoked: Mutex<Vec<u32>>,
}

impl GroupContext {
    fn take(&self) -> Vec<u32> {
        std::mem::take(&mut *self.revoked.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let mut revoked = self.revoked.lock().unwrap_or_else(PoisonError::into_inner);
            revoked.extend(list.elements().iter().filter_map(|e| u32::try_from(e.partition()).ok()));
        }
    }
}

/// One member of a consumer group on one topic.
pub struct KafkaConsumer {
    inner: Arc<RdConsumer<GroupContext>>,
    topic: String,
    /// Revoked partitions not yet reported by `revoked`.
    revoked: Vec<u32>,
}

#[async_trait]
impl StreamConsumer for KafkaConsumer {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>, StreamError> {
        let mut out = Vec::new();
        let mut timeout = wait;
        while out.len() < max {
            let message = match tokio::time::timeout(timeout, self.inner.recv()).await {
                Err(_) => break,
                Ok(Err(e)) => return Err(unavailable("poll", &e)),
                Ok(Ok(message)) => message,
            };
            // A rebalance ran inside that `recv`: what was read of the partitions it took
            // will be read again (by whoever holds them now), so it leaves this batch.
            let revoked = self.inner.context().take();
            if !revoked.is_empty() {
                out.retain(|d: &Delivery| !revoked.contains(&d.partition));
                self.revoked.extend(revoked);
            }
            out.push(Delivery {
                partition: u32::try_from(message.partition()).unwrap_or_default(),
                offset: u64::try_from(message.offset()).unwrap_or_default(),
                key: message
                    .key()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .unwrap_or_default(),
                value: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                timestamp_ms: message.timestamp().to_millis().unwrap_or_default(),
            });
            // After the first record, take only what is already here.
            timeout = Duration::from_millis(1);
        }
        Ok(out)
    }

    fn revoked(&mut self) -> Vec<u32> {
        let mut revoked = std::mem::take(&mut self.revoked);
        revoked.extend(self.inner.context().take());
        revoked.sort_unstable();
        revoked.dedup();
        revoked
    }

    async fn commit(&mut self, offsets: &[(u32, u64)]) -> Result<(), StreamError> {
        let mut list = TopicPartitionList::new();
        for (partition, offset) in offsets {
            let partition = i32::try_from(*partition).map_err(|_| StreamError::Invalid("partition".into()))?;
            let next = i64::try_from(offset + 1).map_err(|_| StreamError::Invalid("offset".into()))?;
            list.add_partition_offset(&self.topic, partition, Offset::Offset(next))
                .map_err(|e| StreamError::Invalid(format!("kafka commit: {e}")))?;
        }
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.commit(&list, CommitMode::Sync))
            .await
            .map_err(|e| StreamError::Unavailable(format!("kafka commit task: {e}")))?
            .map_err(|e| unavailable("commit", &e))
    }
}
