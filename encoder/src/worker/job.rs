//! One claimed attempt, from the source to the recorded ladder (or its failure).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use vodsource_commands::layout;
use vodsource_commands::ports::{ObjectMeta, StoreError};
use vodsource_domain::{EncodeStage, EncodingCost, Manifests, Rendition, Video, VideoCommand, VideoError};

use super::heartbeat::{spawn_transcode, stage_index, Shared, StopWatch};
use super::publish::{Publisher, MASTER, MPD};
use super::upload::{in_waves, put_file, IN_FLIGHT};
use super::{JobOutcome, Worker, WorkerError};
use crate::chunking;
use crate::ladder::{Fps, Segmenter};
use crate::media::{lead_rungs, planned_tracks, probe, transcode, Job, MediaError, MediaErrorKind, Packaged};
use crate::stats::{EncoderStats, Step};

/// How often the muxers' playlists are looked at for segments to publish.
const PUBLISH_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

impl Worker {
    /// Runs a claimed attempt to an outcome. Whatever happens, the scratch folder goes.
    pub(super) async fn work(&self, id: &str, attempt: u32, stop: &AtomicBool) -> Result<JobOutcome, WorkerError> {
        self.stats.started();
        let outcome = self.work_counted(id, attempt, stop).await;
        // A store failure leaves the attempt to its lease: it lapses and the supervisor requeues it.
        self.stats.ended(outcome.as_ref().ok());
        outcome
    }

    async fn work_counted(&self, id: &str, attempt: u32, stop: &AtomicBool) -> Result<JobOutcome, WorkerError> {
        let scratch = self
            .config
            .work_dir
            .join(format!("{id}-{attempt}-{}", self.config.worker_id));
        let limits = &self.config.limits;
        let shared = Arc::new(Shared::new(
            Instant::now(),
            limits.wall_time_floor,
            limits.past_wall_time(limits.wall_time_floor),
        ));
        let job = self.attempt(id, attempt, &scratch, &shared, stop);
        let result = self.beating(id, attempt, &shared, job).await;
        let _ = tokio::fs::remove_dir_all(&scratch).await;
        let reason = shared
            .stopped_because
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let prefix = layout::attempt_prefix(id, attempt);
        match result {
            Ok(Attempted::Whole(done)) => self.finish(id, attempt, *done).await,
            // Split into chunks: this worker takes its share like any other.
            Ok(Attempted::Planned) => self.work_chunks(id, attempt, stop, None).await,
            // The attempt ran past its wall time: for good, whatever stage it was in.
            Err(error) if error.kind == MediaErrorKind::Cancelled && shared.past_deadline().is_some() => {
                self.objects.delete_prefix(&prefix).await?;
                let reason = shared.past_deadline().unwrap_or_default();
                self.fail(id, attempt, reason, false).await
            }
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

    pub(super) async fn fail(
        &self,
        id: &str,
        attempt: u32,
        reason: String,
        retryable: bool,
    ) -> Result<JobOutcome, WorkerError> {
        // Reasons are shown to the video's owner: no server paths.
        let reason = vodsource_domain::redact_paths(&reason);
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

    /// Probe, then either split into chunks, or transcode and upload (returning what was
    /// uploaded and what it cost).
    async fn attempt(
        &self,
        id: &str,
        attempt: u32,
        scratch: &Path,
        shared: &Arc<Shared>,
        stop: &AtomicBool,
    ) -> Result<Attempted, MediaError> {
        let started = Instant::now();
        let cpu_before = process_cpu_seconds();
        let video = self.video(id).await?;
        tokio::fs::create_dir_all(scratch.join("out"))
            .await
            .map_err(|e| MediaError::io(format!("creating the scratch folder: {}", e.kind())))?;
        let source = self.source_file(&video, scratch).await?;
        let probed = {
            let source = source.clone();
            let _timer = self.timer(Step::Probe);
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
            return Err(MediaError::cancelled(refusal.to_string()));
        }
        let limits = &self.config.limits;
        limits.check_probe(&probed.probe)?;
        let allowed = limits.wall_time(std::time::Duration::from_millis(probed.probe.duration_ms));
        shared.set_deadline(started, allowed, limits.past_wall_time(allowed));
        // The heartbeat checks between beats; the stages check as they go.
        if shared.check_deadline() {
            return Err(MediaError::cancelled("past its time limit"));
        }
        let fps = Fps::choose(probed.probe.frame_rate, self.config.ladder.max_fps);
        if let Some(chunks) = chunking::plan(
            probed.probe.duration_ms,
            fps,
            self.config.ladder.segment_seconds,
            self.config.chunk_seconds,
            probed.has_audio,
        ) {
            let command = VideoCommand::PlanChunks {
                worker_id: self.config.worker_id.clone(),
                attempt,
                chunks,
            };
            return match self
                .send(id, command)
                .await
                .map_err(|e| MediaError::io(e.to_string()))?
            {
                Ok(()) => Ok(Attempted::Planned),
                Err(refusal) => {
                    shared.set_stopped(refusal.to_string());
                    Err(MediaError::cancelled(refusal.to_string()))
                }
            };
        }
        shared.stage.store(stage_index(EncodeStage::Encode), Ordering::Relaxed);
        // A duration the probe could not tell: only an encode faster than playback is
        // published before its end.
        let total_seconds = match probed.probe.duration_ms {
            0 => f64::INFINITY,
            ms => ms as f64 / 1000.0,
        };
        let mut publisher = Publisher::new(
            id,
            attempt,
            &scratch.join("out"),
            (
                planned_tracks(&probed, &self.config.ladder)?,
                if self.config.progressive {
                    lead_rungs(&probed, &self.config.ladder)?
                } else {
                    Vec::new()
                },
            ),
            total_seconds,
            (
                self.config.ladder.segment_seconds,
                Segmenter::of(&self.config.ladder, fps),
                fps,
            ),
        );
        let packaged = {
            let _timer = self.timer(Step::Transcode);
            let stop_watch = StopWatch::new(stop, &shared.cancel);
            let transcode_shared = shared.clone();
            let out = scratch.join("out");
            let mut ladder = self.config.ladder.clone();
            // Unset: the memory available now, shared with this process's other encoders.
            if ladder.lead_buffer_mib.is_none() {
                ladder.lead_buffer_mib = Some(crate::ladder::auto_lead_buffer_mib(
                    crate::memory::available(),
                    self.config.encoders_in_process,
                ));
            }
            let limits = limits.clone();
            let progressive = self.config.progressive;
            let handle = spawn_transcode(move || {
                transcode(&Job {
                    source: &source,
                    probed: &probed,
                    out_dir: &out,
                    config: &ladder,
                    limits: &limits,
                    cancel: &transcode_shared.cancel,
                    progress: &transcode_shared.progress,
                    lead: progressive,
                })
            });
            let transcode = stop_watch.watch(handle);
            tokio::pin!(transcode);
            // A rung's closed segment is published at once (a viewer waits for the first
            // ones); the ticker catches the audio's and the rest.
            let closed = Arc::new(tokio::sync::Notify::new());
            let wake = closed.clone();
            shared.progress.on_segment(move || wake.notify_one());
            let mut ticker = tokio::time::interval(PUBLISH_EVERY);
            loop {
                tokio::select! {
                    biased;
                    packaged = &mut transcode => break packaged?,
                    () = closed.notified(), if self.config.progressive => {}
                    _ = ticker.tick(), if self.config.progressive => {}
                }
                if let Err(error) = publisher.publish(self, shared).await {
                    // The transcode's threads write into the scratch folder: they stop first.
                    shared.cancel.store(true, Ordering::Relaxed);
                    let _ = (&mut transcode).await;
                    return Err(error);
                }
            }
        };
        if shared.check_deadline() {
            return Err(MediaError::cancelled("past its time limit"));
        }
        shared.stage.store(stage_index(EncodeStage::Upload), Ordering::Relaxed);
        let bytes_out = {
            let _timer = self.timer(Step::Upload);
            publisher.bytes
                + self
                    .upload(
                        id,
                        attempt,
                        &scratch.join("out"),
                        &packaged,
                        &publisher.uploaded,
                        shared,
                        stop,
                    )
                    .await?
        };
        let cost = cost_since(started, cpu_before, bytes_out);
        self.stats.produced(cost.cpu_seconds, packaged.duration_ms, bytes_out);
        Ok(Attempted::Whole(Box::new((packaged, cost))))
    }

    /// The video as its stream says now.
    pub(super) async fn video(&self, id: &str) -> Result<Video, MediaError> {
        let loaded = self.commands.store().load(id).await;
        Ok(loaded
            .map_err(|e| MediaError::io(format!("loading the video: {e}")))?
            .video)
    }

    /// The video's source as a local file: the object store's own when it is local, else
    /// fetched into `scratch`. Exactly what `SourceUploaded` recorded: its size (and its ETag
    /// where the store keeps one), read with that bound, so an upload URL still in a client's
    /// hands cannot swap in other bytes.
    pub(super) async fn source_file(&self, video: &Video, scratch: &Path) -> Result<PathBuf, MediaError> {
        let key = video
            .source_key
            .clone()
            .ok_or_else(|| MediaError::bad("the video has no uploaded source"))?;
        let recorded = ObjectMeta {
            key: key.clone(),
            size: video.source_size,
            etag: video.source_checksum.clone(),
        };
        if let Some(path) = self.objects.local_path(&key).filter(|p| p.is_file()) {
            let size = tokio::fs::metadata(&path)
                .await
                .map_err(|e| MediaError::io(format!("reading the source's size: {}", e.kind())))?
                .len();
            if size != recorded.size {
                return Err(MediaError::bad(format!(
                    "the stored source is {size} bytes, not the {} recorded at upload",
                    recorded.size
                )));
            }
            return Ok(path);
        }
        let path = scratch.join("source");
        self.objects
            .fetch(&key, &path, Some(&recorded))
            .await
            .map_err(|e| match e {
                StoreError::Invalid(m) | StoreError::NotFound(m) => {
                    MediaError::bad(format!("the uploaded source is refused: {m}"))
                }
                other => MediaError::io(format!("fetching the source: {other}")),
            })?;
        Ok(path)
    }

    /// Adds the time until it is dropped to `step`'s total.
    pub(super) fn timer(&self, step: Step) -> StepTimer<'_> {
        StepTimer {
            stats: &self.stats,
            step,
            started: Instant::now(),
        }
    }

    /// Uploads what progressive publication has not: the last segments first, then the
    /// tracks' `VOD` playlists, then the master and the MPD, so that a player reading a
    /// playlist finds every segment it lists; many at once within each of those waves.
    #[allow(clippy::too_many_arguments)]
    async fn upload(
        &self,
        id: &str,
        attempt: u32,
        dir: &Path,
        packaged: &Packaged,
        uploaded: &HashSet<String>,
        shared: &Shared,
        stop: &AtomicBool,
    ) -> Result<u64, MediaError> {
        in_waves(upload_waves(&packaged.files, uploaded), IN_FLIGHT, |file| async move {
            if shared.cancel.load(Ordering::Relaxed) || stop.load(Ordering::Relaxed) {
                return Err(MediaError::cancelled("cancelled during upload"));
            }
            put_file(self, (id, attempt), dir, file).await
        })
        .await
    }

    /// Records the renditions and the completion. Everything is already in the object store.
    async fn finish(
        &self,
        id: &str,
        attempt: u32,
        (packaged, cost): (Packaged, EncodingCost),
    ) -> Result<JobOutcome, WorkerError> {
        let base = layout::attempt_prefix(id, attempt);
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
        self.remove_earlier_attempts(id, attempt).await;
        if let Err(refusal) = self.send(id, command).await? {
            return self.abandon_after(id, attempt, refusal).await;
        }
        Ok(JobOutcome::Completed {
            video_id: id.to_owned(),
            attempt,
        })
    }

    /// Removes what earlier attempts of `id` left in the object store: a worker that was
    /// killed (or cut off) cleans nothing up, and what it published while playable would stay.
    /// Earlier attempts never completed (a new one follows only a failure), so nothing in use
    /// goes. Best effort: a store that fails here does not fail the encode.
    pub(super) async fn remove_earlier_attempts(&self, id: &str, attempt: u32) {
        for earlier in 1..attempt {
            if let Err(e) = self.objects.delete_prefix(&layout::attempt_prefix(id, earlier)).await {
                tracing::warn!(worker = %self.config.worker_id, video_id = id, attempt = earlier, error = %e, "earlier attempt's outputs not removed");
            }
        }
    }

    pub(super) async fn abandon_after(
        &self,
        id: &str,
        attempt: u32,
        refusal: VideoError,
    ) -> Result<JobOutcome, WorkerError> {
        self.objects.delete_prefix(&layout::attempt_prefix(id, attempt)).await?;
        Ok(JobOutcome::Abandoned {
            video_id: id.to_owned(),
            attempt,
            reason: refusal.to_string(),
        })
    }
}

/// How the claimed attempt went on after its probe.
enum Attempted {
    /// Encoded whole by this worker: what it uploaded and what it cost.
    Whole(Box<(Packaged, EncodingCost)>),
    /// Split into chunks for any worker to claim.
    Planned,
}

/// The files the final upload stores, in waves: those not stored yet, segments (and
/// everything else) first, then the tracks' playlists, then the master and the MPD.
fn upload_waves<'a>(files: &'a [String], stored: &HashSet<String>) -> Vec<Vec<&'a String>> {
    let mut waves = vec![Vec::new(), Vec::new(), Vec::new()];
    for file in files.iter().filter(|f| !stored.contains(*f)) {
        let wave = match file.as_str() {
            MASTER | MPD => 2,
            f if f.ends_with(".m3u8") => 1,
            _ => 0,
        };
        waves[wave].push(file);
    }
    waves
}

/// What the work since `started` cost: the process's CPU seconds since `cpu_before` (its
/// reading then), wall seconds, and `bytes_out`, to the millisecond.
pub(super) fn cost_since(started: Instant, cpu_before: Option<f64>, bytes_out: u64) -> EncodingCost {
    let cpu_seconds = match (cpu_before, process_cpu_seconds()) {
        (Some(before), Some(after)) => after - before,
        _ => 0.0,
    };
    EncodingCost {
        cpu_seconds: (cpu_seconds * 1000.0).round() / 1000.0,
        wall_seconds: (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
        bytes_out,
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

pub(super) struct StepTimer<'a> {
    stats: &'a EncoderStats,
    step: Step,
    started: Instant,
}

impl Drop for StepTimer<'_> {
    fn drop(&mut self) {
        self.stats.step(self.step, self.started.elapsed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_final_upload_skips_what_is_stored_and_puts_segments_before_playlists_before_manifests() {
        let files: Vec<String> = [
            "720p/index.m3u8",
            "720p/init.mp4",
            "720p/seg_00001.m4s",
            "720p/seg_00002.m4s",
            "audio/index.m3u8",
            "audio/seg_00001.m4s",
            "manifest.mpd",
            "master.m3u8",
            "poster.jpg",
        ]
        .map(String::from)
        .to_vec();
        let stored: HashSet<String> = ["720p/init.mp4", "720p/seg_00001.m4s"].map(String::from).into();
        let waves: Vec<Vec<&str>> = upload_waves(&files, &stored)
            .into_iter()
            .map(|wave| wave.into_iter().map(String::as_str).collect())
            .collect();
        assert_eq!(
            waves,
            [
                vec!["720p/seg_00002.m4s", "audio/seg_00001.m4s", "poster.jpg"],
                vec!["720p/index.m3u8", "audio/index.m3u8"],
                vec!["manifest.mpd", "master.m3u8"],
            ]
        );
    }
}
