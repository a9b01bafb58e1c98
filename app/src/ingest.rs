//! The ingest of sources named by URL: a process manager that follows the log, and for each
//! video registered with a `source_url` fetches the file into the object store and records
//! `SourceUploaded` — or, when it cannot, `SourceIngestFailed` with the reason.
//!
//! It runs under a lease (one ingest process at a time in the distributed shape) and fetches
//! several sources at once. Its checkpoint is the position before the oldest fetch still
//! running, so a process that dies mid-fetch is replaced by one that fetches that source
//! again; a source already recorded, a video deleted or one that failed is skipped.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use vodsource_commands::codec::Decoder;
use vodsource_commands::layout;
use vodsource_commands::ports::{
    CheckpointStore, Clock, EventLog, FetchError, Fetcher, LeaseStore, ObjectStore, PutError, RecordedEvent, StoreError,
};
use vodsource_commands::process::ProcessError;
use vodsource_commands::{CommandContext, CommandError, Subscription, VideoCommands};
use vodsource_domain::{Stage, VideoCommand, VideoEvent};

/// How the ingest behaves.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Checkpoint and lease name.
    pub name: String,
    /// Sources fetched at once.
    pub concurrency: usize,
    /// Attempts of a source whose server could not be reached or failed, before the video
    /// fails.
    pub attempts: u32,
    /// Wait before the second attempt, doubling after.
    pub backoff: Duration,
    /// A fetch taking longer than this fails the video.
    pub deadline: Duration,
    /// How long the process's lease lasts; renewed at a third of it.
    pub lease_ttl: Duration,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            name: "source-ingest".into(),
            concurrency: 4,
            attempts: 3,
            backoff: Duration::from_secs(2),
            deadline: Duration::from_secs(3 * 3600),
            lease_ttl: Duration::from_secs(15),
        }
    }
}

/// Fetches still running at most; past it the log is not read further until one ends.
const MAX_PENDING: usize = 256;

/// Why one fetch did not give a source.
enum Outcome {
    /// For good: the reason the video fails with.
    Failed(String),
    /// For now: try again after a while.
    Retry(String),
}

/// The ingest process. Cheap to share between its fetches.
pub struct SourceIngest {
    inner: Arc<Inner>,
}

struct Inner {
    commands: VideoCommands,
    log: Arc<dyn EventLog>,
    checkpoints: Arc<dyn CheckpointStore>,
    leases: Arc<dyn LeaseStore>,
    objects: Arc<dyn ObjectStore>,
    fetcher: Arc<dyn Fetcher>,
    clock: Arc<dyn Clock>,
    decoder: Decoder,
    owner: String,
    config: IngestConfig,
}

impl SourceIngest {
    /// An ingest named by `config.name`, running as `owner`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        commands: VideoCommands,
        log: Arc<dyn EventLog>,
        checkpoints: Arc<dyn CheckpointStore>,
        leases: Arc<dyn LeaseStore>,
        objects: Arc<dyn ObjectStore>,
        fetcher: Arc<dyn Fetcher>,
        clock: Arc<dyn Clock>,
        owner: String,
        config: IngestConfig,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                commands,
                log,
                checkpoints,
                leases,
                objects,
                fetcher,
                clock,
                decoder: Decoder::new(),
                owner,
                config,
            }),
        }
    }

    /// Runs until `shutdown` completes: takes the lease, follows the log, fetches. Store
    /// failures are logged and retried with backoff from the last checkpoint (fetches in
    /// flight are dropped and started again).
    ///
    /// # Errors
    /// An event that cannot be decoded: the process stops rather than skip it.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ProcessError> {
        tokio::pin!(shutdown);
        let inner = &self.inner;
        let mut backoff = Duration::from_millis(100);
        loop {
            match inner.clone().run_once(&mut shutdown).await {
                Ok(()) => {
                    let _ = inner.leases.release_lease(&inner.config.name, &inner.owner).await;
                    return Ok(());
                }
                Err(ProcessError::Decode(e)) => {
                    tracing::error!(process = %inner.config.name, error = %e, "stopped on an unreadable event");
                    return Err(ProcessError::Decode(e));
                }
                Err(e) => {
                    tracing::warn!(process = %inner.config.name, error = %e, ?backoff, "retrying");
                    tokio::select! {
                        () = &mut shutdown => return Ok(()),
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
}

impl Inner {
    async fn hold_lease(&self) -> Result<bool, StoreError> {
        self.leases
            .hold_lease(&self.config.name, &self.owner, &*self.clock, self.config.lease_ttl)
            .await
    }

    async fn run_once<F: Future<Output = ()> + Unpin>(self: Arc<Self>, shutdown: &mut F) -> Result<(), ProcessError> {
        let renew_every = self.config.lease_ttl / 3;
        while !self.hold_lease().await? {
            tokio::select! {
                () = &mut *shutdown => return Ok(()),
                () = tokio::time::sleep(renew_every) => {}
            }
        }
        let start = self.checkpoints.load_checkpoint(&self.config.name).await?;
        let mut subscription = Subscription::new(self.log.clone(), start);
        let permits = Arc::new(Semaphore::new(self.config.concurrency.max(1)));
        // Dropped with this attempt: its fetches stop, and the checkpoint brings them back.
        let mut fetches: JoinSet<Result<(), ProcessError>> = JoinSet::new();
        let mut positions: HashMap<tokio::task::Id, u64> = HashMap::new();
        let mut pending: BTreeSet<u64> = BTreeSet::new();
        let mut renew = tokio::time::interval(renew_every);
        let mut saved = start;
        loop {
            tokio::select! {
                () = &mut *shutdown => return Ok(()),
                _ = renew.tick() => {
                    if !self.hold_lease().await? {
                        return Err(ProcessError::Store(StoreError::LeaseLost(self.config.name.clone())));
                    }
                }
                batch = subscription.next_batch(), if pending.len() < MAX_PENDING => {
                    for event in &batch? {
                        if let Some((id, url)) = self.wanted(event)? {
                            let inner = self.clone();
                            let permits = permits.clone();
                            let handle = fetches.spawn(async move {
                                let _permit = permits.acquire_owned().await;
                                inner.ingest(&id, &url).await
                            });
                            positions.insert(handle.id(), event.position);
                            pending.insert(event.position);
                        }
                    }
                }
                Some(done) = fetches.join_next_with_id(), if !fetches.is_empty() => {
                    let (id, result) = match done {
                        Ok((id, result)) => (id, result),
                        Err(e) => (e.id(), Err(ProcessError::Store(StoreError::unavailable(format!("a fetch stopped: {e}"))))),
                    };
                    result?;
                    if let Some(position) = positions.remove(&id) {
                        pending.remove(&position);
                    }
                }
            }
            // Everything before the oldest fetch still running is done.
            let done = pending.first().map_or(subscription.position(), |oldest| oldest - 1);
            if done > saved {
                self.checkpoints
                    .save_checkpoint(&self.config.name, &self.owner, done)
                    .await?;
                saved = done;
            }
        }
    }

    /// The video and URL of a registration with a source to fetch.
    fn wanted(&self, event: &RecordedEvent) -> Result<Option<(String, String)>, ProcessError> {
        if event.stream_type != vodsource_domain::VIDEO_STREAM_TYPE || event.event_type != "VideoRegistered" {
            return Ok(None);
        }
        Ok(match self.decoder.decode(event)? {
            VideoEvent::VideoRegistered {
                source_url: Some(url), ..
            } => Some((event.stream_id.clone(), url)),
            _ => None,
        })
    }

    /// Fetches video `id`'s source from `url` unless the video moved on; records the source
    /// or the failure.
    #[tracing::instrument(name = "ingest", skip_all, fields(video_id = %id))]
    async fn ingest(&self, id: &str, url: &str) -> Result<(), ProcessError> {
        let mut attempt = 1;
        loop {
            let loaded = self.commands.store().load(id).await?;
            let video = &loaded.video;
            if video.deleted || video.stage != Stage::AwaitingUpload || video.source_url.as_deref() != Some(url) {
                return Ok(());
            }
            let reason = match self.fetch(id, url, &video.filename, video.declared_size).await? {
                Ok(()) => return Ok(()),
                Err(Outcome::Failed(reason)) => reason,
                Err(Outcome::Retry(reason)) if attempt < self.config.attempts => {
                    let wait = self.config.backoff * 2_u32.saturating_pow(attempt - 1);
                    tracing::info!(attempt, reason = %reason, ?wait, "the source could not be fetched; trying again");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                    continue;
                }
                Err(Outcome::Retry(reason)) => format!("{reason} (after {attempt} attempts)"),
            };
            tracing::info!(reason = %reason, "the source cannot be fetched");
            return self.send(id, VideoCommand::FailIngest { reason }).await.map(|_| ());
        }
    }

    /// One attempt: the file into the store, then `SourceUploaded`.
    async fn fetch(
        &self,
        id: &str,
        url: &str,
        filename: &str,
        declared: u64,
    ) -> Result<Result<(), Outcome>, ProcessError> {
        let limit = if declared > 0 {
            declared
        } else {
            self.commands.services().policy.max_source_bytes
        };
        let download = match self.fetcher.open(url, limit).await {
            Ok(download) => download,
            Err(FetchError::Refused(reason)) => return Ok(Err(Outcome::Failed(reason))),
            Err(FetchError::Unavailable(reason)) => return Ok(Err(Outcome::Retry(reason))),
        };
        if let Some(length) = download.length.filter(|l| declared > 0 && *l != declared) {
            return Ok(Err(Outcome::Failed(format!(
                "the file is {length} bytes, not the {declared} declared"
            ))));
        }
        let key = layout::source_key(id, filename);
        let written = tokio::time::timeout(self.config.deadline, self.objects.put(&key, download.body, limit)).await;
        let size = match written {
            Err(_) => {
                return Ok(Err(Outcome::Failed(format!(
                    "the download took longer than {} s",
                    self.config.deadline.as_secs()
                ))))
            }
            Ok(Err(PutError::TooLarge { limit })) => {
                return Ok(Err(Outcome::Failed(format!("the file is larger than {limit} bytes"))))
            }
            Ok(Err(PutError::Body(reason))) => return Ok(Err(Outcome::Retry(reason))),
            Ok(Err(PutError::Store(e))) => return Err(e.into()),
            Ok(Ok(size)) => size,
        };
        if declared > 0 && size != declared {
            self.objects.delete_prefix(&key).await?;
            return Ok(Err(Outcome::Failed(format!(
                "the file is {size} bytes, not the {declared} declared"
            ))));
        }
        let checksum = self.objects.head(&key).await?.and_then(|meta| meta.etag);
        let command = VideoCommand::CompleteUpload {
            object_key: key.clone(),
            size_bytes: size,
            checksum,
        };
        if !self.send(id, command).await? {
            // Deleted while it was fetched: its media were removed before this object came.
            self.objects.delete_prefix(&key).await?;
        }
        Ok(Ok(()))
    }

    /// Sends a command: whether it was taken. A domain refusal means the video moved on
    /// (deleted) and is not an error.
    async fn send(&self, id: &str, command: VideoCommand) -> Result<bool, ProcessError> {
        let context = CommandContext {
            actor: Some(format!("process:{}", self.config.name)),
            ..CommandContext::default()
        };
        match self.commands.execute(id, command, &context).await {
            Ok(_) => Ok(true),
            Err(CommandError::Domain(refusal)) => {
                tracing::debug!(video_id = id, %refusal, "the video moved on");
                Ok(false)
            }
            Err(CommandError::Store(e)) => Err(ProcessError::Store(e)),
            Err(e) => Err(ProcessError::Command(e)),
        }
    }
}
