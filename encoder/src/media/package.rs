//! After the encodes: the tracks as the muxer wrote them, the master playlist and the MPD over
//! them, the thumbnails, and the list of every file.

use std::path::{Path, PathBuf};

use super::{audio, fmp4, thumbs, video, MediaError, Packaged, PlannedTrack};
use crate::ladder::{Fps, RungPlan};
use crate::manifest::{dash_mpd, hls_master, media_playlist, parse_media_playlist, Segment, Track};

/// The media playlist's name in each track's folder.
pub const PLAYLIST: &str = "index.m3u8";

/// A media playlist's init segment and `(duration, uri)` of each segment.
pub type Listing = (String, Vec<(f64, String)>);

/// What the playlist in `dir/name` lists now: its init segment and `(duration, uri)` of each
/// segment — while the muxer writes, those closed so far (`None` before the first).
///
/// # Errors
/// An unreadable playlist.
pub fn read_listing(dir: &Path, name: &str) -> Result<Option<Listing>, MediaError> {
    let text = match std::fs::read_to_string(dir.join(name).join(PLAYLIST)) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(MediaError::io(format!("the {name} playlist: {e}"))),
    };
    // Opening the muxer creates the file empty; its first version replaces it (every version
    // after is written aside and renamed over it).
    if text.is_empty() {
        return Ok(None);
    }
    parse_media_playlist(&text)
        .map(Some)
        .map_err(|e| MediaError::internal(format!("{name}: {e}")))
}

/// Segment `uri` of the track in `folder`, with its size on disk.
///
/// # Errors
/// A listed segment that is not there.
pub fn segment(folder: &Path, duration: f64, uri: String) -> Result<Segment, MediaError> {
    let bytes = file_size(&folder.join(&uri))?;
    Ok(Segment { uri, duration, bytes })
}

/// The complete track `planned` in `dir`, its playlist rewritten as `VOD` over the same
/// segments.
fn track(dir: &Path, planned: &PlannedTrack, timescale: u32, target: u32) -> Result<Track, MediaError> {
    let name = &planned.name;
    let track = part_track(dir, planned, timescale)?;
    // Through a rename, as the muxer writes it: the worker may be reading it meanwhile.
    let path = dir.join(name).join(PLAYLIST);
    let temporary = path.with_extension("m3u8.vod");
    std::fs::write(&temporary, media_playlist(&track, target, true))
        .and_then(|()| std::fs::rename(&temporary, &path))
        .map_err(|e| MediaError::io(format!("the {name} playlist: {e}")))?;
    Ok(track)
}

/// The track `planned` as its muxer wrote it in `dir` (a whole encode's, or one share of a
/// chunked encode's): the segments listed, the playlist left as it is.
pub(super) fn part_track(dir: &Path, planned: &PlannedTrack, timescale: u32) -> Result<Track, MediaError> {
    let name = &planned.name;
    let (init, listed) =
        read_listing(dir, name)?.ok_or_else(|| MediaError::io(format!("the {name} playlist was not written")))?;
    let folder = dir.join(name);
    let segments = listed
        .into_iter()
        .map(|(duration, uri)| segment(&folder, duration, uri))
        .collect::<Result<Vec<_>, _>>()?;
    if segments.is_empty() {
        return Err(MediaError::internal(format!("the {name} track has no segments")));
    }
    Ok(Track {
        name: name.clone(),
        kind: planned.kind.clone(),
        codecs: planned.codecs.clone(),
        timescale,
        init,
        playlist: PLAYLIST.to_owned(),
        segments,
    })
}

/// Moves the segments of `track` (one share of a chunked encode, in `dir`) to their place in
/// the whole presentation: the first fragment decodes at `decode_time` (the track's timescale)
/// and is fragment number `number + 1` (segment `number` counted from 0: one fragment per
/// segment), the others follow as they were.
pub(super) fn place(dir: &Path, track: &Track, decode_time: i64, number: u64) -> Result<(), MediaError> {
    let folder = dir.join(&track.name);
    let bad = |what: String| MediaError::internal(format!("{}: {what}", track.name));
    let Some(first) = track.segments.first() else {
        return Ok(());
    };
    let first = std::fs::read(folder.join(&first.uri)).map_err(|e| MediaError::io(format!("{}: {e}", first.uri)))?;
    let times = fmp4::fragment_times(&first)
        .map_err(bad)?
        .ok_or_else(|| bad("a segment without a fragment".into()))?;
    let decode_delta = decode_time - i64::try_from(times.decode_time).map_err(|_| bad("decode time".into()))?;
    let sequence_delta =
        i64::try_from(number).map_err(|_| bad("segment number".into()))? + 1 - i64::from(times.sequence);
    if decode_delta == 0 && sequence_delta == 0 {
        return Ok(());
    }
    for segment in &track.segments {
        let path = folder.join(&segment.uri);
        let mut bytes = std::fs::read(&path).map_err(|e| MediaError::io(format!("{}: {e}", segment.uri)))?;
        fmp4::shift(&mut bytes, decode_delta, sequence_delta).map_err(|e| bad(format!("{}: {e}", segment.uri)))?;
        std::fs::write(&path, bytes).map_err(|e| MediaError::io(format!("{}: {e}", segment.uri)))?;
    }
    Ok(())
}

fn file_size(path: &Path) -> Result<u64, MediaError> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| MediaError::io(format!("{}: {e}", path.display())))
}

/// Writes the manifests and thumbnails and lists what the transcode produced.
#[allow(clippy::too_many_arguments)]
pub(super) fn package(
    out_dir: &Path,
    rungs: &[RungPlan],
    done: &[video::RungDone],
    audio: Option<&audio::AudioDone>,
    fps: Fps,
    segment_seconds: u32,
    thumbnails: thumbs::Thumbnailer,
    encoded_s: f64,
) -> Result<Packaged, MediaError> {
    let mut tracks = Vec::with_capacity(rungs.len());
    for (rung, done) in rungs.iter().zip(done) {
        let planned = PlannedTrack::video(rung, fps);
        tracks.push((rung.clone(), track(out_dir, &planned, done.timescale, segment_seconds)?));
    }
    let audio = audio
        .map(|a| track(out_dir, &PlannedTrack::audio(), a.timescale, segment_seconds))
        .transpose()?;
    let video: Vec<Track> = tracks.iter().map(|(_, t)| t.clone()).collect();
    let write = |name: &str, text: String| {
        std::fs::write(out_dir.join(name), text).map_err(|e| MediaError::io(format!("{name}: {e}")))
    };
    write("master.m3u8", hls_master(&video, audio.as_ref()))?;
    write("manifest.mpd", dash_mpd(&video, audio.as_ref()))?;
    let (poster, sprites) = thumbnails.finish(out_dir)?;
    let mut files = Vec::new();
    list_files(out_dir, out_dir, &mut files)?;
    files.sort();
    Ok(Packaged {
        rungs: tracks,
        audio,
        hls_master: "master.m3u8".into(),
        dash_mpd: "manifest.mpd".into(),
        poster,
        thumbnails: sprites,
        duration_ms: (encoded_s * 1000.0).round() as u64,
        files,
        second_decode_from: None,
        spilled: None,
    })
}

pub(super) fn list_files(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), MediaError> {
    let entries = std::fs::read_dir(dir).map_err(|e| MediaError::io(format!("{}: {e}", dir.display())))?;
    for entry in entries {
        let path: PathBuf = entry.map_err(|e| MediaError::io(e.to_string()))?.path();
        if path.is_dir() {
            list_files(root, &path, out)?;
        } else if let Ok(relative) = path.strip_prefix(root) {
            let parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            out.push(parts.join("/"));
        }
    }
    Ok(())
}
