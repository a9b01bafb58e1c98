//! A chunked attempt: claiming chunks, encoding one share of the source across the ladder (or
//! its audio) and storing it, and — by whichever worker writes the last chunk — the playlists
//! and manifests over every chunk, the renditions and the completion.
//!
//! Every chunk's lease is its own: a worker that dies costs its chunk, not the attempt. The
//! attempt lives on as long as any chunk's holder reports (the domain extends the attempt's
//! lease with each chunk's).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vodsource_commands::{layout, CommandError};
use vodsource_domain::{
    ChunkOutput, ChunkSegment, ChunkSpan, ChunkTrack, EncodeStage, EncodingCost, Manifests, Rendition, SpriteSheet,
    Video, VideoCommand,
};

use super::heartbeat::{spawn_transcode, stage_index, Shared, StopWatch};
use super::job::{cost_since, process_cpu_seconds};
use super::publish::{MASTER, MPD};
use super::upload::{in_waves, put, put_file, IN_FLIGHT};
use super::{JobOutcome, Worker, WorkerError};
use crate::chunking::segment_number;
use crate::ladder::Fps;
use crate::manifest::{dash_mpd, hls_master, media_playlist, Segment, Track, TrackKind};
use crate::media::package::PLAYLIST;
use crate::media::{
    probe, thumbnail_geometry, thumbnails_vtt, transcode_part, Job, MediaError, MediaErrorKind, Part, PartDone,
    AUDIO_SAMPLE_RATE,
};
use crate::stats::Step;

/// The WebVTT index of the thumbnails, under the attempt's folder.
const THUMBNAILS: &str = "thumbs/thumbnails.vtt";

impl Worker {
    /// Claims the next chunk of `id`'s `attempt` this worker may take: the first neither
    /// written nor held (a lapsed lease is not held). `None` when there is none.
    ///
    /// # Errors
    /// A store failure.
    pub(super) async fn claim_next_chunk(&self, id: &str, attempt: u32) -> Result<Option<u32>, WorkerError> {
        // Another worker may win the chunk seen free: look again, a few times.
        for _ in 0..4 {
            let video = self.commands.store().load(id).await?.video;
            if video.attempt != attempt {
                return Ok(None);
            }
            let Some(chunk) = video.claimable_chunk(&self.config.worker_id, self.clock.now()) else {
                return Ok(None);
            };
            let command = VideoCommand::ClaimChunk {
                worker_id: self.config.worker_id.clone(),
                attempt,
                chunk,
                lease_secs: self.config.lease_secs,
            };
            match self.send(id, command).await? {
                Ok(()) => {
                    tracing::info!(worker = %self.config.worker_id, video_id = id, attempt, chunk, "chunk claimed");
                    return Ok(Some(chunk));
                }
                Err(refusal) => {
                    tracing::debug!(worker = %self.config.worker_id, video_id = id, attempt, chunk, %refusal, "chunk not claimed");
                }
            }
        }
        Ok(None)
    }

    /// Writes chunks of the attempt (`first`, if claimed already, then whichever are free)
    /// until none is left to claim; completes the attempt if this worker wrote the last one.
    pub(super) async fn work_chunks(
        &self,
        id: &str,
        attempt: u32,
        stop: &AtomicBool,
        first: Option<u32>,
    ) -> Result<JobOutcome, WorkerError> {
        let mut next = first;
        let mut written = Vec::new();
        loop {
            if stop.load(Ordering::Relaxed) {
                if let Some(chunk) = next {
                    self.release_chunk(id, attempt, chunk, "the worker stopped before the chunk".into())
                        .await?;
                }
                break;
            }
            let chunk = match next.take() {
                Some(chunk) => chunk,
                None => match self.claim_next_chunk(id, attempt).await? {
                    Some(chunk) => chunk,
                    None => break,
                },
            };
            let version = match self.work_chunk(id, attempt, chunk, stop).await? {
                Ok(version) => version,
                Err(ended) => return Ok(ended),
            };
            written.push(chunk);
            let video = self.commands.store().load(id).await?.video;
            if video.attempt == attempt
                && video.chunks.iter().all(|c| c.output.is_some())
                && self.wrote_the_last_chunk(id, version).await?
            {
                return self.assemble(id, attempt, &video).await;
            }
        }
        Ok(JobOutcome::ChunksWritten {
            video_id: id.to_owned(),
            attempt,
            chunks: written,
        })
    }

    /// Gives a chunk this worker holds back unwritten (it is stopping), so that another worker
    /// takes it now rather than when its lease lapses. A refusal (the chunk is no longer this
    /// worker's, the attempt ended) is not an error.
    async fn release_chunk(&self, id: &str, attempt: u32, chunk: u32, reason: String) -> Result<(), WorkerError> {
        let release = VideoCommand::ReleaseChunk {
            worker_id: self.config.worker_id.clone(),
            attempt,
            chunk,
            reason,
        };
        match self.send(id, release).await? {
            Ok(()) => tracing::info!(worker = %self.config.worker_id, video_id = id, attempt, chunk, "chunk released"),
            Err(refusal) => {
                tracing::debug!(worker = %self.config.worker_id, video_id = id, attempt, chunk, %refusal, "chunk not released");
            }
        }
        Ok(())
    }

    /// Whether the chunk this worker recorded at stream version `version` was the last one
    /// written: no chunk was recorded after it. Exactly one worker finds so, and assembles.
    async fn wrote_the_last_chunk(&self, id: &str, version: u64) -> Result<bool, WorkerError> {
        let later = self.commands.store().log().read_stream(id, version, 10_000).await?;
        Ok(!later.iter().any(|e| e.event_type == "ChunkEncoded"))
    }

    /// Encodes and stores one claimed chunk and records it: the stream's version after the
    /// record, or how the attempt ended for this worker.
    async fn work_chunk(
        &self,
        id: &str,
        attempt: u32,
        chunk: u32,
        stop: &AtomicBool,
    ) -> Result<Result<u64, JobOutcome>, WorkerError> {
        let scratch = self
            .config
            .work_dir
            .join(format!("{id}-{attempt}-c{chunk}-{}", self.config.worker_id));
        let limits = &self.config.limits;
        let shared = Arc::new(Shared::new(
            Instant::now(),
            limits.wall_time_floor,
            limits.past_wall_time(limits.wall_time_floor),
        ));
        let job = self.chunk_job(id, attempt, chunk, &scratch, &shared, stop);
        let result = self.beating(id, attempt, &shared, job).await;
        let _ = tokio::fs::remove_dir_all(&scratch).await;
        let abandoned = |reason: String| {
            Err(JobOutcome::Abandoned {
                video_id: id.to_owned(),
                attempt,
                reason,
            })
        };
        match result {
            Ok(output) => {
                let command = VideoCommand::CompleteChunk {
                    worker_id: self.config.worker_id.clone(),
                    attempt,
                    chunk,
                    output,
                };
                match self.commands.execute(id, command, &self.context()).await {
                    Ok(outcome) => Ok(Ok(outcome.version)),
                    Err(CommandError::Domain(refusal)) => Ok(abandoned(refusal.to_string())),
                    Err(CommandError::Store(e)) => Err(WorkerError::Store(e)),
                    Err(e) => Err(WorkerError::Command(e)),
                }
            }
            Err(error) if error.kind == MediaErrorKind::Cancelled && shared.past_deadline().is_some() => {
                self.objects.delete_prefix(&layout::attempt_prefix(id, attempt)).await?;
                let reason = shared.past_deadline().unwrap_or_default();
                self.fail(id, attempt, reason, false).await.map(Err)
            }
            // Deleted, the lease lost, or this worker stopping (the chunk is released): another
            // worker writes it again; what this one stored is overwritten then.
            Err(error) if error.kind == MediaErrorKind::Cancelled => {
                let reason = shared
                    .stopped_because
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone()
                    .unwrap_or_else(|| "the worker stopped during the chunk".into());
                tracing::info!(worker = %self.config.worker_id, video_id = id, attempt, chunk, %reason, "chunk abandoned");
                if stop.load(Ordering::Relaxed) {
                    self.release_chunk(id, attempt, chunk, reason.clone()).await?;
                }
                Ok(abandoned(reason))
            }
            Err(error) => {
                self.objects.delete_prefix(&layout::attempt_prefix(id, attempt)).await?;
                let retryable = error.retryable();
                self.fail(id, attempt, format!("chunk {chunk}: {}", error.message), retryable)
                    .await
                    .map(Err)
            }
        }
    }

    /// Fetches the source, encodes the chunk's share of it and stores the segments (the init
    /// segments once, with the first run), the thumbnails and the poster.
    async fn chunk_job(
        &self,
        id: &str,
        attempt: u32,
        chunk: u32,
        scratch: &Path,
        shared: &Arc<Shared>,
        stop: &AtomicBool,
    ) -> Result<ChunkOutput, MediaError> {
        let started = Instant::now();
        let cpu_before = process_cpu_seconds();
        let video = self.video(id).await?;
        let span = video
            .chunks
            .get(chunk as usize)
            .map(|c| c.span.clone())
            .ok_or_else(|| MediaError::internal(format!("the attempt has no chunk {chunk}")))?;
        let recorded = video
            .probe
            .clone()
            .ok_or_else(|| MediaError::internal("a planned attempt without its probe"))?;
        let out = scratch.join("out");
        tokio::fs::create_dir_all(&out)
            .await
            .map_err(|e| MediaError::io(format!("creating the scratch folder: {}", e.kind())))?;
        let source = self.source_file(&video, scratch).await?;
        // The stream layout is read again from the file's headers; the numbers the plan was
        // made from (duration, frame rate) are the recorded probe's.
        let mut probed = {
            let source = source.clone();
            let _timer = self.timer(Step::Probe);
            tokio::task::spawn_blocking(move || probe(&source))
                .await
                .map_err(|e| MediaError::internal(format!("the probe panicked: {e}")))??
        };
        probed.probe = recorded;
        let fps = Fps::choose(probed.probe.frame_rate, self.config.ladder.max_fps);
        let total_seconds = probed.probe.duration_ms as f64 / 1000.0;
        let (part, seconds) = match span {
            ChunkSpan::Frames { from, to } => {
                let end = to.map_or(total_seconds, |to| to as f64 / fps.as_f64());
                (Part::Frames { from, to }, (end - from as f64 / fps.as_f64()).max(0.0))
            }
            ChunkSpan::Audio => (Part::Audio, total_seconds),
        };
        let total_frames = (total_seconds * fps.as_f64()).round() as u64;
        *shared.chunk.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some((chunk, total_frames));
        let limits = &self.config.limits;
        let allowed = limits.wall_time(Duration::from_secs_f64(seconds));
        shared.set_deadline(started, allowed, limits.past_wall_time(allowed));
        shared.stage.store(stage_index(EncodeStage::Encode), Ordering::Relaxed);
        let done = {
            let _timer = self.timer(Step::Transcode);
            let stop_watch = StopWatch::new(stop, &shared.cancel);
            let transcode_shared = shared.clone();
            let out = out.clone();
            let ladder = self.config.ladder.clone();
            let limits = limits.clone();
            let handle = spawn_transcode(move || {
                transcode_part(
                    &Job {
                        source: &source,
                        probed: &probed,
                        out_dir: &out,
                        config: &ladder,
                        limits: &limits,
                        cancel: &transcode_shared.cancel,
                        progress: &transcode_shared.progress,
                        lead: false,
                    },
                    part,
                )
            });
            stop_watch.watch(handle).await?
        };
        if shared.check_deadline() {
            return Err(MediaError::cancelled("past its time limit"));
        }
        shared.stage.store(stage_index(EncodeStage::Upload), Ordering::Relaxed);
        let bytes_out = {
            let _timer = self.timer(Step::Upload);
            let first_run = matches!(part, Part::Frames { from: 0, .. } | Part::Audio);
            // A chunk stores no playlist (the assembly writes those): one wave.
            let files = done.files.iter().filter(|f| stored_by_a_chunk(f, first_run)).collect();
            let out = &out;
            in_waves(vec![files], IN_FLIGHT, |file| async move {
                if shared.cancel.load(Ordering::Relaxed) || stop.load(Ordering::Relaxed) {
                    return Err(MediaError::cancelled("cancelled during upload"));
                }
                put_file(self, (id, attempt), out, file).await
            })
            .await?
        };
        let cost = cost_since(started, cpu_before, bytes_out);
        let media_ms = (seconds * 1000.0).round() as u64;
        self.stats.produced(cost.cpu_seconds, media_ms, bytes_out);
        chunk_output(&done, u64::from(self.config.ladder.audio_bitrate_kbps) * 1000, cost)
    }

    /// Writes the playlists and manifests over every chunk, records the renditions and
    /// completes the attempt.
    async fn assemble(&self, id: &str, attempt: u32, video: &Video) -> Result<JobOutcome, WorkerError> {
        let started = Instant::now();
        let cpu_before = process_cpu_seconds();
        let assembled = match self.assembled(video) {
            Ok(assembled) => assembled,
            Err(error) => {
                self.objects.delete_prefix(&layout::attempt_prefix(id, attempt)).await?;
                return self.fail(id, attempt, error.message.clone(), error.retryable()).await;
            }
        };
        let mut bytes_out = 0;
        for (name, text) in &assembled.files {
            let body = Box::new(std::io::Cursor::new(text.clone().into_bytes()));
            match put(self, id, attempt, name, body).await {
                Ok(bytes) => bytes_out += bytes,
                Err(error) => {
                    self.objects.delete_prefix(&layout::attempt_prefix(id, attempt)).await?;
                    return self.fail(id, attempt, error.message.clone(), error.retryable()).await;
                }
            }
        }
        let base = layout::attempt_prefix(id, attempt);
        let audio_codecs = assembled.audio.as_ref().map(|a| a.codecs.clone());
        for (track, bitrate_bps) in &assembled.video {
            let TrackKind::Video { width, height, .. } = track.kind else {
                continue;
            };
            let rendition = Rendition {
                name: track.name.clone(),
                width,
                height,
                bitrate_bps: *bitrate_bps,
                codecs: match &audio_codecs {
                    Some(audio) => format!("{},{audio}", track.codecs),
                    None => track.codecs.clone(),
                },
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
        // What every chunk cost, and the assembly.
        let assembly = cost_since(started, cpu_before, bytes_out);
        let cost = video
            .chunks
            .iter()
            .filter_map(|c| c.output.as_ref())
            .fold(assembly, |sum, o| EncodingCost {
                cpu_seconds: ((sum.cpu_seconds + o.cost.cpu_seconds) * 1000.0).round() / 1000.0,
                wall_seconds: ((sum.wall_seconds + o.cost.wall_seconds) * 1000.0).round() / 1000.0,
                bytes_out: sum.bytes_out + o.cost.bytes_out,
            });
        let command = VideoCommand::CompleteEncoding {
            worker_id: self.config.worker_id.clone(),
            attempt,
            manifests: Manifests {
                hls_master_key: format!("{base}/{MASTER}"),
                dash_mpd_key: format!("{base}/{MPD}"),
            },
            poster_key: assembled.poster.map(|p| format!("{base}/{p}")),
            thumbnails_key: assembled.thumbnails.then(|| format!("{base}/{THUMBNAILS}")),
            duration_ms: assembled.duration_ms,
            cost,
        };
        self.remove_earlier_attempts(id, attempt).await;
        if let Err(refusal) = self.send(id, command).await? {
            return self.abandon_after(id, attempt, refusal).await;
        }
        tracing::info!(worker = %self.config.worker_id, video_id = id, attempt, chunks = video.chunks.len(), "chunks assembled");
        Ok(JobOutcome::Completed {
            video_id: id.to_owned(),
            attempt,
        })
    }

    /// The tracks over every chunk of `video`'s attempt, and the files that list them.
    fn assembled(&self, video: &Video) -> Result<Assembled, MediaError> {
        let probe = video
            .probe
            .as_ref()
            .ok_or_else(|| MediaError::internal("a planned attempt without its probe"))?;
        let fps = Fps::choose(probe.frame_rate, self.config.ladder.max_fps);
        let runs: Vec<&ChunkOutput> = video
            .chunks
            .iter()
            .filter(|c| matches!(c.span, ChunkSpan::Frames { .. }))
            .filter_map(|c| c.output.as_ref())
            .collect();
        let first = runs
            .first()
            .ok_or_else(|| MediaError::internal("a plan without frames"))?;
        let mut tracks = Vec::new();
        for described in &first.tracks {
            let pieces =
                runs.iter()
                    .map(|run| {
                        run.tracks.iter().find(|t| t.name == described.name).ok_or_else(|| {
                            MediaError::internal(format!("a chunk without the {} track", described.name))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
            let kind = TrackKind::Video {
                width: described.width,
                height: described.height,
                fps: (fps.num, fps.den),
            };
            tracks.push((joined(described, &pieces, kind)?, described.bitrate_bps));
        }
        let audio = video
            .chunks
            .iter()
            .filter(|c| c.span == ChunkSpan::Audio)
            .filter_map(|c| c.output.as_ref())
            .flat_map(|o| o.tracks.iter())
            .next()
            .map(|described| {
                let kind = TrackKind::Audio {
                    channels: 2,
                    sample_rate: AUDIO_SAMPLE_RATE,
                };
                joined(described, &[described], kind)
            })
            .transpose()?;
        let target = self.config.ladder.segment_seconds;
        let mut files = Vec::new();
        for track in tracks.iter().map(|(t, _)| t).chain(audio.as_ref()) {
            files.push((
                format!("{}/{PLAYLIST}", track.name),
                media_playlist(track, target, true),
            ));
        }
        let sheets: Vec<(String, u64, usize)> = runs
            .iter()
            .flat_map(|r| r.sprites.iter())
            .map(|s| (s.name.clone(), s.first_tile, s.tiles as usize))
            .collect();
        if let (false, Some((top, _))) = (sheets.is_empty(), tracks.first()) {
            if let TrackKind::Video { width, height, .. } = top.kind {
                let geometry = thumbnail_geometry((width, height), fps, probe.duration_ms as f64 / 1000.0);
                files.push((THUMBNAILS.to_owned(), thumbnails_vtt(&sheets, geometry)));
            }
        }
        let video_tracks: Vec<Track> = tracks.iter().map(|(t, _)| t.clone()).collect();
        // The master and the MPD last: a player that finds them finds everything they list.
        files.push((MPD.to_owned(), dash_mpd(&video_tracks, audio.as_ref())));
        files.push((MASTER.to_owned(), hls_master(&video_tracks, audio.as_ref())));
        let duration_ms = (video_tracks.first().map_or(0.0, Track::duration) * 1000.0).round() as u64;
        Ok(Assembled {
            thumbnails: !sheets.is_empty(),
            poster: runs.iter().find_map(|r| r.poster.clone()),
            video: tracks,
            audio,
            files,
            duration_ms,
        })
    }
}

/// What the last chunk's writer stores and records.
struct Assembled {
    /// The rungs, largest first, with their target bitrates.
    video: Vec<(Track, u64)>,
    audio: Option<Track>,
    /// Files to store, in order: the tracks' playlists, the thumbnails' index, the MPD, the
    /// master.
    files: Vec<(String, String)>,
    poster: Option<String>,
    thumbnails: bool,
    duration_ms: u64,
}

/// One track over the pieces the chunks wrote, in order: the segments must follow on from one
/// another by number.
fn joined(described: &ChunkTrack, pieces: &[&ChunkTrack], kind: TrackKind) -> Result<Track, MediaError> {
    let mut segments = Vec::new();
    for piece in pieces {
        let expected = segments.len() as u64 + 1;
        if piece.first_segment != expected {
            return Err(MediaError::internal(format!(
                "the {} track's chunks do not join: segment {} follows segment {}",
                described.name,
                piece.first_segment,
                expected - 1
            )));
        }
        for s in &piece.segments {
            segments.push(Segment {
                uri: format!("seg_{:05}.m4s", segments.len() + 1),
                duration: s.duration,
                bytes: s.bytes,
            });
        }
    }
    Ok(Track {
        name: described.name.clone(),
        kind,
        codecs: described.codecs.clone(),
        timescale: described.timescale,
        init: "init.mp4".into(),
        playlist: PLAYLIST.into(),
        segments,
    })
}

/// Whether a chunk stores `file` of its output: not the muxer's own playlists (the last
/// chunk's writer stores the playlists over every chunk), and the init segments only from the
/// first run of frames and the audio (every run writes the same).
fn stored_by_a_chunk(file: &str, first_run: bool) -> bool {
    !file.ends_with(".m3u8") && (first_run || !file.ends_with("/init.mp4"))
}

/// What `done` wrote, as the chunk's event records it.
fn chunk_output(done: &PartDone, audio_bitrate_bps: u64, cost: EncodingCost) -> Result<ChunkOutput, MediaError> {
    let mut tracks = Vec::new();
    for (i, track) in done.tracks.iter().enumerate() {
        let (width, height, bitrate_bps) = match (done.rungs.get(i), &track.kind) {
            (Some(rung), TrackKind::Video { .. }) => (rung.width, rung.height, rung.bitrate_bps),
            _ => (0, 0, audio_bitrate_bps),
        };
        let first_segment = track
            .segments
            .first()
            .and_then(|s| segment_number(&s.uri))
            .ok_or_else(|| MediaError::internal(format!("the {} track's segments are not numbered", track.name)))?;
        tracks.push(ChunkTrack {
            name: track.name.clone(),
            codecs: track.codecs.clone(),
            width,
            height,
            bitrate_bps,
            timescale: track.timescale,
            first_segment,
            segments: track
                .segments
                .iter()
                .map(|s| ChunkSegment {
                    duration: s.duration,
                    bytes: s.bytes,
                })
                .collect(),
        });
    }
    Ok(ChunkOutput {
        tracks,
        sprites: done
            .sprites
            .iter()
            .map(|(name, first_tile, tiles)| SpriteSheet {
                name: name.clone(),
                first_tile: *first_tile,
                tiles: u32::try_from(*tiles).unwrap_or(u32::MAX),
            })
            .collect(),
        poster: done.poster.clone(),
        cost,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(first_segment: u64, durations: &[f64]) -> ChunkTrack {
        ChunkTrack {
            name: "360p".into(),
            codecs: "avc1.64001e".into(),
            width: 640,
            height: 360,
            bitrate_bps: 800_000,
            timescale: 15_360,
            first_segment,
            segments: durations
                .iter()
                .map(|d| ChunkSegment {
                    duration: *d,
                    bytes: 1000,
                })
                .collect(),
        }
    }

    #[test]
    fn chunks_join_into_one_track_numbered_as_one_encode() {
        let (a, b) = (piece(1, &[4.0, 4.0]), piece(3, &[4.0, 2.5]));
        let kind = TrackKind::Video {
            width: 640,
            height: 360,
            fps: (30, 1),
        };
        let track = joined(&a, &[&a, &b], kind.clone()).expect("joins");
        let uris: Vec<&str> = track.segments.iter().map(|s| s.uri.as_str()).collect();
        assert_eq!(
            uris,
            ["seg_00001.m4s", "seg_00002.m4s", "seg_00003.m4s", "seg_00004.m4s"]
        );
        assert!((track.duration() - 14.5).abs() < 1e-9);
        let gap = piece(4, &[4.0]);
        let error = joined(&a, &[&a, &gap], kind).expect_err("a missing segment");
        assert!(
            error.message.contains("segment 4 follows segment 2"),
            "{}",
            error.message
        );
    }

    #[test]
    fn only_the_first_run_stores_init_segments_and_no_chunk_stores_a_playlist() {
        assert!(stored_by_a_chunk("720p/init.mp4", true));
        assert!(!stored_by_a_chunk("720p/init.mp4", false));
        assert!(stored_by_a_chunk("720p/seg_00009.m4s", false));
        assert!(!stored_by_a_chunk("720p/index.m3u8", true));
        assert!(stored_by_a_chunk("thumbs/sprite_t000030.jpg", false));
    }
}
