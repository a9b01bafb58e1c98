//! The worker: polls the job queue (woken at once by an offer made in its own process),
//! claims an attempt (the claim event decides between workers), probes, transcodes on blocking
//! threads while a heartbeat reports progress and extends the lease, uploads every output, and
//! only then records the renditions and the completion. Deletion or a lost lease stops the
//! encode and removes what it wrote.

mod chunks;
mod heartbeat;
mod job;
mod publish;
mod upload;

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument as _;
use uuid::Uuid;
use vodsource_commands::ports::{Clock, JobQueue, ObjectStore, StoreError};
use vodsource_commands::{CommandContext, CommandError, VideoCommands};
use vodsource_domain::{VideoCommand, VideoError};

use crate::ladder::LadderConfig;
use crate::media::limits::SourceLimits;
pub use crate::outcome::JobOutcome;
use crate::stats::EncoderStats;
pub use job::process_cpu_seconds;

tokio::task_local! {
    /// The correlation id of the job this task is running, for the commands it sends.
    static JOB_CORRELATION: Option<Uuid>;
}

/// How a worker behaves.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Names the worker in claims and events.
    pub worker_id: String,
    /// The ladder and encoder settings.
    pub ladder: LadderConfig,
    /// Lease taken by a claim and by each progress report.
    pub lease_secs: u32,
    /// Progress is reported (and the lease extended) this often.
    pub progress_every: Duration,
    /// The job queue is polled this often when idle (an offer made in this process wakes the
    /// worker at once).
    pub poll_every: Duration,
    /// Scratch space: each job gets a folder here, removed when the job ends.
    pub work_dir: PathBuf,
    /// What the worker agrees to encode, and for how long.
    pub limits: SourceLimits,
    /// Publish segments while encoding and record the attempt playable before its end;
    /// false: store every output at the end only.
    pub progressive: bool,
    /// Split sources into chunks of about this many seconds (whole segments) that any worker
    /// may claim, when they are at least two chunks long; 0: every worker encodes a source
    /// whole.
    pub chunk_seconds: u32,
    /// Encoding workers in this process, this one among them: a lead's buffer left to the
    /// memory available (`lead_buffer_mib` unset) is that memory's share of one of them.
    pub encoders_in_process: usize,
}

impl WorkerConfig {
    /// Defaults for a worker named `worker_id` working in `work_dir`.
    pub fn new(worker_id: impl Into<String>, work_dir: impl Into<PathBuf>) -> Self {
        Self {
            worker_id: worker_id.into(),
            ladder: LadderConfig::default(),
            lease_secs: 30,
            progress_every: Duration::from_secs(2),
            poll_every: Duration::from_millis(500),
            work_dir: work_dir.into(),
            limits: SourceLimits::default(),
            progressive: true,
            chunk_seconds: 0,
            encoders_in_process: 1,
        }
    }
}

/// Resolves when a job is offered through the queue's signal; never without one.
async fn offered(offers: Option<&mut tokio::sync::watch::Receiver<()>>) {
    if let Some(offers) = offers {
        if offers.changed().await.is_ok() {
            return;
        }
    }
    std::future::pending().await
}

/// A failure of the worker itself (not of a job).
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// A store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A command failed for a reason other than the domain refusing it.
    #[error(transparent)]
    Command(CommandError),
}

/// An encoding worker. Any number may run, in any processes that reach the same stores.
pub struct Worker {
    commands: VideoCommands,
    jobs: Arc<dyn JobQueue>,
    objects: Arc<dyn ObjectStore>,
    clock: Arc<dyn Clock>,
    config: WorkerConfig,
    stats: Arc<EncoderStats>,
}

impl Worker {
    /// A worker over these stores.
    pub fn new(
        commands: VideoCommands,
        jobs: Arc<dyn JobQueue>,
        objects: Arc<dyn ObjectStore>,
        clock: Arc<dyn Clock>,
        config: WorkerConfig,
    ) -> Self {
        Self {
            commands,
            jobs,
            objects,
            clock,
            config,
            stats: Arc::default(),
        }
    }

    /// Counts into `stats` (shared by the workers of a process) instead of its own.
    #[must_use]
    pub fn with_stats(mut self, stats: Arc<EncoderStats>) -> Self {
        self.stats = stats;
        self
    }

    /// This worker's id.
    pub fn id(&self) -> &str {
        &self.config.worker_id
    }

    /// The context of the worker's commands: the worker as actor, and the correlation id of
    /// the flow the job in progress belongs to.
    fn context(&self) -> CommandContext {
        CommandContext {
            actor: Some(format!("encoder:{}", self.config.worker_id)),
            correlation_id: JOB_CORRELATION.try_with(|c| *c).ok().flatten(),
            ..CommandContext::default()
        }
    }

    /// The correlation id of the flow that asked for the video's encoding: the newest one among
    /// its last events (the request or requeue the supervisor recorded). Best effort: `None`
    /// when the stream cannot be read.
    async fn correlation_of(&self, id: &str) -> Option<Uuid> {
        let store = self.commands.store();
        let version = store.load(id).await.ok()?.version;
        let recent = store.log().read_stream(id, version.saturating_sub(8), 8).await.ok()?;
        recent.iter().rev().find_map(|e| e.metadata.correlation_id)
    }

    /// Runs jobs until `shutdown` completes. A job in progress at shutdown is failed as
    /// retryable, so another worker takes it without waiting for the lease to lapse.
    ///
    /// # Errors
    /// Never for a job's failure; store failures are logged and retried with backoff.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), WorkerError> {
        tokio::pin!(shutdown);
        let stop = Arc::new(AtomicBool::new(false));
        let mut backoff = self.config.poll_every;
        let mut offers = self.jobs.offers();
        loop {
            // An offer made from here on wakes the idle wait below.
            if let Some(offers) = offers.as_mut() {
                offers.borrow_and_update();
            }
            let next = self.next_job_until(&stop);
            tokio::pin!(next);
            let result = tokio::select! {
                () = &mut shutdown => {
                    stop.store(true, Ordering::Relaxed);
                    // Let the job notice, fail its attempt as retryable and clean up.
                    let _ = next.await;
                    return Ok(());
                }
                result = &mut next => result,
            };
            match result {
                Ok(Some(outcome)) => {
                    tracing::info!(worker = %self.config.worker_id, ?outcome, "job ended");
                    backoff = self.config.poll_every;
                }
                Ok(None) => {
                    tokio::select! {
                        () = &mut shutdown => return Ok(()),
                        () = tokio::time::sleep(self.config.poll_every) => {}
                        () = offered(offers.as_mut()) => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(worker = %self.config.worker_id, error = %e, ?backoff, "store failure; retrying");
                    tokio::select! {
                        () = &mut shutdown => return Ok(()),
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// Claims one ready job and runs it to its end. `None` when no job could be claimed.
    ///
    /// # Errors
    /// A store failure.
    pub async fn run_one(&self) -> Result<Option<JobOutcome>, WorkerError> {
        self.next_job_until(&AtomicBool::new(false)).await
    }

    async fn next_job_until(&self, stop: &AtomicBool) -> Result<Option<JobOutcome>, WorkerError> {
        let ready = self.jobs.ready_jobs(self.clock.now(), 16).await?;
        for (video_id, attempt, _) in ready {
            // A queued attempt is claimed whole; a claimed one may offer a chunk.
            let chunk = if self.claim(&video_id, attempt).await? {
                None
            } else {
                match self.claim_next_chunk(&video_id, attempt).await? {
                    Some(chunk) => Some(chunk),
                    None => continue,
                }
            };
            let correlation = self.correlation_of(&video_id).await;
            let span = tracing::info_span!(
                "encode",
                video_id = %video_id,
                attempt,
                chunk,
                worker = %self.config.worker_id,
                correlation_id = correlation.map(tracing::field::display),
            );
            let job = async {
                match chunk {
                    None => self.work(&video_id, attempt, stop).await,
                    Some(chunk) => {
                        self.stats.started();
                        let outcome = self.work_chunks(&video_id, attempt, stop, Some(chunk)).await;
                        self.stats.ended(outcome.as_ref().ok());
                        outcome
                    }
                }
            }
            .instrument(span);
            return JOB_CORRELATION.scope(correlation, job).await.map(Some);
        }
        Ok(None)
    }

    /// Sends a command; a domain refusal is returned as a value.
    async fn send(&self, id: &str, command: VideoCommand) -> Result<Result<(), VideoError>, WorkerError> {
        match self.commands.execute(id, command, &self.context()).await {
            Ok(_) => Ok(Ok(())),
            Err(CommandError::Domain(refusal)) => Ok(Err(refusal)),
            Err(CommandError::Store(e)) => Err(WorkerError::Store(e)),
            Err(e) => Err(WorkerError::Command(e)),
        }
    }

    async fn claim(&self, id: &str, attempt: u32) -> Result<bool, WorkerError> {
        let command = VideoCommand::ClaimEncoding {
            worker_id: self.config.worker_id.clone(),
            attempt,
            lease_secs: self.config.lease_secs,
        };
        match self.send(id, command).await? {
            Ok(()) => {
                tracing::info!(worker = %self.config.worker_id, video_id = id, attempt, "claimed");
                Ok(true)
            }
            Err(refusal) => {
                tracing::debug!(worker = %self.config.worker_id, video_id = id, attempt, %refusal, "not claimed");
                Ok(false)
            }
        }
    }
}
