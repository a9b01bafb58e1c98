//! After the encodes: the tracks as the muxer wrote them, the master playlist and the MPD over
//! them, the thumbnails, and the list of every file.

use std::path::{Path, PathBuf};

use super::{audio, thumbs, video, MediaError, Packaged};
use crate::ladder::{Fps, RungPlan};
use crate::manifest::{dash_mpd, hls_master, parse_media_playlist, Segment, Track, TrackKind};

fn track(dir: &Path, name: &str, kind: TrackKind, codecs: String, timescale: u32) -> Result<Track, MediaError> {
    let folder = dir.join(name);
    let playlist = "index.m3u8";
    let text = std::fs::read_to_string(folder.join(playlist))
        .map_err(|e| MediaError::io(format!("the {name} playlist was not written: {e}")))?;
    let (init, listed) = parse_media_playlist(&text).map_err(|e| MediaError::internal(format!("{name}: {e}")))?;
    let mut segments = Vec::with_capacity(listed.len());
    for (duration, uri) in listed {
        let bytes = file_size(&folder.join(&uri))?;
        segments.push(Segment { uri, duration, bytes });
    }
    if segments.is_empty() {
        return Err(MediaError::internal(format!("the {name} track has no segments")));
    }
    Ok(Track {
        name: name.to_owned(),
        kind,
        codecs,
        timescale,
        init,
        playlist: playlist.to_owned(),
        segments,
    })
}

fn file_size(path: &Path) -> Result<u64, MediaError> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| MediaError::io(format!("{}: {e}", path.display())))
}

/// Writes the manifests and thumbnails and lists what the transcode produced.
pub(super) fn package(
    out_dir: &Path,
    rungs: &[RungPlan],
    done: &[video::RungDone],
    audio: Option<&audio::AudioDone>,
    fps: Fps,
    thumbnails: thumbs::Thumbnailer,
    encoded_s: f64,
) -> Result<Packaged, MediaError> {
    let mut tracks = Vec::with_capacity(rungs.len());
    for (rung, done) in rungs.iter().zip(done) {
        let kind = TrackKind::Video {
            width: rung.width,
            height: rung.height,
            fps: (fps.num, fps.den),
        };
        tracks.push((
            rung.clone(),
            track(out_dir, &rung.name, kind, rung.video_codecs(), done.timescale)?,
        ));
    }
    let audio = audio
        .map(|a| {
            let kind = TrackKind::Audio {
                channels: 2,
                sample_rate: audio::SAMPLE_RATE,
            };
            track(out_dir, "audio", kind, "mp4a.40.2".into(), a.timescale)
        })
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
    })
}

fn list_files(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), MediaError> {
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
