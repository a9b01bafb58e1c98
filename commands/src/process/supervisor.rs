use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use vodsource_domain::{Clock, VideoCommand, VideoError, VideoEvent, VIDEO_STREAM_TYPE};

use crate::codec::{DecodeError, Decoder};
use crate::ports::{CheckpointStore, EventLog, JobQueue, LeaseStore, RecordedEvent, StoreError, TimeoutStore};
use crate::{CommandContext, CommandError, Subscription, VideoCommands};

/// Retry policy and timing of the supervisor.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// Checkpoint and lease name.
    pub name: String,
    /// Attempts per round before a terminal failure.
    pub max_attempts: u32,
    /// Backoff before the second attempt, doubling after.
    pub backoff_base_secs: u32,
    /// Backoff ceiling.
    pub backoff_max_secs: u32,
    /// How often lapsed leases are looked for.
    pub sweep_every: Duration,
    /// How long the supervisor's own lease lasts; renewed at a third of it.
    pub lease_ttl: Duration,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        Self {
            name: "encoding-supervisor".into(),
            max_attempts: 3,
            backoff_base_secs: 10,
            backoff_max_secs: 600,
            sweep_every: Duration::from_secs(1),
            lease_ttl: Duration::from_secs(15),
        }
    }
}

/// Why the supervisor stopped.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// An event it must read cannot be read.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A command failed for a reason other than the domain refusing it.
    #[error(transparent)]
    Command(CommandError),
}

/// Moves videos from upload to encoding and recovers failed or lapsed attempts.
pub struct EncodingSupervisor {
    commands: VideoCommands,
    log: Arc<dyn EventLog>,
    checkpoints: Arc<dyn CheckpointStore>,
    leases: Arc<dyn LeaseStore>,
    timeouts: Arc<dyn TimeoutStore>,
    jobs: Arc<dyn JobQueue>,
    clock: Arc<dyn Clock>,
    decoder: Decoder,
    owner: String,
    config: SupervisorConfig,
}

impl EncodingSupervisor {
    /// A supervisor named by `config.name`, running as `owner`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        commands: VideoCommands,
        log: Arc<dyn EventLog>,
        checkpoints: Arc<dyn CheckpointStore>,
        leases: Arc<dyn LeaseStore>,
        timeouts: Arc<dyn TimeoutStore>,
        jobs: Arc<dyn JobQueue>,
        clock: Arc<dyn Clock>,
        owner: String,
        config: SupervisorConfig,
    ) -> Self {
        Self {
            commands,
            log,
            checkpoints,
            leases,
            timeouts,
            jobs,
            clock,
            decoder: Decoder::new(),
            owner,
            config,
        }
    }

    fn context(&self, cause: &RecordedEvent) -> CommandContext {
        CommandContext {
            actor: Some(format!("process:{}", self.config.name)),
            correlation_id: cause.metadata.correlation_id,
            causation_id: Some(cause.event_id),
            expected_version: None,
        }
    }

    /// Reacts to one event of the log.
    ///
    /// # Errors
    /// A video event that does not decode, or a store failure.
    #[tracing::instrument(
        name = "supervise",
        skip_all,
        fields(
            video_id = %event.stream_id,
            position = event.position,
            event_type = %event.event_type,
            correlation_id = event.metadata.correlation_id.map(tracing::field::display),
        )
    )]
    pub async fn handle(&self, event: &RecordedEvent) -> Result<(), ProcessError> {
        if event.stream_type != VIDEO_STREAM_TYPE {
            return Ok(());
        }
        let id = event.stream_id.as_str();
        match self.decoder.decode(event)? {
            VideoEvent::SourceUploaded { .. } => {
                self.send(id, VideoCommand::RequestEncoding, &self.context(event))
                    .await?;
            }
            VideoEvent::EncodingRequested { attempt } => {
                self.timeouts.clear_deadline(id, attempt.saturating_sub(1)).await?;
                self.jobs.offer_job(id, attempt, event.occurred_at).await?;
            }
            VideoEvent::EncodingRequeued {
                attempt, not_before, ..
            } => {
                self.timeouts.clear_deadline(id, attempt.saturating_sub(1)).await?;
                self.jobs.offer_job(id, attempt, not_before).await?;
            }
            VideoEvent::EncodingClaimed {
                attempt, lease_until, ..
            } => {
                self.jobs.withdraw_job(id, attempt).await?;
                self.timeouts.set_deadline(id, attempt, lease_until).await?;
            }
            VideoEvent::EncodingProgressed {
                attempt, lease_until, ..
            } => self.timeouts.set_deadline(id, attempt, lease_until).await?,
            // Split into chunks, or a chunk given back: offered again, so that idle workers
            // find the chunks.
            VideoEvent::EncodingPlanned { attempt, .. } | VideoEvent::ChunkReleased { attempt, .. } => {
                self.jobs.offer_job(id, attempt, event.occurred_at).await?;
            }
            VideoEvent::EncodingFailed {
                attempt,
                retryable,
                reason,
                ..
            } => {
                self.timeouts.clear_deadline(id, attempt).await?;
                self.jobs.withdraw_job(id, attempt).await?;
                if retryable {
                    self.send(id, self.requeue(attempt, reason), &self.context(event))
                        .await?;
                }
            }
            VideoEvent::EncodingCompleted { attempt, .. } => {
                self.timeouts.clear_deadline(id, attempt).await?;
                self.jobs.withdraw_job(id, attempt).await?;
            }
            VideoEvent::VideoDeleted { .. } => {
                self.timeouts.clear_deadline(id, u32::MAX).await?;
                self.jobs.withdraw_job(id, u32::MAX).await?;
            }
            _ => {}
        }
        Ok(())
    }

    fn requeue(&self, attempt: u32, reason: String) -> VideoCommand {
        VideoCommand::RequeueEncoding {
            attempt,
            reason,
            max_attempts: self.config.max_attempts,
            backoff_base_secs: self.config.backoff_base_secs,
            backoff_max_secs: self.config.backoff_max_secs,
        }
    }

    /// Sends a command; a domain refusal means the situation has moved on and is not an error.
    async fn send(
        &self,
        id: &str,
        command: VideoCommand,
        context: &CommandContext,
    ) -> Result<Option<VideoError>, ProcessError> {
        match self.commands.execute(id, command, context).await {
            Ok(_) => Ok(None),
            Err(CommandError::Domain(refusal)) => {
                tracing::debug!(video_id = id, %refusal, "command no longer applies");
                Ok(Some(refusal))
            }
            Err(CommandError::Store(e)) => Err(ProcessError::Store(e)),
            Err(e) => Err(ProcessError::Command(e)),
        }
    }

    /// Requeues every attempt whose lease lapsed. Returns how many it acted on.
    ///
    /// # Errors
    /// A store failure.
    pub async fn sweep(&self) -> Result<usize, ProcessError> {
        let now = self.clock.now();
        let due = self.timeouts.due(now, 100).await?;
        let context = CommandContext {
            actor: Some(format!("process:{}", self.config.name)),
            ..CommandContext::default()
        };
        let count = due.len();
        for (id, attempt, _) in due {
            let command = self.requeue(attempt, "the worker's lease expired".into());
            match self.send(&id, command, &context).await? {
                // A progress event we have not read yet extended the lease.
                Some(VideoError::LeaseHeld { until, .. }) => self.timeouts.set_deadline(&id, attempt, until).await?,
                _ => self.timeouts.clear_deadline(&id, attempt).await?,
            }
        }
        Ok(count)
    }

    /// Handles everything in the log after the checkpoint, then sweeps once. For tests and
    /// one-shot runs; holds no lease.
    ///
    /// # Errors
    /// As [`Self::handle`] and [`Self::sweep`].
    pub async fn catch_up(&self) -> Result<u64, ProcessError> {
        let mut subscription = Subscription::new(
            self.log.clone(),
            self.checkpoints.load_checkpoint(&self.config.name).await?,
        );
        loop {
            let batch = subscription.try_next_batch().await?;
            if batch.is_empty() {
                break;
            }
            for event in &batch {
                self.handle(event).await?;
            }
            self.save(subscription.position()).await?;
        }
        self.sweep().await?;
        Ok(subscription.position())
    }

    async fn save(&self, position: u64) -> Result<(), ProcessError> {
        // Held-lease check happens in the store: a supervisor that lost its lease stops here.
        self.checkpoints
            .save_checkpoint(&self.config.name, &self.owner, position)
            .await?;
        Ok(())
    }

    async fn hold_lease(&self) -> Result<bool, StoreError> {
        self.leases
            .hold_lease(&self.config.name, &self.owner, &*self.clock, self.config.lease_ttl)
            .await
    }

    /// Runs until `shutdown` completes: takes the lease, follows the log, sweeps on a timer.
    /// Store failures are logged and retried with backoff from the last checkpoint.
    ///
    /// # Errors
    /// An event that cannot be decoded: the supervisor stops rather than skip it.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ProcessError> {
        tokio::pin!(shutdown);
        let mut backoff = Duration::from_millis(100);
        loop {
            let attempt = self.run_once(&mut shutdown).await;
            match attempt {
                Ok(()) => {
                    let _ = self.leases.release_lease(&self.config.name, &self.owner).await;
                    return Ok(());
                }
                Err(ProcessError::Decode(e)) => {
                    tracing::error!(supervisor = %self.config.name, error = %e, "stopped on an unreadable event");
                    return Err(ProcessError::Decode(e));
                }
                Err(e) => {
                    tracing::warn!(supervisor = %self.config.name, error = %e, ?backoff, "retrying");
                    tokio::select! {
                        () = &mut shutdown => return Ok(()),
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    async fn run_once<F: Future<Output = ()> + Unpin>(&self, shutdown: &mut F) -> Result<(), ProcessError> {
        let renew_every = self.config.lease_ttl / 3;
        while !self.hold_lease().await? {
            tokio::select! {
                () = &mut *shutdown => return Ok(()),
                () = tokio::time::sleep(renew_every) => {}
            }
        }
        let start = self.checkpoints.load_checkpoint(&self.config.name).await?;
        let mut subscription = Subscription::new(self.log.clone(), start);
        let mut sweep = tokio::time::interval(self.config.sweep_every.min(renew_every));
        let mut last_renew = tokio::time::Instant::now();
        loop {
            if last_renew.elapsed() >= renew_every {
                if !self.hold_lease().await? {
                    return Err(ProcessError::Store(StoreError::LeaseLost(self.config.name.clone())));
                }
                last_renew = tokio::time::Instant::now();
            }
            tokio::select! {
                () = &mut *shutdown => return Ok(()),
                batch = subscription.next_batch() => {
                    for event in &batch? {
                        self.handle(event).await?;
                    }
                    self.save(subscription.position()).await?;
                }
                _ = sweep.tick() => { self.sweep().await?; }
            }
        }
    }
}
