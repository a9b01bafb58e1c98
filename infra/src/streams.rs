//! Choosing the stream from configuration (`VODSOURCE_STREAM`): the embedded log, Kafka or
//! Kinesis, behind one type that makes producers and consumer-group members.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use vodsource_commands::ports::{ShardCoordination, StreamConsumer, StreamError, StreamProducer};

use crate::aws::AwsSettings;
use crate::embedded_log::EmbeddedLog;
#[cfg(feature = "kafka")]
use crate::kafka::KafkaStream;
#[cfg(feature = "kinesis")]
use crate::kinesis::KinesisStream;

/// Partitions of the embedded log's topics.
pub const EMBEDDED_PARTITIONS: u32 = 8;

/// A parsed stream URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamUrl {
    /// `embedded`: the local log in a folder.
    Embedded(PathBuf),
    /// `kafka://host:port[,host:port…][?partitions=N&prefix=P]`: N partitions for topics it
    /// creates; topic names start with P (several deployments on one cluster).
    Kafka {
        /// Bootstrap brokers.
        brokers: String,
        /// Partitions of topics created here.
        partitions: u32,
        /// Prefix of topic names.
        prefix: String,
    },
    /// `kinesis://[?shards=N&lease_secs=S&prefix=P]`: N shards for streams it creates,
    /// consumer leases of S seconds, stream names that start with P; account, region and
    /// endpoint from the AWS environment.
    Kinesis {
        /// Shards of streams created here.
        shards: u32,
        /// How long a consumer's shard lease lasts without renewal.
        lease_ttl: Duration,
        /// Prefix of stream names.
        prefix: String,
    },
}

/// The options of a URL's query.
struct Options<'a> {
    url: &'a str,
    pairs: Vec<(&'a str, &'a str)>,
}

impl<'a> Options<'a> {
    fn parse(url: &'a str, query: &'a str, known: &[&str]) -> Result<Self, StreamError> {
        let pairs: Vec<(&str, &str)> = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
            .collect();
        if let Some((key, _)) = pairs.iter().find(|(k, _)| !known.contains(k)) {
            return Err(StreamError::Invalid(format!(
                "{url:?}: unknown option {key:?} (known: {})",
                known.join(", ")
            )));
        }
        Ok(Self { url, pairs })
    }

    fn get(&self, key: &str) -> Option<&'a str> {
        self.pairs.iter().rev().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    fn number(&self, key: &str, default: u32) -> Result<u32, StreamError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => {
                v.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                    StreamError::Invalid(format!("{:?}: {key} must be a whole number above 0", self.url))
                })
            }
        }
    }

    fn prefix(&self) -> Result<String, StreamError> {
        let prefix = self.get("prefix").unwrap_or_default();
        if prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            Ok(prefix.to_owned())
        } else {
            Err(StreamError::Invalid(format!(
                "{:?}: the prefix may hold letters, digits, '-', '_' and '.'",
                self.url
            )))
        }
    }
}

impl StreamUrl {
    /// Parses `url`; `embedded` is the log in `embedded_dir`.
    ///
    /// # Errors
    /// `Invalid` naming the URL and what is wrong with it.
    pub fn parse(url: &str, embedded_dir: PathBuf) -> Result<Self, StreamError> {
        if url == "embedded" {
            return Ok(Self::Embedded(embedded_dir));
        }
        if let Some(rest) = url.strip_prefix("kafka://") {
            let (brokers, query) = rest.split_once('?').unwrap_or((rest, ""));
            if brokers.is_empty() || brokers.split(',').any(|b| !b.contains(':')) {
                return Err(StreamError::Invalid(format!(
                    "{url:?} names no brokers: expected kafka://host:port[,host:port]"
                )));
            }
            let options = Options::parse(url, query, &["partitions", "prefix"])?;
            return Ok(Self::Kafka {
                brokers: brokers.to_owned(),
                partitions: options.number("partitions", 8)?,
                prefix: options.prefix()?,
            });
        }
        if let Some(rest) = url.strip_prefix("kinesis://") {
            let (host, query) = rest.split_once('?').unwrap_or((rest, ""));
            if !host.is_empty() {
                return Err(StreamError::Invalid(format!(
                    "{url:?}: Kinesis takes its region and endpoint from the AWS environment (AWS_REGION, AWS_ENDPOINT_URL), not the URL"
                )));
            }
            let options = Options::parse(url, query, &["shards", "lease_secs", "prefix"])?;
            return Ok(Self::Kinesis {
                shards: options.number("shards", 4)?,
                lease_ttl: Duration::from_secs(u64::from(options.number("lease_secs", 20)?)),
                prefix: options.prefix()?,
            });
        }
        Err(StreamError::Invalid(format!(
            "unsupported stream URL {url:?}: expected embedded, kafka://host:port or kinesis://"
        )))
    }
}

/// The configured stream.
#[derive(Clone)]
pub struct Streams {
    kind: Kind,
    /// Prefix of topic names on the service.
    prefix: String,
}

#[derive(Clone)]
enum Kind {
    Embedded(EmbeddedLog),
    #[cfg(feature = "kafka")]
    Kafka(KafkaStream, u32),
    #[cfg(feature = "kinesis")]
    Kinesis(KinesisStream, u32),
}

/// The error of a URL whose service this build leaves out.
#[cfg(not(all(feature = "kafka", feature = "kinesis")))]
fn not_built(service: &str, feature: &str) -> StreamError {
    StreamError::Invalid(format!(
        "this vodsource was built without {service} (Cargo feature `{feature}`); rebuild with it, or use another stream"
    ))
}

impl Streams {
    /// Opens the stream `url` names. Kinesis consumers keep leases and checkpoints in
    /// `coordination`; `aws` overrides the AWS environment.
    ///
    /// # Errors
    /// `Unavailable` when the embedded folder is in use or AWS has no region; `Invalid`
    /// configuration.
    pub async fn open(
        url: &StreamUrl,
        coordination: ShardCoordination,
        aws: &AwsSettings,
    ) -> Result<Self, StreamError> {
        let (kind, prefix) = match url {
            StreamUrl::Embedded(dir) => (Kind::Embedded(EmbeddedLog::open(dir, EMBEDDED_PARTITIONS)?), ""),
            #[cfg(feature = "kafka")]
            StreamUrl::Kafka {
                brokers,
                partitions,
                prefix,
            } => (
                Kind::Kafka(KafkaStream::connect(brokers)?, *partitions),
                prefix.as_str(),
            ),
            #[cfg(not(feature = "kafka"))]
            StreamUrl::Kafka { .. } => return Err(not_built("Kafka", "kafka")),
            #[cfg(feature = "kinesis")]
            StreamUrl::Kinesis {
                shards,
                lease_ttl,
                prefix,
            } => {
                let config = crate::aws::load(aws).await.map_err(StreamError::Unavailable)?;
                (
                    Kind::Kinesis(KinesisStream::new(&config, coordination, *lease_ttl), *shards),
                    prefix.as_str(),
                )
            }
            #[cfg(not(feature = "kinesis"))]
            StreamUrl::Kinesis { .. } => {
                let _ = (coordination, aws);
                return Err(not_built("Kinesis", "kinesis"));
            }
        };
        Ok(Self {
            kind,
            prefix: prefix.to_owned(),
        })
    }

    /// The service's name of `topic`.
    pub fn topic(&self, topic: &str) -> String {
        format!("{}{topic}", self.prefix)
    }

    /// Creates `topic` unless it exists (the embedded log makes topics as they are used).
    ///
    /// # Errors
    /// The service refuses or cannot be reached.
    pub async fn ensure_topic(&self, topic: &str) -> Result<(), StreamError> {
        let topic = self.topic(topic);
        match &self.kind {
            Kind::Embedded(_) => {
                let _ = topic;
                Ok(())
            }
            #[cfg(feature = "kafka")]
            Kind::Kafka(kafka, partitions) => {
                kafka
                    .create_topic(&topic, i32::try_from(*partitions).unwrap_or(i32::MAX))
                    .await
            }
            #[cfg(feature = "kinesis")]
            Kind::Kinesis(kinesis, shards) => kinesis.create_stream(&topic, *shards).await,
        }
    }

    /// The producer (topic names as the application knows them).
    pub fn producer(&self) -> Arc<dyn StreamProducer> {
        let inner: Arc<dyn StreamProducer> = match &self.kind {
            Kind::Embedded(log) => Arc::new(log.clone()),
            #[cfg(feature = "kafka")]
            Kind::Kafka(kafka, _) => Arc::new(kafka.clone()),
            #[cfg(feature = "kinesis")]
            Kind::Kinesis(kinesis, _) => Arc::new(kinesis.clone()),
        };
        if self.prefix.is_empty() {
            inner
        } else {
            Arc::new(Prefixed {
                inner,
                prefix: self.prefix.clone(),
            })
        }
    }

    /// A member of consumer group `group` on `topic`. On Kafka, where a group id is
    /// cluster-wide, the group carries the prefix as topics do, so deployments sharing a
    /// cluster never rebalance each other's members.
    ///
    /// # Errors
    /// `Invalid` names; the embedded log's `Unavailable` and `Corrupt`.
    pub fn consumer(&self, topic: &str, group: &str) -> Result<Box<dyn StreamConsumer>, StreamError> {
        let topic = self.topic(topic);
        Ok(match &self.kind {
            Kind::Embedded(log) => Box::new(log.consumer(&topic, group)?),
            #[cfg(feature = "kafka")]
            Kind::Kafka(kafka, _) => Box::new(kafka.consumer(&topic, &self.topic(group))?),
            #[cfg(feature = "kinesis")]
            Kind::Kinesis(kinesis, _) => Box::new(kinesis.consumer(&topic, group)?),
        })
    }

    /// The embedded log, when that is the stream.
    pub fn embedded(&self) -> Option<&EmbeddedLog> {
        #[allow(irrefutable_let_patterns)]
        if let Kind::Embedded(log) = &self.kind {
            Some(log)
        } else {
            None
        }
    }

    /// For logs: which stream this is.
    pub fn describe(&self) -> String {
        let prefix = if self.prefix.is_empty() {
            String::new()
        } else {
            format!(" (topics {}*)", self.prefix)
        };
        #[cfg(not(any(feature = "kafka", feature = "kinesis")))]
        let _ = prefix;
        match &self.kind {
            Kind::Embedded(_) => "embedded".into(),
            #[cfg(feature = "kafka")]
            Kind::Kafka(kafka, _) => format!("kafka://{}{prefix}", kafka.brokers()),
            #[cfg(feature = "kinesis")]
            Kind::Kinesis(..) => format!("kinesis://{prefix}"),
        }
    }
}

/// A producer whose topic names get a prefix.
struct Prefixed {
    inner: Arc<dyn StreamProducer>,
    prefix: String,
}

#[async_trait::async_trait]
impl StreamProducer for Prefixed {
    async fn publish(
        &self,
        topic: &str,
        records: Vec<vodsource_commands::ports::StreamRecord>,
    ) -> Result<Vec<(u32, Option<u64>)>, StreamError> {
        self.inner.publish(&format!("{}{topic}", self.prefix), records).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<StreamUrl, StreamError> {
        StreamUrl::parse(url, PathBuf::from("/data/streams"))
    }

    #[test]
    fn stream_urls_parse_with_their_options() {
        assert_eq!(parse("embedded"), Ok(StreamUrl::Embedded("/data/streams".into())));
        assert_eq!(
            parse("kafka://a:9092,b:9092?partitions=16"),
            Ok(StreamUrl::Kafka {
                brokers: "a:9092,b:9092".into(),
                partitions: 16,
                prefix: String::new(),
            })
        );
        assert_eq!(
            parse("kinesis://?shards=2&lease_secs=5&prefix=staging-"),
            Ok(StreamUrl::Kinesis {
                shards: 2,
                lease_ttl: Duration::from_secs(5),
                prefix: "staging-".into(),
            })
        );
        assert_eq!(
            parse("kinesis://"),
            Ok(StreamUrl::Kinesis {
                shards: 4,
                lease_ttl: Duration::from_secs(20),
                prefix: String::new(),
            })
        );
    }

    #[test]
    fn bad_stream_urls_are_refused_with_the_reason() {
        for (url, says) in [
            ("nats://x:4222", "unsupported stream URL"),
            ("kafka://", "names no brokers"),
            ("kafka://host", "names no brokers"),
            ("kafka://h:1?partitions=0", "partitions must be"),
            ("kafka://h:1?replicas=3", "unknown option"),
            ("kinesis://us-east-1", "AWS environment"),
            ("kinesis://?shards=x", "shards must be"),
            ("kafka://h:1?prefix=a/b", "the prefix may hold"),
        ] {
            match parse(url) {
                Err(StreamError::Invalid(message)) => assert!(message.contains(says), "{url}: {message}"),
                other => panic!("{url}: {other:?}"),
            }
        }
    }
}
