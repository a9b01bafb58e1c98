//! What the job and its heartbeat share, the heartbeat itself (progress reports that extend the
//! lease and notice deletion or a lost lease), and the bridge from the worker's stop flag into
//! the transcode.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vodsource_domain::{EncodeStage, VideoCommand};

use super::Worker;
use crate::chunking::percent_done;
use crate::media::{MediaError, Progress};

const STAGES: [EncodeStage; 5] = [
    EncodeStage::Probe,
    EncodeStage::Encode,
    EncodeStage::Package,
    EncodeStage::Thumbnails,
    EncodeStage::Upload,
];

pub(super) fn stage_index(stage: EncodeStage) -> u8 {
    STAGES.iter().position(|s| *s == stage).unwrap_or(0) as u8
}

/// What the heartbeat and the job share.
pub(super) struct Shared {
    pub(super) progress: Progress,
    pub(super) stage: AtomicU8,
    pub(super) cancel: AtomicBool,
    /// Why the heartbeat cancelled (deleted, lease lost).
    pub(super) stopped_because: std::sync::Mutex<Option<String>>,
    /// When the attempt must be done by, and the reason it fails with after that.
    pub(super) deadline: std::sync::Mutex<(Instant, String)>,
    /// Set (with the reason) once the heartbeat found the attempt past its deadline.
    pub(super) past: std::sync::Mutex<Option<String>>,
    /// The chunk of a split attempt this worker encodes, and the source's pictures: progress is
    /// then reported as the share of the whole source written.
    pub(super) chunk: std::sync::Mutex<Option<(u32, u64)>>,
}

impl Worker {
    /// Runs `job` under the heartbeat of `id`'s `attempt`. The heartbeat ends only by
    /// cancelling the job (through `shared`); the job's end ends the heartbeat.
    pub(super) async fn beating<T>(
        &self,
        id: &str,
        attempt: u32,
        shared: &Arc<Shared>,
        job: impl std::future::Future<Output = T>,
    ) -> T {
        let heartbeat = self.heartbeat(id, attempt, shared.clone());
        tokio::pin!(job);
        let heartbeat = async {
            heartbeat.await;
            std::future::pending::<()>().await;
        };
        tokio::select! {
            result = &mut job => result,
            () = heartbeat => unreachable!("the heartbeat never completes"),
        }
    }

    /// Reports progress every `progress_every`, extending the lease. A refusal (deleted,
    /// lease lost, attempt superseded) cancels the job; a store failure is retried at the next tick.
    pub(super) async fn heartbeat(&self, id: &str, attempt: u32, shared: Arc<Shared>) {
        let mut ticker = tokio::time::interval(self.config.progress_every);
        ticker.tick().await;
        let mut last: Option<(Instant, u64)> = None;
        loop {
            ticker.tick().await;
            if shared.check_deadline() {
                return;
            }
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
            let stage = match STAGES[usize::from(shared.stage.load(Ordering::Relaxed)).min(STAGES.len() - 1)] {
                EncodeStage::Encode if snapshot.packaging => EncodeStage::Package,
                stage => stage,
            };
            let chunk = *shared.chunk.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let percent = match (stage, chunk) {
                (_, Some((index, total_frames))) => match self.commands.store().load(id).await {
                    Ok(loaded) => {
                        let fraction = if stage == EncodeStage::Upload {
                            1.0
                        } else {
                            snapshot.percent() / 100.0
                        };
                        percent_done(&loaded.video, Some((index, fraction)), total_frames)
                    }
                    Err(_) => continue,
                },
                (EncodeStage::Upload, None) => 100.0,
                (_, None) => snapshot.percent(),
            };
            let command = VideoCommand::RecordProgress {
                worker_id: self.config.worker_id.clone(),
                attempt,
                stage,
                rendition: snapshot.rendition.clone().filter(|_| stage == EncodeStage::Encode),
                percent: (percent * 10.0).round() / 10.0,
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
    /// State for an attempt started at `started` that may run `allowed` before its probe.
    pub(super) fn new(started: Instant, allowed: Duration, reason: String) -> Self {
        Self {
            progress: Progress::default(),
            stage: AtomicU8::new(stage_index(EncodeStage::Probe)),
            cancel: AtomicBool::new(false),
            stopped_because: std::sync::Mutex::new(None),
            deadline: std::sync::Mutex::new((started + allowed, reason)),
            past: std::sync::Mutex::new(None),
            chunk: std::sync::Mutex::new(None),
        }
    }

    /// Moves the deadline to `started + allowed` (once the probe knows the duration).
    pub(super) fn set_deadline(&self, started: Instant, allowed: Duration, reason: String) {
        *self.deadline.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = (started + allowed, reason);
    }

    /// Cancels the attempt if it is past its deadline; says whether it did.
    pub(super) fn check_deadline(&self) -> bool {
        let (at, reason) = self
            .deadline
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if Instant::now() < at {
            return false;
        }
        *self.past.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(reason);
        self.cancel.store(true, Ordering::Relaxed);
        true
    }

    /// Why the attempt was stopped for running too long, if it was.
    pub(super) fn past_deadline(&self) -> Option<String> {
        self.past
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(super) fn set_stopped(&self, reason: String) {
        let mut slot = self
            .stopped_because
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        slot.get_or_insert(reason);
    }
}

/// Runs a transcode on a blocking thread inside the encode's span (video, attempt, worker),
/// so that what the transcode logs says which encode it belongs to.
pub(super) fn spawn_transcode<T: Send + 'static>(
    transcode: impl FnOnce() -> Result<T, MediaError> + Send + 'static,
) -> tokio::task::JoinHandle<Result<T, MediaError>> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(transcode))
}

/// Forwards the worker's stop flag into the transcode's cancel flag while it runs.
pub(super) struct StopWatch<'a> {
    stop: &'a AtomicBool,
    cancel: &'a AtomicBool,
}

impl<'a> StopWatch<'a> {
    pub(super) fn new(stop: &'a AtomicBool, cancel: &'a AtomicBool) -> Self {
        Self { stop, cancel }
    }

    pub(super) async fn watch<T>(
        &self,
        handle: tokio::task::JoinHandle<Result<T, MediaError>>,
    ) -> Result<T, MediaError> {
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
