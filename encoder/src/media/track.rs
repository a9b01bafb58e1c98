//! One packaged track: the HLS muxer writing `init.mp4`, `seg_NNNNN.m4s` and `index.m3u8`
//! (fMP4/CMAF) into a folder. Video rungs and audio use it alike.

use std::path::Path;

use ffmpeg::format::context::Output;
use ffmpeg::{Dictionary, Rational};
use ffmpeg_next as ffmpeg;

use super::MediaError;

/// Opens the muxer of a track in `dir` (created). `name` prefixes error messages.
pub(super) fn open(dir: &Path, name: &str) -> Result<Output, MediaError> {
    std::fs::create_dir_all(dir).map_err(|e| MediaError::io(format!("{}: {e}", dir.display())))?;
    ffmpeg::format::output_as(&dir.join("index.m3u8"), "hls")
        .map_err(|e| MediaError::internal(format!("{name}: open muxer: {e}")))
}

/// Whether encoders feeding `output` must put their headers in extradata.
pub(super) fn wants_global_header(output: &Output) -> bool {
    output.format().flags().contains(ffmpeg::format::Flags::GLOBAL_HEADER)
}

/// Writes the header: an `EVENT` playlist rewritten (through a temporary file) after each
/// segment, segments written under a temporary name and renamed once closed, cut at the first
/// keyframe at or past `segment_seconds` times the segments so far (every audio packet is
/// one; video keyframes fall only on segment starts),
/// numbered from `first_number`: what the playlist lists is
/// complete, so the worker can publish it while the encode goes on. Packaging turns it into
/// `VOD` at the end. Returns the time base the muxer chose for the track (its timescale).
pub(super) fn start(
    output: &mut Output,
    dir: &Path,
    (segment_seconds, first_number): (u32, u64),
    name: &str,
    fallback: Rational,
) -> Result<Rational, MediaError> {
    let mut header = Dictionary::new();
    header.set("hls_time", &segment_seconds.to_string());
    header.set("hls_segment_type", "fmp4");
    header.set("hls_playlist_type", "event");
    header.set("hls_list_size", "0");
    header.set("hls_flags", "independent_segments+temp_file");
    header.set("hls_fmp4_init_filename", "init.mp4");
    header.set("start_number", &first_number.to_string());
    header.set("hls_segment_filename", &dir.join("seg_%05d.m4s").to_string_lossy());
    output
        .write_header_with(header)
        .map_err(|e| MediaError::internal(format!("{name}: write header: {e}")))?;
    Ok(output.stream(0).map_or(fallback, |s| s.time_base()))
}
