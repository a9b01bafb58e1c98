//! The worker: polls the job queue, claims an attempt (the claim event decides between
//! workers), probes, transcodes on blocking threads while a heartbeat reports progress and
//! extends the lease, uploads every output, and only then records the renditions and the
//! completion. Deletion or a lost lease stops the encode and removes what it wrote.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vodsource_commands::ports::{Clock, JobQueue, ObjectStore, PutError, StoreError};
use vodsource_commands::{CommandContext, CommandError, VideoCommands};
use vodsource_domain::{EncodeStage, EncodingCost, Manifests, Rendition, VideoCommand, VideoError};

use crate::ladder::LadderConfig;
use crate::media::{probe, transcode, Job, MediaError, MediaErrorKind, Packaged, Progress};

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
    /// The job queue is polled this often when idle.
    pub poll_every: Duration,
    /// Scratch space: each job gets a folder here, removed when the job ends.
    pub work_dir: PathBuf,
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
        }
    }
}

/// How one job ended.
#[derive(Debug, Clone, PartialEq)]
pub enum JobOutcome {
    /// The ladder is recorded.
    Completed {
        /// The video.
        video_id: String,
        /// The attempt.
        attempt: u32,
    },
    /// The attempt is recorded as failed.
    Failed {
        /// The video.
        video_id: String,
        /// The attempt.
        attempt: u32,
        /// Why.
        reason: String,
        /// Whether it will be tried again.
        retryable: bool,
    },
    /// The video was deleted or the lease was lost; partial outputs were removed.
    Abandoned {
        /// The video.
        video_id: String,
        /// The attempt.
        attempt: u32,
        /// Why.
        reason: String,
    },
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
}

const STAGES: [EncodeStage; 5] = [
    EncodeStage::Probe,
    EncodeStage::Encode,
    EncodeStage::Package,
    EncodeStage::Thumbnails,
    EncodeStage::Upload,
];

fn stage_index(stage: EncodeStage) -> u8 {
    STAGES.iter().position(|s| *s == stage).unwrap_or(0) as u8
}

/// What the heartbeat and the job share.
struct Shared {
    progress: Progress,
    stage: AtomicU8,
    cancel: AtomicBool,
    /// Why the heartbeat cancelled (deleted, lease lost).
    stopped_because: std::sync::Mutex<Option<String>>,
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
        }
    }

    /// This worker's id.
    pub fn id(&self) -> &str {
        &self.config.worker_id
    }

    fn context(&self) -> CommandContext {
        CommandContext::actor(format!("encoder:{}", self.config.worker_id))
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
        loop {
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
            if self.claim(&video_id, attempt).await? {
                return self.work(&video_id, attempt, stop).await.map(Some);
            }
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

    /// Runs a claimed attempt to an outcome. Whatever happens, the scratch folder goes.
    async fn work(&self, id: &str, attempt: u32, stop: &AtomicBool) -> Result<JobOutcome, WorkerError> {
        let scratch = self
            .config
            .work_dir
            .join(format!("{id}-{attempt}-{}", self.config.worker_id));
        let shared = Arc::new(Shared {
            progress: Progress::default(),
            stage: AtomicU8::new(stage_index(EncodeStage::Probe)),
            cancel: AtomicBool::new(false),
            stopped_because: std::sync::Mutex::new(None),
        });
        let heartbeat = self.heartbeat(id, attempt, shared.clone());
        let job = self.attempt(id, attempt, &scratch, &shared, stop);
        tokio::pin!(job);
        // The heartbeat ends only by cancelling the job; the job's end ends the heartbeat.
        let heartbeat = async {
            heartbeat.await;
            std::future::pending::<()>().await;
        };
        let result = tokio::select! {
            result = &mut job => result,
            () = heartbeat => unreachable!("the heartbeat never completes"),
        };
        let _ = tokio::fs::remove_dir_all(&scratch).await;
        let reason = shared
            .stopped_because
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let prefix = format!("media/{id}/{attempt}");
        match result {
            Ok(packaged_cost) => self.finish(id, attempt, packaged_cost).await,
            Err(error) if error.kind == MediaErrorKind::Cancelled && !stop.load(Ordering::Relaxed) => {
                self.objects.delete_prefix(&prefix).await?;
                let reason = reason.unwrap_or_else(|| "cancelled".into());
                tracing::info!(worker = %self.config.worker_id, video_id = id, attempt, %reason, "abandoned; partial outputs removed");
                Ok(JobOutcome::Abandoned {
                    video_id: id.to_owned(),
                    attempt,
                    reason,
                })
            }
            Err(error) => {
                self.objects.delete_prefix(&prefix).await?;
                let (reason, retryable) = if error.kind == MediaErrorKind::Cancelled {
                    ("the worker shut down during the encode".to_owned(), true)
                } else {
                    (error.message.clone(), error.retryable())
                };
                self.fail(id, attempt, reason, retryable).await
            }
        }
    }

    async fn fail(&self, id: &str, attempt: u32, reason: String, retryable: bool) -> Result<JobOutcome, WorkerError> {
        tracing::warn!(worker = %self.config.worker_id, video_id = id, attempt, %reason, retryable, "encoding failed");
        let command = VideoCommand::FailEncoding {
            worker_id: self.config.worker_id.clone(),
            attempt,
            reason: reason.clone(),
            retryable,
        };
        if let Err(refusal) = self.send(id, command).await? {
            // Deleted or the lease went meanwhile: nothing to record.
            return Ok(JobOutcome::Abandoned {
                video_id: id.to_owned(),
                attempt,
                reason: refusal.to_string(),
            });
        }
        Ok(JobOutcome::Failed {
            video_id: id.to_owned(),
            attempt,
            reason,
            retryable,
        })
    }

    /// Probe, transcode, upload. Returns what was uploaded and what it cost.
    async fn attempt(
        &self,
        id: &str,
        attempt: u32,
        scratch: &Path,
        shared: &Arc<Shared>,
        stop: &AtomicBool,
    ) -> Result<(Packaged, EncodingCost), MediaError> {
        let started = Instant::now();
        let cpu_before = process_cpu_seconds();
        let loaded = self
            .commands
            .store()
            .load(id)
            .await
            .map_err(|e| MediaError::io(format!("loading the video: {e}")))?;
        let key = loaded
            .video
            .source_key
            .clone()
            .ok_or_else(|| MediaError::bad("the video has no uploaded source"))?;
        tokio::fs::create_dir_all(scratch.join("out"))
            .await
            .map_err(|e| MediaError::io(format!("{}: {e}", scratch.display())))?;
        let source = match self.objects.local_path(&key).filter(|p| p.is_file()) {
            Some(path) => path,
            None => {
                let path = scratch.join("source");
                self.objects.fetch(&key, &path).await.map_err(|e| match e {
                    StoreError::Invalid(m) => MediaError::bad(format!("the uploaded source is gone: {m}")),
                    other => MediaError::io(format!("fetching the source: {other}")),
                })?;
                path
            }
        };
        let probed = {
            let source = source.clone();
            tokio::task::spawn_blocking(move || probe(&source))
                .await
                .map_err(|e| MediaError::internal(format!("the probe panicked: {e}")))??
        };
        let recorded = self
            .send(
                id,
                VideoCommand::RecordProbe {
                    worker_id: self.config.worker_id.clone(),
                    attempt,
                    probe: probed.probe.clone(),
                },
            )
            .await
            .map_err(|e| MediaError::io(e.to_string()))?;
        if let Err(refusal) = recorded {
            shared.set_stopped(refusal.to_string());
            return Err(MediaError {
                kind: MediaErrorKind::Cancelled,
                message: refusal.to_string(),
            });
        }
        shared.stage.store(stage_index(EncodeStage::Encode), Ordering::Relaxed);
        let packaged = {
            let stop_watch = StopWatch::new(stop, &shared.cancel);
            let shared = shared.clone();
            let out = scratch.join("out");
            let ladder = self.config.ladder.clone();
            let handle = tokio::task::spawn_blocking(move || {
                transcode(&Job {
                    source: &source,
                    probed: &probed,
                    out_dir: &out,
                    config: &ladder,
                    cancel: &shared.cancel,
                    progress: &shared.progress,
                })
            });
            stop_watch.watch(handle).await?
        };
        shared.stage.store(stage_index(EncodeStage::Upload), Ordering::Relaxed);
        let bytes_out = self
            .upload(id, attempt, &scratch.join("out"), &packaged, shared, stop)
            .await?;
        let cpu_seconds = match (cpu_before, process_cpu_seconds()) {
            (Some(before), Some(after)) => after - before,
            _ => 0.0,
        };
        let cost = EncodingCost {
            cpu_seconds: (cpu_seconds * 1000.0).round() / 1000.0,
            wall_seconds: (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
            bytes_out,
        };
        Ok((packaged, cost))
    }

    async fn upload(
        &self,
        id: &str,
        attempt: u32,
        dir: &Path,
        packaged: &Packaged,
        shared: &Shared,
        stop: &AtomicBool,
    ) -> Result<u64, MediaError> {
        let mut bytes = 0;
        for file in &packaged.files {
            if shared.cancel.load(Ordering::Relaxed) || stop.load(Ordering::Relaxed) {
                return Err(MediaError {
                    kind: MediaErrorKind::Cancelled,
                    message: "cancelled during upload".into(),
                });
            }
            let body = tokio::fs::File::open(dir.join(file))
                .await
                .map_err(|e| MediaError::io(format!("{file}: {e}")))?;
            let key = format!("media/{id}/{attempt}/{file}");
            bytes += self
                .objects
                .put(&key, Box::new(body), u64::MAX)
                .await
                .map_err(|e| match e {
                    PutError::Store(e) => MediaError::io(format!("uploading {key}: {e}")),
                    other => MediaError::io(format!("uploading {key}: {other}")),
                })?;
        }
        Ok(bytes)
    }

    /// Records the renditions and the completion. Everything is already in the object store.
    async fn finish(
        &self,
        id: &str,
        attempt: u32,
        (packaged, cost): (Packaged, EncodingCost),
    ) -> Result<JobOutcome, WorkerError> {
        let base = format!("media/{id}/{attempt}");
        let audio_codecs = packaged.audio.as_ref().map(|a| a.codecs.clone());
        for (plan, track) in &packaged.rungs {
            let codecs = match &audio_codecs {
                Some(audio) => format!("{},{audio}", track.codecs),
                None => track.codecs.clone(),
            };
            let rendition = Rendition {
                name: plan.name.clone(),
                width: plan.width,
                height: plan.height,
                bitrate_bps: plan.bitrate_bps,
                codecs,
                playlist_key: format!("{base}/{}/{}", track.name, track.playlist),
                bytes: track.bytes(),
            };
            let command = VideoCommand::RecordRendition {
                worker_id: self.config.worker_id.clone(),
                attempt,
                rendition,
            };
            if let Err(refusal) = self.send(id, command).await? {
                return self.abandon_after(id, attempt, refusal).await;
            }
        }
        let command = VideoCommand::CompleteEncoding {
            worker_id: self.config.worker_id.clone(),
            attempt,
            manifests: Manifests {
                hls_master_key: format!("{base}/{}", packaged.hls_master),
                dash_mpd_key: format!("{base}/{}", packaged.dash_mpd),
            },
            poster_key: packaged.poster.as_ref().map(|p| format!("{base}/{p}")),
            thumbnails_key: packaged.thumbnails.as_ref().map(|t| format!("{base}/{t}")),
            duration_ms: packaged.duration_ms,
            cost,
        };
        if let Err(refusal) = self.send(id, command).await? {
            return self.abandon_after(id, attempt, refusal).await;
        }
        Ok(JobOutcome::Completed {
            video_id: id.to_owned(),
            attempt,
        })
    }

    async fn abandon_after(&self, id: &str, attempt: u32, refusal: VideoError) -> Result<JobOutcome, WorkerError> {
        self.objects.delete_prefix(&format!("media/{id}/{attempt}")).await?;
        Ok(JobOutcome::Abandoned {
            video_id: id.to_owned(),
            attempt,
            reason: refusal.to_string(),
        })
    }

    /// Reports progress every `progress_every`, extending the lease. A refusal (deleted,
    /// lease lost, attempt superseded) cancels the job; a store failure is retried at the next tick.
    async fn heartbeat(&self, id: &str, attempt: u32, shared: Arc<Shared>) {
        let mut ticker = tokio::time::interval(self.config.progress_every);
        ticker.tick().await;
        let mut last: Option<(Instant, u64)> = None;
        loop {
            ticker.tick().await;
            let snapshot = shared.progress.snapshot();
            let now = Instant::now();
            let fps = last.map(|(at, frames)| {
                let secs = now.duration_since(at).as_secs_f64().max(0.001);
                snapshot.frames.saturating_sub(frames) as f64 / secs
            });
            last = Some((now, snapshot.frames));
            let eta = fps
                .filter(|f| *f > 0.0)
                .map(|f| (snapshot.total_frames.saturating_sub(snapshot.frames) as f64 / f).round() as u32);
            let stage = STAGES[usize::from(shared.stage.load(Ordering::Relaxed)).min(STAGES.len() - 1)];
            let command = VideoCommand::RecordProgress {
                worker_id: self.config.worker_id.clone(),
                attempt,
                stage,
                rendition: snapshot.rendition.clone().filter(|_| stage == EncodeStage::Encode),
                percent: if stage == EncodeStage::Upload {
                    100.0
                } else {
                    (snapshot.percent() * 10.0).round() / 10.0
                },
                fps: fps.map(|f| (f * 10.0).round() / 10.0),
                eta_seconds: eta,
                lease_secs: self.config.lease_secs,
            };
            match self.send(id, command).await {
                Ok(Ok(())) => {}
                Ok(Err(refusal)) => {
                    shared.set_stopped(refusal.to_string());
                    shared.cancel.store(true, Ordering::Relaxed);
                    return;
                }
                Err(e) => {
                    tracing::warn!(worker = %self.config.worker_id, video_id = id, error = %e, "progress not recorded")
                }
            }
        }
    }
}

impl Shared {
    fn set_stopped(&self, reason: String) {
        let mut slot = self
            .stopped_because
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        slot.get_or_insert(reason);
    }
}

/// Forwards the worker's stop flag into the transcode's cancel flag while it runs.
struct StopWatch<'a> {
    stop: &'a AtomicBool,
    cancel: &'a AtomicBool,
}

impl<'a> StopWatch<'a> {
    fn new(stop: &'a AtomicBool, cancel: &'a AtomicBool) -> Self {
        Self { stop, cancel }
    }

    async fn watch<T>(&self, handle: tokio::task::JoinHandle<Result<T, MediaError>>) -> Result<T, MediaError> {
        tokio::pin!(handle);
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                joined = &mut handle => {
                    return joined.map_err(|e| MediaError::internal(format!("the transcode panicked: {e}")))?;
                }
                _ = tick.tick() => {
                    if self.stop.load(Ordering::Relaxed) {
                        self.cancel.store(true, Ordering::Relaxed);
                    }
                }
            }
        }
    }
}

/// CPU seconds (user + system) this process has used, from `/proc/self/stat` (Linux). The
/// kernel reports them in USER_HZ ticks, which is 100 on every Linux ABI.
pub fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}
