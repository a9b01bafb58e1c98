use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use vodsource_domain::{Manifests, Stage, VideoEvent};

use crate::projector::{EventMeta, IndexKey, Projector, ViewChange};

/// A rung as the catalog lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogRendition {
    /// Rung name.
    pub name: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Bits per second.
    pub bitrate_bps: u64,
}

/// One video in the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogView {
    /// Video id.
    pub video_id: String,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Owner.
    pub owner: String,
    /// Lifecycle stage.
    pub status: Stage,
    /// Viewers may play it (once playable).
    pub published: bool,
    /// Its manifests play: while encoding (growing playlists) or encoded.
    #[serde(default)]
    pub playable: bool,
    /// Rungs of the completed ladder.
    pub renditions: Vec<CatalogRendition>,
    /// Duration of the encoded media.
    pub duration_ms: Option<u64>,
    /// Poster image key.
    pub thumbnail_key: Option<String>,
    /// WebVTT index of the scrubbing thumbnails.
    #[serde(default)]
    pub thumbnails_vtt_key: Option<String>,
    /// Object keys of the HLS and DASH manifests, once encoded.
    #[serde(default)]
    pub manifests: Option<Manifests>,
    /// Registration time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Stream version of the last change.
    pub version: u64,
}

/// The catalog partition every video is listed in.
pub const CATALOG_ALL: &str = "all";

/// The catalog's sort key: registration time, fixed width so it orders as text (the index
/// breaks ties by video id).
pub fn catalog_sort_key(created_at: DateTime<Utc>) -> String {
    created_at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Builds the catalog. Deleted videos leave it.
#[derive(Debug, Default, Clone, Copy)]
pub struct CatalogProjector;

impl CatalogProjector {
    /// The projection's name.
    pub const NAME: &'static str = "catalog";
}

impl Projector for CatalogProjector {
    type View = CatalogView;

    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn handles(&self, event_type: &str) -> bool {
        !matches!(
            event_type,
            "SourceProbed"
                | "EncodingProgressed"
                | "EncodingPlanned"
                | "ChunkClaimed"
                | "ChunkReleased"
                | "ChunkEncoded"
        )
    }

    fn index(&self, view: &CatalogView) -> Option<Vec<IndexKey>> {
        let sort = catalog_sort_key(view.created_at);
        let entry = |partition: String| IndexKey {
            partition,
            sort: sort.clone(),
        };
        let mut keys = Vec::with_capacity(4 + view.tags.len());
        keys.push(entry(CATALOG_ALL.to_owned()));
        keys.push(entry(format!("status:{}", view.status)));
        keys.push(entry(format!("published:{}", view.published)));
        keys.push(entry(format!("owner:{}", view.owner)));
        for tag in &view.tags {
            let partition = format!("tag:{}", tag.to_lowercase());
            if !keys.iter().any(|k| k.partition == partition) {
                keys.push(entry(partition));
            }
        }
        Some(keys)
    }

    fn project(&self, current: Option<CatalogView>, event: VideoEvent, meta: EventMeta<'_>) -> ViewChange<CatalogView> {
        let event = match (event, &current) {
            (
                VideoEvent::VideoRegistered {
                    owner,
                    title,
                    description,
                    tags,
                    ..
                },
                None,
            ) => {
                return ViewChange::Put(CatalogView {
                    video_id: meta.stream_id.to_owned(),
                    title,
                    description,
                    tags,
                    owner,
                    status: Stage::AwaitingUpload,
                    published: false,
                    playable: false,
                    renditions: vec![],
                    duration_ms: None,
                    thumbnail_key: None,
                    thumbnails_vtt_key: None,
                    manifests: None,
                    created_at: meta.occurred_at,
                    updated_at: meta.occurred_at,
                    version: meta.version,
                })
            }
            (event, _) => event,
        };
        let Some(mut view) = current else {
            return ViewChange::Unchanged(None);
        };
        match event {
            VideoEvent::VideoDeleted { .. } => return ViewChange::Delete,
            VideoEvent::SourceUploaded { .. } => view.status = Stage::Uploaded,
            VideoEvent::SourceIngestFailed { .. } => view.status = Stage::Failed,
            VideoEvent::EncodingRequested { .. } | VideoEvent::EncodingRequeued { .. } => {
                view.status = Stage::Queued;
                // A new attempt starts a new ladder.
                view.renditions.clear();
            }
            VideoEvent::EncodingClaimed { .. } => view.status = Stage::Encoding,
            VideoEvent::EncodingFailed { retryable, .. } => {
                view.status = if retryable { Stage::Retrying } else { Stage::Failed };
                // A failed attempt's outputs are removed: nothing plays until another is.
                view.playable = false;
                view.manifests = None;
            }
            VideoEvent::VideoPlayable { manifests, .. } => {
                view.playable = true;
                view.manifests = Some(manifests);
            }
            VideoEvent::EncodingCompleted {
                poster_key,
                thumbnails_key,
                duration_ms,
                manifests,
                ..
            } => {
                view.status = Stage::Ready;
                view.playable = true;
                view.manifests = Some(manifests);
                view.duration_ms = Some(duration_ms);
                view.thumbnail_key = poster_key;
                view.thumbnails_vtt_key = thumbnails_key;
            }
            VideoEvent::RenditionEncoded { rendition, .. } => {
                view.renditions.retain(|r| r.name != rendition.name);
                view.renditions.push(CatalogRendition {
                    name: rendition.name,
                    width: rendition.width,
                    height: rendition.height,
                    bitrate_bps: rendition.bitrate_bps,
                });
            }
            VideoEvent::VideoPublished {} => view.published = true,
            VideoEvent::VideoUnpublished {} => view.published = false,
            VideoEvent::MetadataUpdated {
                title,
                description,
                tags,
            } => {
                if let Some(title) = title {
                    view.title = title;
                }
                if let Some(description) = description {
                    view.description = description;
                }
                if let Some(tags) = tags {
                    view.tags = tags;
                }
            }
            // A second registration, probes, progress and chunks do not change what the
            // catalog shows.
            VideoEvent::VideoRegistered { .. }
            | VideoEvent::SourceProbed { .. }
            | VideoEvent::EncodingProgressed { .. }
            | VideoEvent::EncodingPlanned { .. }
            | VideoEvent::ChunkClaimed { .. }
            | VideoEvent::ChunkReleased { .. }
            | VideoEvent::ChunkEncoded { .. } => return ViewChange::Unchanged(Some(view)),
        }
        view.updated_at = meta.occurred_at;
        view.version = meta.version;
        ViewChange::Put(view)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use vodsource_domain::Manifests;

    use super::*;
    use crate::status::StatusProjector;

    /// Folds `events` through `projector`, version by version.
    fn fold<P: Projector>(projector: &P, events: Vec<VideoEvent>) -> Option<P::View> {
        let at = Utc
            .with_ymd_and_hms(2026, 12, 5, 10, 0, 0)
            .single()
            .expect("valid date");
        let mut view = None;
        for (i, event) in events.into_iter().enumerate() {
            let meta = EventMeta {
                stream_id: "v",
                version: i as u64 + 1,
                position: i as u64 + 1,
                occurred_at: at,
            };
            view = match projector.project(view, event, meta) {
                ViewChange::Unchanged(view) => view,
                ViewChange::Put(view) => Some(view),
                ViewChange::Delete => None,
            };
        }
        view
    }

    fn lifecycle(until_playable: bool, then_failed: bool) -> Vec<VideoEvent> {
        let manifests = Manifests {
            hls_master_key: "media/v/1/master.m3u8".into(),
            dash_mpd_key: "media/v/1/manifest.mpd".into(),
        };
        let mut events = vec![
            VideoEvent::VideoRegistered {
                owner: "alice".into(),
                title: "t".into(),
                description: String::new(),
                tags: vec![],
                filename: "a.mp4".into(),
                content_type: "video/mp4".into(),
                size_bytes: 10,
                source_url: None,
                publish_when_playable: false,
            },
            VideoEvent::EncodingRequested { attempt: 1 },
            VideoEvent::EncodingClaimed {
                attempt: 1,
                worker_id: "w".into(),
                lease_until: Utc::now(),
            },
        ];
        if until_playable {
            events.push(VideoEvent::VideoPlayable {
                attempt: 1,
                worker_id: "w".into(),
                manifests,
            });
        }
        if then_failed {
            events.push(VideoEvent::EncodingFailed {
                attempt: 1,
                worker_id: Some("w".into()),
                reason: "lost".into(),
                retryable: true,
            });
        }
        events
    }

    #[test]
    fn a_playable_attempt_has_manifests_until_it_fails() {
        let encoding = fold(&CatalogProjector, lifecycle(false, false)).expect("listed");
        assert!(!encoding.playable && encoding.manifests.is_none());
        let playable = fold(&CatalogProjector, lifecycle(true, false)).expect("listed");
        assert_eq!(playable.status, Stage::Encoding);
        assert!(playable.playable && playable.manifests.is_some(), "{playable:?}");
        let failed = fold(&CatalogProjector, lifecycle(true, true)).expect("listed");
        assert!(!failed.playable && failed.manifests.is_none(), "{failed:?}");

        let status = fold(&StatusProjector, lifecycle(true, false)).expect("status");
        assert!(status.playable && status.playable_at.is_some(), "{status:?}");
        let status = fold(&StatusProjector, lifecycle(true, true)).expect("status");
        assert!(!status.playable && status.playable_at.is_none(), "{status:?}");
    }
}
