//! Where a video's objects live in the object store: the one place every key is made.
//!
//! ```text
//! sources/<video>/source.<ext>          the uploaded source (ext from the declared name)
//! media/<video>/<attempt>/…             everything one encoding attempt wrote
//! media/<video>/<attempt>/master.m3u8   (playlists, segments, poster, thumbnails)
//! uploads/<upload>/manifest.json       a resumable upload's state (its parts, its owner)
//! uploads/<upload>/tail-<n>             bytes received after its last whole part
//! lake/…                                the QoE lake (vodsource-lake's tables)
//! ```
//!
//! A video's media sits under `media/<video>/`, so a CDN's origin can be the `media/` prefix
//! alone (sources and the lake stay private), and deleting a video removes two prefixes.
//! Nothing a client sends becomes a path beyond the video id, which commands check first.

/// The top-level prefix of sources.
pub const SOURCES: &str = "sources";
/// The top-level prefix of encoded media: a CDN's origin.
pub const MEDIA: &str = "media";

/// The top-level prefix of resumable uploads in progress.
pub const UPLOADS: &str = "uploads";

/// The prefix of everything one resumable upload keeps (no trailing `/`).
#[must_use]
pub fn upload_prefix(upload_id: &str) -> String {
    format!("{UPLOADS}/{upload_id}")
}

/// The state of a resumable upload.
#[must_use]
pub fn upload_manifest(upload_id: &str) -> String {
    format!("{UPLOADS}/{upload_id}/manifest.json")
}

/// A resumable upload's bytes after its last whole part, as stored under `name`.
#[must_use]
pub fn upload_tail(upload_id: &str, name: &str) -> String {
    format!("{UPLOADS}/{upload_id}/tail-{name}")
}

/// Where a video's source is stored: under the video's id, named `source`, with the declared
/// file's extension when it is a plain one (`source.mp4`).
#[must_use]
pub fn source_key(video_id: &str, filename: &str) -> String {
    let extension = filename
        .rsplit_once('.')
        .map(|(_, e)| e)
        .filter(|e| !e.is_empty() && e.len() <= 8 && e.bytes().all(|b| b.is_ascii_alphanumeric()));
    match extension {
        Some(e) => format!("{SOURCES}/{video_id}/source.{}", e.to_ascii_lowercase()),
        None => format!("{SOURCES}/{video_id}/source"),
    }
}

/// Where sources registered before [`source_key`] were stored: under the declared name.
/// Callers check the key (`ports::check_key`) before they use it.
#[must_use]
pub fn legacy_source_key(video_id: &str, filename: &str) -> String {
    format!("{SOURCES}/{video_id}/{filename}")
}

/// The prefix of everything one encoding attempt of a video writes (no trailing `/`).
#[must_use]
pub fn attempt_prefix(video_id: &str, attempt: u32) -> String {
    format!("{MEDIA}/{video_id}/{attempt}")
}

/// The key of `file` (a path relative to the attempt's folder) of an encoding attempt.
#[must_use]
pub fn attempt_key(video_id: &str, attempt: u32, file: &str) -> String {
    format!("{MEDIA}/{video_id}/{attempt}/{file}")
}

/// The prefix of a video's media, with its trailing `/`: what a playback URL names relative
/// to ([`media_key`] is its inverse).
#[must_use]
pub fn media_prefix(video_id: &str) -> String {
    format!("{MEDIA}/{video_id}/")
}

/// The key of `rest` under a video's media (a playback URL's path after the video id).
#[must_use]
pub fn media_key(video_id: &str, rest: &str) -> String {
    format!("{MEDIA}/{video_id}/{rest}")
}

/// Every prefix holding a video's objects (its source and all its media), for deletion.
#[must_use]
pub fn video_prefixes(video_id: &str) -> [String; 2] {
    [format!("{SOURCES}/{video_id}"), format!("{MEDIA}/{video_id}")]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_is_named_source_with_the_declared_extension_when_it_is_plain() {
        assert_eq!(source_key("v1", "Holiday.MP4"), "sources/v1/source.mp4");
        assert_eq!(source_key("v1", "clip"), "sources/v1/source");
        assert_eq!(source_key("v1", "../../etc/passwd"), "sources/v1/source");
        assert_eq!(source_key("v1", "a.tar.gz"), "sources/v1/source.gz");
        assert_eq!(source_key("v1", "x.toolongext"), "sources/v1/source");
        assert_eq!(source_key("v1", "x.m p4"), "sources/v1/source");
        assert_eq!(legacy_source_key("v1", "clip.mp4"), "sources/v1/clip.mp4");
    }

    #[test]
    fn media_keys_and_prefixes_agree() {
        let key = attempt_key("v1", 2, "720p/seg_00001.m4s");
        assert_eq!(key, "media/v1/2/720p/seg_00001.m4s");
        assert!(key.starts_with(&format!("{}/", attempt_prefix("v1", 2))));
        let rest = key.strip_prefix(&media_prefix("v1")).expect("under the media prefix");
        assert_eq!(media_key("v1", rest), key);
        assert_eq!(video_prefixes("v1"), ["sources/v1".to_owned(), "media/v1".to_owned()]);
        assert!(key.starts_with(&format!("{MEDIA}/")), "under the CDN's origin");
    }
}
