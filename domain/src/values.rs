use serde::{Deserialize, Serialize};

use crate::VideoError;

/// The longest title, in characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// The longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 5000;
/// The most tags a video may carry.
pub const MAX_TAGS: usize = 20;
/// The longest tag, in characters.
pub const MAX_TAG_CHARS: usize = 40;
const MAX_FILENAME_CHARS: usize = 255;

/// Where a video is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// No `VideoRegistered` yet.
    #[default]
    Unregistered,
    /// Registered, waiting for the source bytes.
    AwaitingUpload,
    /// The source is stored; encoding not requested yet.
    Uploaded,
    /// An encoding attempt is requested and not claimed yet.
    Queued,
    /// A worker holds the claim of the current attempt.
    Encoding,
    /// The last attempt failed and may be retried.
    Retrying,
    /// The ladder is complete.
    Ready,
    /// Encoding failed for good (bad media or attempts exhausted): a dead letter.
    Failed,
}

impl Stage {
    /// The stage's stable lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Unregistered => "unregistered",
            Stage::AwaitingUpload => "awaiting_upload",
            Stage::Uploaded => "uploaded",
            Stage::Queued => "queued",
            Stage::Encoding => "encoding",
            Stage::Retrying => "retrying",
            Stage::Ready => "ready",
            Stage::Failed => "failed",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The step an encoder is at when it reports progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EncodeStage {
    /// Reading the container and streams.
    Probe,
    /// Decoding, scaling and encoding the rungs.
    Encode,
    /// Writing HLS and DASH manifests and segments.
    Package,
    /// Poster and thumbnail sprite.
    Thumbnails,
    /// Copying outputs to the object store.
    Upload,
}

/// Title, description and tags, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Metadata {
    /// 1 to 200 characters, trimmed.
    pub title: String,
    /// At most 5000 characters.
    pub description: String,
    /// At most 20 distinct tags of 1 to 40 characters.
    pub tags: Vec<String>,
}

/// Trims and checks a title.
///
/// # Errors
/// `InvalidMetadata` naming the title when it is empty, too long or holds control characters.
pub fn validate_title(title: &str) -> Result<String, VideoError> {
    // Anywhere, trimmed off or not: one rule a published schema can state.
    if title.chars().any(char::is_control) {
        return Err(invalid("title", "must not contain control characters".into()));
    }
    let title = title.trim();
    let chars = title.chars().count();
    if chars == 0 || chars > MAX_TITLE_CHARS {
        return Err(invalid(
            "title",
            format!("must be 1 to {MAX_TITLE_CHARS} characters, got {chars}"),
        ));
    }
    if title.chars().any(char::is_control) {
        return Err(invalid("title", "must not contain control characters".into()));
    }
    Ok(title.to_owned())
}

/// Checks a description.
///
/// # Errors
/// `InvalidMetadata` naming the description when it is too long.
pub fn validate_description(description: &str) -> Result<String, VideoError> {
    let chars = description.chars().count();
    if chars > MAX_DESCRIPTION_CHARS {
        return Err(invalid(
            "description",
            format!("must be at most {MAX_DESCRIPTION_CHARS} characters, got {chars}"),
        ));
    }
    Ok(description.to_owned())
}

/// Trims tags, drops repeats (keeping the first), and checks the limits.
///
/// # Errors
/// `InvalidMetadata` naming the tags when there are too many, or one is empty, too long or
/// holds control characters.
pub fn validate_tags(tags: &[String]) -> Result<Vec<String>, VideoError> {
    let mut out: Vec<String> = Vec::with_capacity(tags.len());
    for tag in tags {
        if tag.chars().any(char::is_control) {
            return Err(invalid("tags", "tags must not contain control characters".into()));
        }
        let tag = tag.trim();
        let chars = tag.chars().count();
        if chars == 0 || chars > MAX_TAG_CHARS {
            return Err(invalid(
                "tags",
                format!("each tag must be 1 to {MAX_TAG_CHARS} characters, got {chars}"),
            ));
        }
        if tag.chars().any(char::is_control) {
            return Err(invalid("tags", "tags must not contain control characters".into()));
        }
        if !out.iter().any(|t| t == tag) {
            out.push(tag.to_owned());
        }
    }
    if out.len() > MAX_TAGS {
        return Err(invalid("tags", format!("at most {MAX_TAGS} tags, got {}", out.len())));
    }
    Ok(out)
}

/// Checks a declared file name: no path components, no control characters.
///
/// # Errors
/// `InvalidSource` naming the problem.
pub fn validate_filename(filename: &str) -> Result<(), VideoError> {
    if filename.is_empty() || filename.chars().count() > MAX_FILENAME_CHARS {
        return Err(VideoError::InvalidSource(format!(
            "filename must be 1 to {MAX_FILENAME_CHARS} characters"
        )));
    }
    if filename.contains(['/', '\\']) || filename == "." || filename == ".." {
        return Err(VideoError::InvalidSource(
            "filename must not contain path components".into(),
        ));
    }
    if filename.chars().any(char::is_control) {
        return Err(VideoError::InvalidSource(
            "filename must not contain control characters".into(),
        ));
    }
    Ok(())
}

/// The form of a declared content type, as a regular expression (the OpenAPI document
/// publishes it; [`is_video_type`] is the same rule by hand): `video/<subtype>`, the type's
/// name in any case (RFC 9110 8.3.1), parameters allowed.
pub const VIDEO_TYPE_PATTERN: &str =
    "^[Vv][Ii][Dd][Ee][Oo]/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}(;[^\\u0000-\\u001F]*)?$";

/// Whether `content_type` is of [`VIDEO_TYPE_PATTERN`]'s form.
#[must_use]
pub fn is_video_type(content_type: &str) -> bool {
    let (essence, params) = content_type
        .split_once(';')
        .map_or((content_type, None), |(e, p)| (e, Some(p)));
    let Some((kind, sub)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("video")
        && (1..=127).contains(&sub.len())
        && sub.as_bytes()[0].is_ascii_alphanumeric()
        && sub
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
        && params.is_none_or(|p| !p.chars().any(|c| c < '\u{20}'))
}

/// Longest `source_url`, in bytes.
pub const MAX_SOURCE_URL_BYTES: usize = 2048;

/// Checks a source URL's form: 1 to [`MAX_SOURCE_URL_BYTES`] bytes, no space or control
/// character. Scheme and addresses are the application's and the fetcher's to judge.
///
/// # Errors
/// `InvalidSource` naming the problem.
pub fn validate_source_url(url: &str) -> Result<(), VideoError> {
    if url.is_empty() || url.len() > MAX_SOURCE_URL_BYTES {
        return Err(VideoError::InvalidSource(format!(
            "source_url must be 1 to {MAX_SOURCE_URL_BYTES} bytes"
        )));
    }
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(VideoError::InvalidSource(
            "source_url must not contain spaces or control characters".into(),
        ));
    }
    Ok(())
}

/// Checks a declared content type: [`is_video_type`].
///
/// # Errors
/// `InvalidSource` when it is not a video type.
pub fn validate_content_type(content_type: &str) -> Result<(), VideoError> {
    if is_video_type(content_type) {
        Ok(())
    } else {
        Err(VideoError::InvalidSource(format!(
            "content type must be video/*, got {content_type:?}"
        )))
    }
}

fn invalid(field: &'static str, reason: String) -> VideoError {
    VideoError::InvalidMetadata { field, reason }
}

/// What probing the source found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceProbe {
    /// Duration in milliseconds.
    pub duration_ms: u64,
    /// Coded width in pixels.
    pub width: u32,
    /// Coded height in pixels.
    pub height: u32,
    /// Display rotation in degrees (0, 90, 180, 270).
    pub rotation: i32,
    /// Average frame rate.
    pub frame_rate: f64,
    /// Whether the frame rate varies.
    pub variable_frame_rate: bool,
    /// Video codec name, if there is a video stream.
    pub video_codec: Option<String>,
    /// Audio codec name, if there is an audio stream.
    pub audio_codec: Option<String>,
}

/// One rung of the encoded ladder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rendition {
    /// Rung name, such as `720p`.
    pub name: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Target bitrate in bits per second.
    pub bitrate_bps: u64,
    /// RFC 6381 codecs string, such as `avc1.64001f,mp4a.40.2`.
    pub codecs: String,
    /// Object key of the rung's media playlist.
    pub playlist_key: String,
    /// Bytes written for this rung.
    pub bytes: u64,
}

/// Object keys of the manifests over the ladder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifests {
    /// HLS master playlist.
    pub hls_master_key: String,
    /// DASH MPD.
    pub dash_mpd_key: String,
}

/// The most chunks one attempt may be split into.
pub const MAX_CHUNKS: usize = 1_000;

/// One share of a chunked encode: a unit any worker may claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChunkSpan {
    /// Pictures `from..to` at the output rate, on every rung of the ladder (`to`: none for
    /// the end of the source). Both fall on segment starts.
    Frames {
        /// The first picture.
        from: u64,
        /// One past the last; none: to the end.
        to: Option<u64>,
    },
    /// The audio track of the whole source, in one piece (gapless by construction).
    Audio,
}

/// One segment a chunk wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkSegment {
    /// Seconds.
    pub duration: f64,
    /// Bytes.
    pub bytes: u64,
}

/// The segments of one track a chunk wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkTrack {
    /// The track (`720p`, `audio`).
    pub name: String,
    /// RFC 6381 codecs of this track alone.
    pub codecs: String,
    /// Picture width (0 for audio).
    pub width: u32,
    /// Picture height (0 for audio).
    pub height: u32,
    /// Target bitrate in bits per second.
    pub bitrate_bps: u64,
    /// The fMP4 track's timescale.
    pub timescale: u32,
    /// The number of the first segment (its file name's).
    pub first_segment: u64,
    /// The segments in order.
    pub segments: Vec<ChunkSegment>,
}

/// A thumbnail sprite a chunk wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpriteSheet {
    /// Its name under the attempt's folder.
    pub name: String,
    /// The number of its first tile, over the whole video.
    pub first_tile: u64,
    /// How many tiles it holds.
    pub tiles: u32,
}

/// What a chunk wrote and what it cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkOutput {
    /// Its tracks.
    pub tracks: Vec<ChunkTrack>,
    /// Its thumbnail sprites.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sprites: Vec<SpriteSheet>,
    /// The poster, when the chunk holds its picture (name under the attempt's folder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poster: Option<String>,
    /// What encoding it cost.
    pub cost: EncodingCost,
}

/// Checks a plan of chunks: at least one run of frames, the runs from frame 0 to the end
/// each starting where the one before ended, the audio at most once, at most
/// [`MAX_CHUNKS`] in all.
///
/// # Errors
/// `InvalidPlan` naming what is wrong.
pub fn validate_chunk_plan(chunks: &[ChunkSpan]) -> Result<(), VideoError> {
    let bad = |reason: String| Err(VideoError::InvalidPlan(reason));
    if chunks.len() > MAX_CHUNKS {
        return bad(format!("{} chunks; at most {MAX_CHUNKS}", chunks.len()));
    }
    if chunks.iter().filter(|c| **c == ChunkSpan::Audio).count() > 1 {
        return bad("the audio is planned more than once".into());
    }
    let mut next = Some(0u64);
    for span in chunks {
        if let ChunkSpan::Frames { from, to } = span {
            match next {
                Some(expected) if *from == expected => {}
                Some(expected) => return bad(format!("a run starts at frame {from}, not at {expected}")),
                None => return bad(format!("a run starts at frame {from} after the run to the end")),
            }
            if to.is_some_and(|to| to <= *from) {
                return bad(format!("the run from frame {from} ends at {to:?}"));
            }
            next = *to;
        }
    }
    match next {
        None => Ok(()),
        Some(0) => bad("no run of frames".into()),
        Some(end) => bad(format!("the last run ends at frame {end}, not at the end")),
    }
}

/// What one transcode cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct EncodingCost {
    /// CPU seconds, user plus system.
    pub cpu_seconds: f64,
    /// Wall-clock seconds.
    pub wall_seconds: f64,
    /// Bytes written to the object store.
    pub bytes_out: u64,
}

/// A failure reason as its owner may see it: every absolute path (`/var/lib/.../x`) becomes
/// its last component, so no server folder layout reaches a client.
pub fn redact_paths(reason: &str) -> String {
    let mut out = String::with_capacity(reason.len());
    let mut rest = reason;
    while let Some(at) = rest.find('/') {
        let starts_token = rest[..at]
            .chars()
            .next_back()
            .is_none_or(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '(' | '[' | '=' | ':' | ','));
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let end = rest
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ')' | ']' | ',' | ';'))
            .unwrap_or(rest.len());
        let token = &rest[..end];
        // A path has a folder in it; a lone "/" or "video/mp4" (not at a token start) is text.
        if starts_token && token.len() > 1 && token[1..].contains('/') {
            let trimmed = token.trim_end_matches(['.', ':']);
            let tail = &token[trimmed.len()..];
            out.push_str(trimmed.rsplit('/').find(|s| !s.is_empty()).unwrap_or("…"));
            out.push_str(tail);
        } else {
            out.push_str(token);
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}
