use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};

use cqrs_es::{Aggregate, AggregateContext, AggregateError, EventEnvelope, EventStore};
use vodsource_domain::{Clock, Video, VideoError, VideoEvent, VIDEO_STREAM_TYPE};

use crate::codec::{encode, Decoder};
use crate::ports::{AppendRequest, Appended, EventLog, EventMetadata, ExpectedVersion, RecordedEvent, StoreError};

const SHARDS: usize = 16;
const PAGE: usize = 1000;

/// A loaded video and the stream version it reflects.
#[derive(Debug, Clone)]
pub struct VideoContext {
    /// Stream id.
    pub id: String,
    /// State after `version` events.
    pub video: Video,
    /// Number of events applied.
    pub version: u64,
}

impl AggregateContext<Video> for VideoContext {
    fn aggregate(&mut self) -> &mut Video {
        &mut self.video
    }
}

/// The cqrs-es repository for videos over any [`EventLog`].
///
/// Keeps recently used aggregates in memory, so a command costs one append rather than a
/// replay of the stream. A cached state is only ever a guess: the append's version check is
/// the truth, and a conflict evicts the entry.
#[derive(Clone)]
pub struct VideoStore {
    log: Arc<dyn EventLog>,
    decoder: Decoder,
    clock: Arc<dyn Clock>,
    cache: Arc<[Mutex<Shard>]>,
    per_shard: usize,
}

#[derive(Default)]
struct Shard {
    entries: HashMap<String, (Video, u64)>,
    order: VecDeque<String>,
}

impl VideoStore {
    /// A store over `log` caching up to `cache_capacity` aggregates (0 turns the cache off).
    pub fn new(log: Arc<dyn EventLog>, clock: Arc<dyn Clock>, cache_capacity: usize) -> Self {
        let cache: Vec<Mutex<Shard>> = (0..SHARDS).map(|_| Mutex::default()).collect();
        Self {
            log,
            decoder: Decoder::new(),
            clock,
            cache: cache.into(),
            per_shard: cache_capacity.div_ceil(SHARDS),
        }
    }

    /// Uses `decoder` (with its upcasters) to read streams.
    #[must_use]
    pub fn with_decoder(mut self, decoder: Decoder) -> Self {
        self.decoder = decoder;
        self
    }

    /// The event log underneath.
    pub fn log(&self) -> &Arc<dyn EventLog> {
        &self.log
    }

    fn shard(&self, id: &str) -> &Mutex<Shard> {
        let mut hasher = DefaultHasher::new();
        id.hash(&mut hasher);
        // The modulo keeps the index in range, so the cast cannot truncate anything that matters.
        #[allow(clippy::cast_possible_truncation)]
        let index = (hasher.finish() % SHARDS as u64) as usize;
        &self.cache[index]
    }

    fn cached(&self, id: &str) -> Option<(Video, u64)> {
        if self.per_shard == 0 {
            return None;
        }
        let shard = self.shard(id).lock().unwrap_or_else(PoisonError::into_inner);
        shard.entries.get(id).cloned()
    }

    fn remember(&self, id: &str, video: Video, version: u64) {
        if self.per_shard == 0 {
            return;
        }
        let mut shard = self.shard(id).lock().unwrap_or_else(PoisonError::into_inner);
        if shard.entries.insert(id.to_owned(), (video, version)).is_none() {
            shard.order.push_back(id.to_owned());
            while shard.order.len() > self.per_shard {
                if let Some(old) = shard.order.pop_front() {
                    shard.entries.remove(&old);
                }
            }
        }
    }

    /// Forgets a cached aggregate (after a conflict).
    pub fn forget(&self, id: &str) {
        let mut shard = self.shard(id).lock().unwrap_or_else(PoisonError::into_inner);
        shard.entries.remove(id);
    }

    /// Loads a video: from the cache, or by replaying its stream.
    ///
    /// # Errors
    /// `Unavailable` or `Corrupt` from the log; an event that does not decode is `Corrupt`.
    pub async fn load(&self, id: &str) -> Result<VideoContext, StoreError> {
        if let Some((video, version)) = self.cached(id) {
            return Ok(VideoContext {
                id: id.to_owned(),
                video,
                version,
            });
        }
        let mut video = Video::default();
        let mut version = 0;
        for (event, decoded) in self.read_decoded(id).await? {
            video.apply(decoded);
            version = event.version;
        }
        Ok(VideoContext {
            id: id.to_owned(),
            video,
            version,
        })
    }

    /// Brings a loaded video up to date with the log: the cache is trusted for the fast path
    /// (a stale entry makes the append conflict), but a refusal or a version check decided on
    /// a stale entry would be wrong, so those are checked again after this. Returns whether
    /// anything was newer.
    ///
    /// # Errors
    /// As [`VideoStore::load`].
    pub async fn refresh(&self, context: &mut VideoContext) -> Result<bool, StoreError> {
        let newer = self.read_decoded_after(&context.id, context.version).await?;
        if newer.is_empty() {
            return Ok(false);
        }
        for (event, decoded) in newer {
            context.video.apply(decoded);
            context.version = event.version;
        }
        self.remember(&context.id, context.video.clone(), context.version);
        Ok(true)
    }

    /// Every event of one stream, in order, with its decoded payload.
    async fn read_decoded(&self, id: &str) -> Result<Vec<(RecordedEvent, VideoEvent)>, StoreError> {
        self.read_decoded_after(id, 0).await
    }

    async fn read_decoded_after(&self, id: &str, after: u64) -> Result<Vec<(RecordedEvent, VideoEvent)>, StoreError> {
        let mut out = Vec::new();
        let mut after = after;
        loop {
            let page = self.log.read_stream(id, after, PAGE).await?;
            let done = page.len() < PAGE;
            for event in page {
                let decoded = self.decoder.decode(&event).map_err(|e| StoreError::Corrupt {
                    position: e.position(),
                    reason: e.to_string(),
                })?;
                after = event.version;
                out.push((event, decoded));
            }
            if done {
                return Ok(out);
            }
        }
    }

    /// Appends `events` (already applied to `context.video`) at `context.version`.
    ///
    /// # Errors
    /// `Conflict` when the stream moved on (the cache entry is dropped); others from the log.
    pub async fn append(
        &self,
        context: VideoContext,
        events: &[vodsource_domain::VideoEvent],
        metadata: &EventMetadata,
    ) -> Result<Option<Appended>, StoreError> {
        if events.is_empty() {
            return Ok(None);
        }
        let now = self.clock.now();
        let request = AppendRequest {
            stream_id: context.id.clone(),
            stream_type: VIDEO_STREAM_TYPE.to_owned(),
            expected: ExpectedVersion::Exact(context.version),
            events: events.iter().map(|e| encode(e, metadata.clone(), now)).collect(),
        };
        match self.log.append(request).await {
            Ok(appended) => {
                self.remember(&context.id, context.video, appended.version);
                Ok(Some(appended))
            }
            Err(e) => {
                self.forget(&context.id);
                Err(e)
            }
        }
    }
}

/// Reads the well-known keys of a cqrs-es metadata map.
pub(crate) fn metadata_from_map(map: HashMap<String, String>) -> EventMetadata {
    let mut metadata = EventMetadata::default();
    for (key, value) in map {
        match key.as_str() {
            "correlation_id" => metadata.correlation_id = value.parse().ok(),
            "causation_id" => metadata.causation_id = value.parse().ok(),
            "actor" => metadata.actor = Some(value),
            _ => {
                metadata.extra.insert(key, value);
            }
        }
    }
    metadata
}

pub(crate) fn to_aggregate_error(error: StoreError) -> AggregateError<VideoError> {
    match error {
        StoreError::Conflict { .. } => AggregateError::AggregateConflict,
        StoreError::Unavailable { .. } => AggregateError::DatabaseConnectionError(Box::new(error)),
        StoreError::Corrupt { .. } => AggregateError::DeserializationError(Box::new(error)),
        other => AggregateError::UnexpectedError(Box::new(other)),
    }
}

impl EventStore<Video> for VideoStore {
    type AC = VideoContext;

    async fn load_events(&self, aggregate_id: &str) -> Result<Vec<EventEnvelope<Video>>, AggregateError<VideoError>> {
        let events = self.read_decoded(aggregate_id).await.map_err(to_aggregate_error)?;
        Ok(events
            .into_iter()
            .map(|(event, payload)| envelope(&event, payload))
            .collect())
    }

    async fn load_aggregate(&self, aggregate_id: &str) -> Result<VideoContext, AggregateError<VideoError>> {
        self.load(aggregate_id).await.map_err(to_aggregate_error)
    }

    async fn commit(
        &self,
        events: Vec<vodsource_domain::VideoEvent>,
        context: VideoContext,
        metadata: HashMap<String, String>,
    ) -> Result<Vec<EventEnvelope<Video>>, AggregateError<VideoError>> {
        let metadata = metadata_from_map(metadata);
        let id = context.id.clone();
        let base = context.version;
        let appended = self
            .append(context, &events, &metadata)
            .await
            .map_err(to_aggregate_error)?;
        let Some(appended) = appended else {
            return Ok(vec![]);
        };
        let first_version = appended.version + 1 - events.len() as u64;
        debug_assert_eq!(first_version, base + 1);
        let mut map: HashMap<String, String> = HashMap::new();
        if let Some(actor) = &metadata.actor {
            map.insert("actor".into(), actor.clone());
        }
        Ok(events
            .into_iter()
            .enumerate()
            .map(|(i, payload)| EventEnvelope {
                aggregate_id: id.clone(),
                sequence: usize::try_from(first_version + i as u64).unwrap_or(usize::MAX),
                payload,
                metadata: map.clone(),
            })
            .collect())
    }
}

fn envelope(event: &RecordedEvent, payload: vodsource_domain::VideoEvent) -> EventEnvelope<Video> {
    let mut metadata = HashMap::new();
    if let Some(actor) = &event.metadata.actor {
        metadata.insert("actor".to_owned(), actor.clone());
    }
    if let Some(id) = event.metadata.correlation_id {
        metadata.insert("correlation_id".to_owned(), id.to_string());
    }
    if let Some(id) = event.metadata.causation_id {
        metadata.insert("causation_id".to_owned(), id.to_string());
    }
    metadata.insert("position".to_owned(), event.position.to_string());
    EventEnvelope {
        aggregate_id: event.stream_id.clone(),
        sequence: usize::try_from(event.version).unwrap_or(usize::MAX),
        payload,
        metadata,
    }
}
