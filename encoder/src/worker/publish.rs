//! Progressive publication: while the transcode writes, each segment the muxer has closed
//! goes to the object store at once, each track's playlist follows as an `EVENT` playlist
//! over what is stored, and once a player starting now would never catch up with the encoder
//! ([`keeps_ahead`]), the master playlist lists the rungs that keep ahead, a dynamic MPD
//! lists the same, and the attempt is recorded playable; the MPD follows each new segment
//! from then on. At the end the job uploads the rest, the `VOD` playlists and the static MPD.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Instant;

use vodsource_commands::layout;
use vodsource_domain::{Manifests, VideoCommand};

use super::heartbeat::Shared;
use super::upload::{in_waves, put, put_file, IN_FLIGHT};
use super::Worker;
use crate::ladder::{Fps, Segmenter};
use crate::manifest::{dash_mpd_dynamic, hls_master, init_timescale, media_playlist, Track, TrackKind};
use crate::media::package::{read_listing, segment, PLAYLIST};
use crate::media::{MediaError, PlannedTrack};
use crate::progressive::{keeps_ahead, next_master, rate, MARGIN_SECONDS};

/// The master playlist's name in the attempt's folder.
pub(super) const MASTER: &str = "master.m3u8";
/// The MPD's name in the attempt's folder.
pub(super) const MPD: &str = "manifest.mpd";

/// One track of the attempt, as far as its muxer has written it.
struct Progress {
    /// The segments its playlist lists (sizes read once), its init segment and its timescale
    /// (read from the init segment once).
    track: Track,
    /// Segments listed in the stored playlist.
    stored: usize,
    /// When the muxer last wrote its playlist (closed a segment), as this process's clock.
    grew_at: Option<Instant>,
}

/// What one attempt has published so far.
pub(super) struct Publisher {
    id: String,
    attempt: u32,
    dir: PathBuf,
    tracks: Vec<Progress>,
    /// Seconds of media the encode will have.
    total: f64,
    segment_seconds: u32,
    /// Where the video tracks' segments start.
    segmenter: Segmenter,
    fps: Fps,
    started: Instant,
    /// Files stored (relative to the attempt's folder), segments and init segments only:
    /// the final upload leaves them out.
    pub(super) uploaded: HashSet<String>,
    /// Bytes of those files.
    pub(super) bytes: u64,
    /// The dynamic MPD's `availabilityStartTime`, fixed when it is first written.
    available_from: Option<chrono::DateTime<chrono::Utc>>,
    /// The rungs the stored master lists.
    in_master: BTreeSet<String>,
    /// The rungs the first master waits for (the lead's: they advance together).
    first: BTreeSet<String>,
    /// Whether the attempt was recorded playable.
    playable: bool,
}

impl Publisher {
    pub(super) fn new(
        id: &str,
        attempt: u32,
        dir: &Path,
        (tracks, first): (Vec<PlannedTrack>, Vec<String>),
        total_seconds: f64,
        (segment_seconds, segmenter, fps): (u32, Segmenter, Fps),
    ) -> Self {
        let tracks = tracks
            .into_iter()
            .map(|planned| Progress {
                track: Track {
                    name: planned.name,
                    kind: planned.kind,
                    codecs: planned.codecs,
                    timescale: 0,
                    init: String::new(),
                    playlist: PLAYLIST.to_owned(),
                    segments: Vec::new(),
                },
                stored: 0,
                grew_at: None,
            })
            .collect();
        Self {
            id: id.to_owned(),
            attempt,
            dir: dir.to_owned(),
            tracks,
            total: total_seconds,
            segment_seconds,
            segmenter,
            fps,
            started: Instant::now(),
            uploaded: HashSet::new(),
            bytes: 0,
            available_from: None,
            in_master: BTreeSet::new(),
            first: first.into_iter().collect(),
            playable: false,
        }
    }

    /// Stores what the muxers closed since the last call, then the master and the playable
    /// mark when the time has come. A refusal of the mark (the lease went, the video was
    /// deleted) cancels the transcode.
    pub(super) async fn publish(&mut self, worker: &Worker, shared: &Shared) -> Result<(), MediaError> {
        // What each track that grew stores: its new files, then its playlist over them.
        let mut grown = Vec::new();
        for i in 0..self.tracks.len() {
            let name = self.tracks[i].track.name.clone();
            // The muxer rewrites its playlist through a rename: a read sees one whole version.
            let Some((init, listing)) = read_listing(&self.dir, &name)? else {
                continue;
            };
            let folder = self.dir.join(&name);
            let progress = &mut self.tracks[i];
            progress.track.init = init;
            let known = progress.track.segments.len();
            for (duration, uri) in listing.into_iter().skip(known) {
                progress.track.segments.push(segment(&folder, duration, uri)?);
            }
            if progress.track.segments.len() > known {
                // The encode's pace is measured to the moment the muxer closed the segment,
                // not to when this look came round.
                let ago = std::fs::metadata(folder.join(PLAYLIST))
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|at| std::time::SystemTime::now().duration_since(at).ok())
                    .unwrap_or_default();
                progress.grew_at = Some(Instant::now().checked_sub(ago).unwrap_or_else(Instant::now));
            }
            if progress.track.segments.len() == progress.stored {
                continue;
            }
            let init = format!("{name}/{}", progress.track.init);
            if progress.track.timescale == 0 {
                let bytes = tokio::fs::read(self.dir.join(&init))
                    .await
                    .map_err(|e| MediaError::io(format!("{init}: {e}")))?;
                progress.track.timescale = init_timescale(&bytes)
                    .ok_or_else(|| MediaError::internal(format!("{init} declares no timescale")))?;
            }
            let files: Vec<String> = std::iter::once(init)
                .chain(
                    progress.track.segments[progress.stored..]
                        .iter()
                        .map(|s| format!("{name}/{}", s.uri)),
                )
                .filter(|file| !self.uploaded.contains(file))
                .collect();
            grown.push(Grown {
                track: i,
                files,
                playlist: (
                    format!("{name}/{PLAYLIST}"),
                    media_playlist(&progress.track, self.segment_seconds, false),
                ),
                count: progress.track.segments.len(),
            });
        }
        // The tracks at once (each closes a segment at about the same time), each track's
        // files at once, and its playlist once they are stored.
        let (dir, id, attempt) = (&self.dir, self.id.as_str(), self.attempt);
        let stored = futures::future::try_join_all(grown.iter().map(|grown| async move {
            let files = grown.files.iter().collect();
            let bytes = in_waves(vec![files], IN_FLIGHT, |file| {
                put_file(worker, (id, attempt), dir, file)
            })
            .await?;
            let (name, text) = &grown.playlist;
            put(worker, id, attempt, name, text_body(text.clone())).await?;
            Ok::<u64, MediaError>(bytes)
        }))
        .await?;
        let grew = !grown.is_empty();
        for (grown, bytes) in grown.into_iter().zip(stored) {
            self.bytes += bytes;
            self.uploaded.extend(grown.files);
            self.tracks[grown.track].stored = grown.count;
        }
        if self.update_master(worker, shared).await? || !grew || !self.playable {
            return Ok(());
        }
        let (video, audio) = self.in_manifests();
        let mpd = self.mpd(worker, &video, audio.as_ref());
        self.store_text(worker, MPD, mpd).await
    }

    /// The tracks the manifests list now: the rungs in the master, and the audio, as stored.
    fn in_manifests(&self) -> (Vec<Track>, Option<Track>) {
        let mut video = Vec::new();
        let mut audio = None;
        for progress in self.tracks.iter().filter(|p| p.stored > 0) {
            let track = &progress.track;
            match track.kind {
                TrackKind::Audio { .. } => audio = Some(track.clone()),
                TrackKind::Video { .. } if self.in_master.contains(&track.name) => video.push(track.clone()),
                TrackKind::Video { .. } => {}
            }
        }
        (video, audio)
    }

    /// The dynamic MPD over `video` and `audio` as they are stored now.
    fn mpd(&mut self, worker: &Worker, video: &[Track], audio: Option<&Track>) -> String {
        let now = worker.clock.now();
        // Media time 0 counts as available as far back as what is stored now lasts: the
        // player's clock then reaches the stored end only as fast as playback does.
        let available_from = *self.available_from.get_or_insert_with(|| {
            let stored = video
                .iter()
                .chain(audio)
                .map(Track::duration)
                .fold(f64::INFINITY, f64::min);
            now - chrono::Duration::milliseconds((stored * 1000.0) as i64)
        });
        let rfc3339 = |at: chrono::DateTime<chrono::Utc>| at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        dash_mpd_dynamic(video, audio, &rfc3339(available_from), &rfc3339(now))
    }

    /// Lists in the master (and the MPD) the rungs that keep ahead of a player starting now
    /// (with the audio, which must keep ahead too), and marks the attempt playable the first
    /// time there is one. Whether it wrote them.
    async fn update_master(&mut self, worker: &Worker, shared: &Shared) -> Result<bool, MediaError> {
        // The encode's pace from its first picture: opening the source and the encoders is
        // behind it, not ahead.
        let began = shared.progress.began().unwrap_or(self.started);
        let segment = f64::from(self.segment_seconds);
        let fps = self.fps.as_f64();
        let ahead = |progress: &Progress| {
            let available = progress.track.duration();
            let (produced, rate) = match (&progress.track.kind, shared.progress.output(&progress.track.name)) {
                // A rung: its encoder's throughput since it gave out its first frame, and how
                // far it is past what is stored.
                (TrackKind::Video { .. }, Some(out)) => (
                    out.frames as f64 / fps,
                    rate(
                        out.frames.saturating_sub(1) as f64 / fps,
                        out.since.elapsed().as_secs_f64(),
                    ),
                ),
                // The audio: its pace from the first picture to its last segment's close
                // (the slow side; it is held a segment and more ahead of the lead).
                _ => {
                    let elapsed = progress
                        .grew_at
                        .map_or_else(|| began.elapsed(), |at| at.saturating_duration_since(began))
                        .as_secs_f64();
                    (available, rate(available, elapsed))
                }
            };
            // A short first segment is the video's; the audio's are all alike.
            let next = match progress.track.kind {
                TrackKind::Video { .. } => self.segmenter.next_seconds(available, self.fps),
                TrackKind::Audio { .. } => segment,
            };
            let ahead = progress.stored > 0
                && keeps_ahead(self.total, (available, produced), rate, (next, segment), MARGIN_SECONDS);
            tracing::trace!(track = %progress.track.name, available, produced, rate, ahead, "pace");
            ahead
        };
        // Which rungs, before any copy of a track: most calls change nothing.
        let mut names = BTreeSet::new();
        for progress in &self.tracks {
            let track = &progress.track;
            match track.kind {
                TrackKind::Audio { .. } if !ahead(progress) => return Ok(false),
                TrackKind::Video { .. } if ahead(progress) || self.in_master.contains(&track.name) => {
                    names.insert(track.name.clone());
                }
                TrackKind::Audio { .. } | TrackKind::Video { .. } => {}
            }
        }
        let Some(names) = next_master(&self.in_master, names, &self.first) else {
            return Ok(false);
        };
        self.in_master = names;
        let (video, audio) = self.in_manifests();
        let mpd = self.mpd(worker, &video, audio.as_ref());
        let master = hls_master(&video, audio.as_ref());
        futures::future::try_join(
            self.store_text(worker, MPD, mpd),
            self.store_text(worker, MASTER, master),
        )
        .await?;
        if self.playable {
            return Ok(true);
        }
        let base = layout::attempt_prefix(&self.id, self.attempt);
        let command = VideoCommand::MarkPlayable {
            worker_id: worker.config.worker_id.clone(),
            attempt: self.attempt,
            manifests: Manifests {
                hls_master_key: format!("{base}/{MASTER}"),
                dash_mpd_key: format!("{base}/{MPD}"),
            },
        };
        match worker.send(&self.id, command).await {
            Ok(Ok(())) => {
                self.playable = true;
                tracing::info!(
                    worker = %worker.config.worker_id,
                    video_id = %self.id,
                    attempt = self.attempt,
                    after_s = began.elapsed().as_secs_f64(),
                    rungs = ?self.in_master,
                    "playable"
                );
                Ok(true)
            }
            Ok(Err(refusal)) => {
                shared.set_stopped(refusal.to_string());
                shared.cancel.store(true, Ordering::Relaxed);
                Err(MediaError::cancelled(refusal.to_string()))
            }
            // The store failed: the mark is tried again at the next call.
            Err(e) => {
                tracing::warn!(video_id = %self.id, error = %e, "recording playable failed; trying again");
                self.in_master.clear();
                Ok(true)
            }
        }
    }

    async fn store_text(&self, worker: &Worker, name: &str, text: String) -> Result<(), MediaError> {
        put(worker, &self.id, self.attempt, name, text_body(text))
            .await
            .map(|_| ())
    }
}

/// What one track that grew stores in one round of publication.
struct Grown {
    /// Its place in the publisher's tracks.
    track: usize,
    /// Its files not stored yet (init segment, segments), relative to the attempt's folder.
    files: Vec<String>,
    /// Its playlist's name and text, stored after the files.
    playlist: (String, String),
    /// The segments that playlist lists.
    count: usize,
}

/// A body of `text`.
fn text_body(text: String) -> Box<dyn tokio::io::AsyncRead + Send + Unpin> {
    Box::new(std::io::Cursor::new(text.into_bytes()))
}
