use chrono::{DateTime, Duration, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use crate::values::{
    validate_chunk_plan, validate_content_type, validate_description, validate_filename, validate_source_url,
    validate_tags, validate_title, ChunkOutput, ChunkSpan, Metadata, Rendition, SourceProbe,
};
use crate::{Stage, VideoCommand, VideoError, VideoEvent, VideoServices};

/// The worker holding the current attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// Worker id.
    pub worker_id: String,
    /// The attempt held.
    pub attempt: u32,
    /// When the lease lapses unless extended.
    pub lease_until: DateTime<Utc>,
}

/// One chunk of a planned attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chunk {
    /// What it covers.
    pub span: ChunkSpan,
    /// Its claim (kept once written: who wrote it).
    pub claim: Option<Claim>,
    /// What it wrote, once written.
    pub output: Option<ChunkOutput>,
}

/// The last failed attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The attempt.
    pub attempt: u32,
    /// Why it failed.
    pub reason: String,
    /// Whether another attempt may succeed.
    pub retryable: bool,
}

/// The Video aggregate: the state needed to decide, rebuilt from its events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Video {
    /// Lifecycle stage.
    pub stage: Stage,
    /// Deleted videos refuse every command.
    pub deleted: bool,
    /// Whether viewers may play it.
    pub published: bool,
    /// Owning principal.
    pub owner: String,
    /// Title, description, tags.
    pub metadata: Metadata,
    /// Declared file name.
    pub filename: String,
    /// Declared content type.
    pub content_type: String,
    /// Declared size in bytes (0: a fetched source of undeclared size).
    pub declared_size: u64,
    /// Where the source is fetched from, when it is not uploaded.
    #[serde(default)]
    pub source_url: Option<String>,
    /// Object key of the uploaded source.
    pub source_key: Option<String>,
    /// The recorded source's size in bytes (the declared size, or a fetched source's own).
    #[serde(default)]
    pub source_size: u64,
    /// The object store's tag of the uploaded source's bytes (S3's ETag), when it keeps one:
    /// workers read exactly that version.
    #[serde(default)]
    pub source_checksum: Option<String>,
    /// Current attempt number (0 before the first request).
    pub attempt: u32,
    /// The attempt that started the current round of retries.
    pub round_first_attempt: u32,
    /// A requeued attempt may not be claimed before this.
    pub not_before: Option<DateTime<Utc>>,
    /// The claim on the current attempt.
    pub claim: Option<Claim>,
    /// Probe of the current attempt.
    pub probe: Option<SourceProbe>,
    /// The current attempt's chunks, when it is split (empty: one worker encodes it whole).
    #[serde(default)]
    pub chunks: Vec<Chunk>,
    /// Rungs finished in the current attempt.
    pub renditions: Vec<Rendition>,
    /// Whether the current attempt's manifests play (while it is encoding, or encoded).
    #[serde(default)]
    pub playable: bool,
    /// The owner asked for publication as soon as playable, and it has not happened yet.
    #[serde(default)]
    pub publish_when_playable: bool,
    /// The last failure.
    pub failure: Option<Failure>,
}

impl Aggregate for Video {
    const TYPE: &'static str = crate::VIDEO_STREAM_TYPE;
    type Command = VideoCommand;
    type Event = VideoEvent;
    type Error = VideoError;
    type Services = VideoServices;

    async fn handle(
        &mut self,
        command: Self::Command,
        services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command, services)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        self.evolve(event);
    }
}

impl Video {
    /// Decides what `command` means for this video: the events to record, or why not.
    ///
    /// # Errors
    /// The [`VideoError`] naming the invariant the command would break.
    pub fn decide(&self, command: VideoCommand, services: &VideoServices) -> Result<Vec<VideoEvent>, VideoError> {
        if self.deleted {
            return Err(VideoError::Deleted);
        }
        if self.stage == Stage::Unregistered && !matches!(command, VideoCommand::Register { .. }) {
            return Err(VideoError::NotRegistered);
        }
        let now = services.clock.now();
        match command {
            VideoCommand::Register {
                owner,
                title,
                description,
                tags,
                filename,
                content_type,
                size_bytes,
                source_url,
                publish_when_playable,
            } => {
                if self.stage != Stage::Unregistered {
                    return Err(VideoError::AlreadyRegistered);
                }
                if owner.trim().is_empty() {
                    return Err(VideoError::InvalidMetadata {
                        field: "owner",
                        reason: "must not be empty".into(),
                    });
                }
                let title = validate_title(&title)?;
                let description = validate_description(&description)?;
                let tags = validate_tags(&tags)?;
                validate_filename(&filename)?;
                validate_content_type(&content_type)?;
                if let Some(url) = &source_url {
                    validate_source_url(url)?;
                }
                let max = services.policy.max_source_bytes;
                // A fetched source's size may be left to the fetch (0: up to the limit).
                let undeclared = size_bytes == 0 && source_url.is_some();
                if (size_bytes == 0 && !undeclared) || size_bytes > max {
                    return Err(VideoError::InvalidSource(format!(
                        "size must be 1 to {max} bytes, got {size_bytes}"
                    )));
                }
                Ok(vec![VideoEvent::VideoRegistered {
                    owner,
                    title,
                    description,
                    tags,
                    filename,
                    content_type,
                    size_bytes,
                    source_url,
                    publish_when_playable,
                }])
            }
            VideoCommand::FailIngest { reason } => match self.stage {
                Stage::AwaitingUpload if self.source_url.is_some() => {
                    Ok(vec![VideoEvent::SourceIngestFailed { reason }])
                }
                stage => Err(VideoError::InvalidState {
                    action: "fail the source's fetch",
                    stage,
                }),
            },
            VideoCommand::CompleteUpload {
                object_key,
                size_bytes,
                checksum,
            } => match self.stage {
                Stage::AwaitingUpload => {
                    let undeclared = self.declared_size == 0;
                    let max = services.policy.max_source_bytes;
                    if (undeclared && (size_bytes == 0 || size_bytes > max))
                        || (!undeclared && size_bytes != self.declared_size)
                    {
                        return Err(VideoError::SizeMismatch {
                            declared: self.declared_size,
                            actual: size_bytes,
                        });
                    }
                    Ok(vec![VideoEvent::SourceUploaded {
                        object_key,
                        size_bytes,
                        checksum,
                    }])
                }
                // The same completion delivered twice changes nothing.
                _ if self.source_key.as_deref() == Some(object_key.as_str()) => Ok(vec![]),
                stage => Err(VideoError::InvalidState {
                    action: "complete the upload",
                    stage,
                }),
            },
            VideoCommand::RequestEncoding => match self.stage {
                Stage::AwaitingUpload => Err(VideoError::SourceNotUploaded),
                Stage::Uploaded => Ok(vec![VideoEvent::EncodingRequested {
                    attempt: self.attempt + 1,
                }]),
                // Already requested: process managers deliver at least once.
                _ => Ok(vec![]),
            },
            VideoCommand::RetryEncoding => match self.stage {
                // A source that never arrived has nothing to encode.
                Stage::Failed if self.source_key.is_none() => Err(VideoError::SourceNotUploaded),
                Stage::Failed => Ok(vec![VideoEvent::EncodingRequested {
                    attempt: self.attempt + 1,
                }]),
                stage => Err(VideoError::InvalidState {
                    action: "retry encoding",
                    stage,
                }),
            },
            VideoCommand::ClaimEncoding {
                worker_id,
                attempt,
                lease_secs,
            } => {
                self.check_attempt(attempt)?;
                if lease_secs == 0 {
                    return Err(VideoError::InvalidProgress("lease must be at least 1 second".into()));
                }
                match (self.stage, &self.claim) {
                    (Stage::Queued, _) => {
                        if let Some(until) = self.not_before.filter(|until| now < *until) {
                            return Err(VideoError::BackoffActive { attempt, until });
                        }
                        Ok(vec![VideoEvent::EncodingClaimed {
                            attempt,
                            worker_id,
                            lease_until: now + Duration::seconds(i64::from(lease_secs)),
                        }])
                    }
                    (Stage::Encoding, Some(claim)) if now <= claim.lease_until => Err(VideoError::LeaseHeld {
                        attempt,
                        holder: claim.worker_id.clone(),
                        until: claim.lease_until,
                    }),
                    (Stage::Encoding, Some(claim)) => Err(VideoError::LeaseExpired {
                        attempt,
                        until: claim.lease_until,
                    }),
                    (stage, _) => Err(VideoError::InvalidState {
                        action: "claim encoding",
                        stage,
                    }),
                }
            }
            VideoCommand::RecordProbe {
                worker_id,
                attempt,
                probe,
            } => {
                self.check_holder(&worker_id, attempt, now)?;
                Ok(vec![VideoEvent::SourceProbed {
                    attempt,
                    worker_id,
                    probe,
                }])
            }
            VideoCommand::RecordProgress {
                worker_id,
                attempt,
                stage,
                rendition,
                percent,
                fps,
                eta_seconds,
                lease_secs,
            } => {
                self.check_holder(&worker_id, attempt, now)?;
                // A chunk's progress comes from its holder; one whose chunk went to another
                // worker after its lease lapsed has lost it.
                if !self.chunks.is_empty()
                    && !self
                        .chunks
                        .iter()
                        .any(|c| c.output.is_none() && c.claim.as_ref().is_some_and(|h| h.worker_id == worker_id))
                {
                    return Err(VideoError::NotClaimHolder {
                        worker: worker_id,
                        attempt,
                    });
                }
                if !(0.0..=100.0).contains(&percent) {
                    return Err(VideoError::InvalidProgress(format!(
                        "percent must be 0 to 100, got {percent}"
                    )));
                }
                if lease_secs == 0 {
                    return Err(VideoError::InvalidProgress("lease must be at least 1 second".into()));
                }
                Ok(vec![VideoEvent::EncodingProgressed {
                    attempt,
                    worker_id,
                    stage,
                    rendition,
                    percent,
                    fps,
                    eta_seconds,
                    lease_until: now + Duration::seconds(i64::from(lease_secs)),
                }])
            }
            VideoCommand::PlanChunks {
                worker_id,
                attempt,
                chunks,
            } => {
                self.check_holder(&worker_id, attempt, now)?;
                if self.claim.as_ref().is_some_and(|c| c.worker_id != worker_id) {
                    return Err(VideoError::NotClaimHolder {
                        worker: worker_id,
                        attempt,
                    });
                }
                if !self.chunks.is_empty() {
                    return Err(VideoError::InvalidPlan(format!("attempt {attempt} is already planned")));
                }
                if self.probe.is_none() {
                    return Err(VideoError::InvalidPlan("the source is not probed yet".into()));
                }
                validate_chunk_plan(&chunks)?;
                Ok(vec![VideoEvent::EncodingPlanned {
                    attempt,
                    worker_id,
                    chunks,
                }])
            }
            VideoCommand::ClaimChunk {
                worker_id,
                attempt,
                chunk,
                lease_secs,
            } => {
                let state = self.open_chunk("claim a chunk", attempt, chunk)?;
                if lease_secs == 0 {
                    return Err(VideoError::InvalidProgress("lease must be at least 1 second".into()));
                }
                let refuse = |reason: String| VideoError::Chunk { attempt, chunk, reason };
                if let Some(held) = state.claim.as_ref().filter(|c| now <= c.lease_until) {
                    if held.worker_id != worker_id {
                        return Err(refuse(format!(
                            "claimed by {} until {}",
                            held.worker_id, held.lease_until
                        )));
                    }
                }
                Ok(vec![VideoEvent::ChunkClaimed {
                    attempt,
                    chunk,
                    worker_id,
                    lease_until: now + Duration::seconds(i64::from(lease_secs)),
                }])
            }
            VideoCommand::ReleaseChunk {
                worker_id,
                attempt,
                chunk,
                reason,
            } => {
                let state = self.open_chunk("release a chunk", attempt, chunk)?;
                if state.claim.as_ref().is_none_or(|c| c.worker_id != worker_id) {
                    return Err(VideoError::Chunk {
                        attempt,
                        chunk,
                        reason: format!("{worker_id} does not hold it"),
                    });
                }
                Ok(vec![VideoEvent::ChunkReleased {
                    attempt,
                    chunk,
                    worker_id,
                    reason,
                }])
            }
            VideoCommand::CompleteChunk {
                worker_id,
                attempt,
                chunk,
                output,
            } => {
                let state = self.open_chunk("complete a chunk", attempt, chunk)?;
                let refuse = |reason: String| VideoError::Chunk { attempt, chunk, reason };
                match &state.claim {
                    Some(claim) if claim.worker_id == worker_id && now <= claim.lease_until => {}
                    Some(claim) if claim.worker_id == worker_id => {
                        return Err(refuse(format!("the lease lapsed at {}", claim.lease_until)))
                    }
                    _ => return Err(refuse(format!("{worker_id} does not hold it"))),
                }
                Ok(vec![VideoEvent::ChunkEncoded {
                    attempt,
                    chunk,
                    worker_id,
                    output,
                }])
            }
            VideoCommand::RecordRendition {
                worker_id,
                attempt,
                rendition,
            } => {
                self.check_holder(&worker_id, attempt, now)?;
                Ok(vec![VideoEvent::RenditionEncoded {
                    attempt,
                    worker_id,
                    rendition,
                }])
            }
            VideoCommand::MarkPlayable {
                worker_id,
                attempt,
                manifests,
            } => {
                self.check_holder(&worker_id, attempt, now)?;
                if self.playable {
                    return Ok(vec![]);
                }
                let mut events = vec![VideoEvent::VideoPlayable {
                    attempt,
                    worker_id,
                    manifests,
                }];
                events.extend(self.publish_on_its_own());
                Ok(events)
            }
            VideoCommand::CompleteEncoding {
                worker_id,
                attempt,
                manifests,
                poster_key,
                thumbnails_key,
                duration_ms,
                cost,
            } => {
                self.check_holder(&worker_id, attempt, now)?;
                if self.renditions.is_empty() {
                    return Err(VideoError::NoRenditions);
                }
                if let Some(missing) = self.chunks.iter().position(|c| c.output.is_none()) {
                    return Err(VideoError::Chunk {
                        attempt,
                        chunk: u32::try_from(missing).unwrap_or(u32::MAX),
                        reason: "not written yet: the attempt cannot complete".into(),
                    });
                }
                let mut events = vec![VideoEvent::EncodingCompleted {
                    attempt,
                    worker_id,
                    manifests,
                    poster_key,
                    thumbnails_key,
                    duration_ms,
                    cost,
                }];
                events.extend(self.publish_on_its_own());
                Ok(events)
            }
            VideoCommand::FailEncoding {
                worker_id,
                attempt,
                reason,
                retryable,
            } => {
                self.check_holder(&worker_id, attempt, now)?;
                Ok(vec![VideoEvent::EncodingFailed {
                    attempt,
                    worker_id: Some(worker_id),
                    reason,
                    retryable,
                }])
            }
            VideoCommand::RequeueEncoding {
                attempt,
                reason,
                max_attempts,
                backoff_base_secs,
                backoff_max_secs,
            } => {
                self.check_attempt(attempt)?;
                match (self.stage, &self.claim) {
                    (Stage::Retrying, _) => {}
                    // A lapsed chunk is claimed again by itself; the attempt goes on. Only when
                    // every chunk is written and no one completed it (the writer of the last
                    // one died before) does the attempt lapse.
                    (Stage::Encoding, _) if self.chunks.iter().any(|c| c.output.is_none()) => {
                        return Err(VideoError::InvalidState {
                            action: "requeue an attempt split into chunks",
                            stage: self.stage,
                        })
                    }
                    (Stage::Encoding, Some(claim)) if now > claim.lease_until => {}
                    (Stage::Encoding, Some(claim)) => {
                        return Err(VideoError::LeaseHeld {
                            attempt,
                            holder: claim.worker_id.clone(),
                            until: claim.lease_until,
                        })
                    }
                    (stage, _) => {
                        return Err(VideoError::InvalidState {
                            action: "requeue encoding",
                            stage,
                        })
                    }
                }
                let used = self.attempt - self.round_first_attempt + 1;
                if used >= max_attempts {
                    return Ok(vec![VideoEvent::EncodingFailed {
                        attempt,
                        worker_id: None,
                        reason: format!("gave up after {used} attempts: {reason}"),
                        retryable: false,
                    }]);
                }
                let backoff = backoff_secs(used, backoff_base_secs, backoff_max_secs);
                Ok(vec![VideoEvent::EncodingRequeued {
                    attempt: attempt + 1,
                    reason,
                    not_before: now + Duration::seconds(i64::from(backoff)),
                }])
            }
            VideoCommand::UpdateMetadata {
                title,
                description,
                tags,
            } => {
                let title = title.map(|t| validate_title(&t)).transpose()?;
                let description = description.map(|d| validate_description(&d)).transpose()?;
                let tags = tags.map(|t| validate_tags(&t)).transpose()?;
                let title = title.filter(|t| *t != self.metadata.title);
                let description = description.filter(|d| *d != self.metadata.description);
                let tags = tags.filter(|t| *t != self.metadata.tags);
                if title.is_none() && description.is_none() && tags.is_none() {
                    return Ok(vec![]);
                }
                Ok(vec![VideoEvent::MetadataUpdated {
                    title,
                    description,
                    tags,
                }])
            }
            VideoCommand::Publish => match self.stage {
                Stage::Ready if self.published => Ok(vec![]),
                Stage::Encoding if self.playable && self.published => Ok(vec![]),
                Stage::Ready => Ok(vec![VideoEvent::VideoPublished {}]),
                Stage::Encoding if self.playable => Ok(vec![VideoEvent::VideoPublished {}]),
                stage => Err(VideoError::NotEncoded(stage)),
            },
            VideoCommand::Unpublish => Ok(if self.published {
                vec![VideoEvent::VideoUnpublished {}]
            } else {
                vec![]
            }),
            VideoCommand::Delete { reason } => Ok(vec![VideoEvent::VideoDeleted { reason }]),
        }
    }

    /// `VideoPublished` when the owner asked for it at registration and it has not happened.
    fn publish_on_its_own(&self) -> Option<VideoEvent> {
        self.publish_when_playable.then_some(VideoEvent::VideoPublished {})
    }

    /// The attempt named must be the current one.
    fn check_attempt(&self, attempt: u32) -> Result<(), VideoError> {
        if attempt != self.attempt || attempt == 0 {
            return Err(VideoError::StaleAttempt {
                given: attempt,
                current: self.attempt,
            });
        }
        Ok(())
    }

    /// Only the holder of a live claim on the current attempt may report; once the attempt is
    /// split into chunks, so may every worker that claimed one of them.
    fn check_holder(&self, worker_id: &str, attempt: u32, now: DateTime<Utc>) -> Result<(), VideoError> {
        self.check_attempt(attempt)?;
        if self.stage == Stage::Encoding && !self.chunks.is_empty() {
            // Split: each chunk has its own lease; the attempt has none to lapse.
            let planner = self.claim.as_ref().is_some_and(|c| c.worker_id == worker_id);
            let took_part = self
                .chunks
                .iter()
                .any(|c| c.claim.as_ref().is_some_and(|held| held.worker_id == worker_id));
            return if planner || took_part {
                Ok(())
            } else {
                Err(VideoError::NotClaimHolder {
                    worker: worker_id.to_owned(),
                    attempt,
                })
            };
        }
        match (&self.claim, self.stage) {
            (Some(claim), Stage::Encoding) if claim.worker_id == worker_id => {
                if now > claim.lease_until {
                    Err(VideoError::LeaseExpired {
                        attempt,
                        until: claim.lease_until,
                    })
                } else {
                    Ok(())
                }
            }
            (Some(_), Stage::Encoding) | (None, Stage::Queued) => Err(VideoError::NotClaimHolder {
                worker: worker_id.to_owned(),
                attempt,
            }),
            (_, stage) => Err(VideoError::InvalidState {
                action: "report on encoding",
                stage,
            }),
        }
    }

    /// Applies one event. Infallible: events are facts.
    fn evolve(&mut self, event: VideoEvent) {
        match event {
            VideoEvent::VideoRegistered {
                owner,
                title,
                description,
                tags,
                filename,
                content_type,
                size_bytes,
                source_url,
                publish_when_playable,
            } => {
                self.stage = Stage::AwaitingUpload;
                self.publish_when_playable = publish_when_playable;
                self.source_url = source_url;
                self.owner = owner;
                self.metadata = Metadata {
                    title,
                    description,
                    tags,
                };
                self.filename = filename;
                self.content_type = content_type;
                self.declared_size = size_bytes;
            }
            VideoEvent::SourceIngestFailed { reason } => {
                self.stage = Stage::Failed;
                self.failure = Some(Failure {
                    attempt: 0,
                    reason,
                    retryable: false,
                });
            }
            VideoEvent::SourceUploaded {
                object_key,
                checksum,
                size_bytes,
            } => {
                self.stage = Stage::Uploaded;
                self.source_size = size_bytes;
                self.source_key = Some(object_key);
                self.source_checksum = checksum;
            }
            VideoEvent::EncodingRequested { attempt } => {
                self.start_attempt(attempt, None);
                self.round_first_attempt = attempt;
            }
            VideoEvent::EncodingRequeued {
                attempt, not_before, ..
            } => self.start_attempt(attempt, Some(not_before)),
            VideoEvent::EncodingClaimed {
                attempt,
                worker_id,
                lease_until,
            } => {
                self.stage = Stage::Encoding;
                self.claim = Some(Claim {
                    worker_id,
                    attempt,
                    lease_until,
                });
            }
            VideoEvent::SourceProbed { probe, .. } => self.probe = Some(probe),
            VideoEvent::EncodingProgressed {
                lease_until, worker_id, ..
            } => {
                if self.chunks.is_empty() {
                    if let Some(claim) = self.claim.as_mut() {
                        claim.lease_until = lease_until;
                    }
                } else {
                    // A chunk's holder reports: its chunks in progress and the attempt live on.
                    self.extend(lease_until);
                    for chunk in self.chunks.iter_mut().filter(|c| c.output.is_none()) {
                        if let Some(claim) = chunk.claim.as_mut().filter(|c| c.worker_id == worker_id) {
                            claim.lease_until = lease_until;
                        }
                    }
                }
            }
            VideoEvent::EncodingPlanned { chunks, .. } => {
                self.chunks = chunks
                    .into_iter()
                    .map(|span| Chunk {
                        span,
                        claim: None,
                        output: None,
                    })
                    .collect();
            }
            VideoEvent::ChunkClaimed {
                attempt,
                chunk,
                worker_id,
                lease_until,
            } => {
                self.extend(lease_until);
                if let Some(state) = self.chunks.get_mut(chunk as usize) {
                    state.claim = Some(Claim {
                        worker_id,
                        attempt,
                        lease_until,
                    });
                }
            }
            VideoEvent::ChunkReleased { chunk, .. } => {
                if let Some(state) = self.chunks.get_mut(chunk as usize) {
                    state.claim = None;
                }
            }
            VideoEvent::ChunkEncoded { chunk, output, .. } => {
                if let Some(state) = self.chunks.get_mut(chunk as usize) {
                    state.output = Some(output);
                }
            }
            VideoEvent::RenditionEncoded { rendition, .. } => self.renditions.push(rendition),
            VideoEvent::VideoPlayable { .. } => self.playable = true,
            VideoEvent::EncodingCompleted { .. } => {
                self.stage = Stage::Ready;
                self.playable = true;
                self.claim = None;
                self.failure = None;
            }
            VideoEvent::EncodingFailed {
                attempt,
                reason,
                retryable,
                ..
            } => {
                self.stage = if retryable { Stage::Retrying } else { Stage::Failed };
                self.claim = None;
                // A failed attempt's outputs are removed.
                self.playable = false;
                self.failure = Some(Failure {
                    attempt,
                    reason,
                    retryable,
                });
            }
            VideoEvent::VideoPublished {} => {
                self.published = true;
                // Asked for once: an owner who unpublishes later is not overruled.
                self.publish_when_playable = false;
            }
            VideoEvent::VideoUnpublished {} => self.published = false,
            VideoEvent::MetadataUpdated {
                title,
                description,
                tags,
            } => {
                if let Some(title) = title {
                    self.metadata.title = title;
                }
                if let Some(description) = description {
                    self.metadata.description = description;
                }
                if let Some(tags) = tags {
                    self.metadata.tags = tags;
                }
            }
            VideoEvent::VideoDeleted { .. } => {
                self.deleted = true;
                self.published = false;
                self.claim = None;
            }
        }
    }

    /// Chunk `chunk` of the current attempt, which must be encoding and the chunk not
    /// written yet: what claiming, releasing and completing a chunk all first require.
    fn open_chunk(&self, action: &'static str, attempt: u32, chunk: u32) -> Result<&Chunk, VideoError> {
        self.check_attempt(attempt)?;
        if self.stage != Stage::Encoding {
            return Err(VideoError::InvalidState {
                action,
                stage: self.stage,
            });
        }
        let refuse = |reason: String| VideoError::Chunk { attempt, chunk, reason };
        let state = self
            .chunks
            .get(chunk as usize)
            .ok_or_else(|| refuse(format!("the attempt has {} chunks", self.chunks.len())))?;
        if state.output.is_some() {
            return Err(refuse("already written".into()));
        }
        Ok(state)
    }

    /// The attempt's lease lasts at least until `until`.
    fn extend(&mut self, until: DateTime<Utc>) {
        if let Some(claim) = self.claim.as_mut() {
            claim.lease_until = claim.lease_until.max(until);
        }
    }

    /// The chunk `worker_id` may claim next: the first not written and not held by another
    /// worker (a lapsed lease counts as not held). `None` when the attempt is not split, or
    /// every chunk is written or held.
    pub fn claimable_chunk(&self, worker_id: &str, now: DateTime<Utc>) -> Option<u32> {
        if self.stage != Stage::Encoding {
            return None;
        }
        self.chunks
            .iter()
            .position(|c| {
                c.output.is_none()
                    && c.claim
                        .as_ref()
                        .is_none_or(|held| held.worker_id == worker_id || now > held.lease_until)
            })
            .and_then(|i| u32::try_from(i).ok())
    }

    fn start_attempt(&mut self, attempt: u32, not_before: Option<DateTime<Utc>>) {
        self.stage = Stage::Queued;
        self.attempt = attempt;
        self.not_before = not_before;
        self.claim = None;
        self.probe = None;
        self.chunks.clear();
        self.renditions.clear();
        self.playable = false;
    }
}

/// Exponential backoff: `base * 2^(used-1)`, capped at `max`.
pub(crate) fn backoff_secs(used: u32, base: u32, max: u32) -> u32 {
    let factor = 1u64 << used.saturating_sub(1).min(31);
    let secs = u64::from(base).saturating_mul(factor);
    u32::try_from(secs.min(u64::from(max))).unwrap_or(max)
}
