//! The public event contract: what webhook receivers are sent, derived from the domain's
//! events by one mapping ([`public_event`]). Internal event names and fields are not part of
//! it; a type's data only ever gains optional fields within a contract version.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use vodsource_commands::ports::RecordedEvent;
use vodsource_domain::VideoEvent;

/// The contract's version, sent with every event; a breaking change makes a new one.
pub const CONTRACT_VERSION: &str = "2026-12-05";

/// Every public event type, with what it means.
pub const EVENT_TYPES: [(&str, &str); 11] = [
    (
        "video.created",
        "A video was registered; its source is awaited (an upload or a fetch from its source_url).",
    ),
    (
        "video.upload.completed",
        "The video's source is stored; encoding starts.",
    ),
    (
        "video.ingest.failed",
        "The source could not be fetched from the video's source_url; terminal.",
    ),
    (
        "video.encoding.progressed",
        "Progress of an encode (many per video: only to endpoints that ask for it).",
    ),
    (
        "video.playable",
        "The video plays while it is still encoding (its playlists grow until `video.ready`); it may be published from now on.",
    ),
    (
        "video.ready",
        "Every rendition is encoded: the video can be published and played.",
    ),
    (
        "video.encoding.failed",
        "An encoding attempt failed; `retryable: false` is terminal.",
    ),
    ("video.published", "Viewers may play the video."),
    ("video.unpublished", "Viewers may no longer play the video."),
    (
        "video.updated",
        "The video's title, description or tags changed (the changed fields only).",
    ),
    ("video.deleted", "The video is gone; its history stays."),
];

/// Types sent only to endpoints that name them (the others go to endpoints that name none).
pub const OPT_IN_TYPES: [&str; 1] = ["video.encoding.progressed"];

/// One event as receivers get it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublicEvent {
    /// Unique per event, the same on every delivery of it: receivers de-duplicate on it.
    pub id: String,
    /// One of [`EVENT_TYPES`].
    #[serde(rename = "type")]
    pub event_type: String,
    /// [`CONTRACT_VERSION`].
    pub api_version: String,
    /// When it happened.
    pub created_at: DateTime<Utc>,
    /// Its position in the global log (a replay from a position sends those after it).
    pub position: u64,
    /// The video it is about (every type but `webhook.test`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video_id: Option<String>,
    /// The type's fields (documented per type).
    pub data: serde_json::Value,
}

/// The public event a recorded domain event is, if it is one.
pub fn public_event(recorded: &RecordedEvent, event: &VideoEvent) -> Option<PublicEvent> {
    use serde_json::json;
    let (event_type, data) = match event {
        VideoEvent::VideoRegistered {
            owner,
            title,
            description,
            tags,
            filename,
            content_type,
            size_bytes,
            source_url,
            ..
        } => (
            "video.created",
            json!({
                "owner": owner,
                "title": title,
                "description": description,
                "tags": tags,
                "filename": filename,
                "content_type": content_type,
                "size_bytes": (*size_bytes > 0).then_some(size_bytes),
                "source": if source_url.is_some() { "url" } else { "upload" },
            }),
        ),
        VideoEvent::SourceUploaded { size_bytes, .. } => {
            ("video.upload.completed", json!({ "size_bytes": size_bytes }))
        }
        VideoEvent::SourceIngestFailed { reason } => ("video.ingest.failed", json!({ "reason": reason })),
        VideoEvent::EncodingProgressed {
            attempt,
            stage,
            rendition,
            percent,
            eta_seconds,
            ..
        } => (
            "video.encoding.progressed",
            json!({
                "attempt": attempt,
                "stage": stage,
                "rendition": rendition,
                "percent": percent,
                "eta_seconds": eta_seconds,
            }),
        ),
        VideoEvent::VideoPlayable { attempt, .. } => ("video.playable", json!({ "attempt": attempt })),
        VideoEvent::EncodingCompleted {
            attempt, duration_ms, ..
        } => ("video.ready", json!({ "attempt": attempt, "duration_ms": duration_ms })),
        VideoEvent::EncodingFailed {
            attempt,
            reason,
            retryable,
            ..
        } => (
            "video.encoding.failed",
            json!({
                "attempt": attempt,
                "reason": vodsource_domain::redact_paths(reason),
                "retryable": retryable,
            }),
        ),
        VideoEvent::VideoPublished {} => ("video.published", json!({})),
        VideoEvent::VideoUnpublished {} => ("video.unpublished", json!({})),
        VideoEvent::MetadataUpdated {
            title,
            description,
            tags,
        } => {
            let mut changed = serde_json::Map::new();
            if let Some(title) = title {
                changed.insert("title".into(), json!(title));
            }
            if let Some(description) = description {
                changed.insert("description".into(), json!(description));
            }
            if let Some(tags) = tags {
                changed.insert("tags".into(), json!(tags));
            }
            ("video.updated", serde_json::Value::Object(changed))
        }
        VideoEvent::VideoDeleted { reason } => ("video.deleted", json!({ "reason": reason })),
        VideoEvent::EncodingRequested { .. }
        | VideoEvent::EncodingClaimed { .. }
        | VideoEvent::SourceProbed { .. }
        | VideoEvent::RenditionEncoded { .. }
        | VideoEvent::EncodingRequeued { .. }
        | VideoEvent::EncodingPlanned { .. }
        | VideoEvent::ChunkClaimed { .. }
        | VideoEvent::ChunkReleased { .. }
        | VideoEvent::ChunkEncoded { .. } => return None,
    };
    let data = match data {
        // Absent, not null: an optional field left out.
        serde_json::Value::Object(fields) => {
            serde_json::Value::Object(fields.into_iter().filter(|(_, v)| !v.is_null()).collect())
        }
        other => other,
    };
    Some(PublicEvent {
        id: recorded.event_id.to_string(),
        event_type: event_type.to_owned(),
        api_version: CONTRACT_VERSION.to_owned(),
        created_at: recorded.occurred_at,
        position: recorded.position,
        video_id: Some(recorded.stream_id.clone()),
        data,
    })
}

/// The type of the event `POST /webhooks/{id}/test` sends.
pub const TEST_EVENT_TYPE: &str = "webhook.test";

/// A test event for endpoint `endpoint_id`, sent at `now` when the log's head is `head`.
pub fn test_event(endpoint_id: &str, now: DateTime<Utc>, head: u64) -> PublicEvent {
    PublicEvent {
        id: uuid::Uuid::now_v7().to_string(),
        event_type: TEST_EVENT_TYPE.to_owned(),
        api_version: CONTRACT_VERSION.to_owned(),
        created_at: now,
        position: head,
        video_id: None,
        data: serde_json::json!({ "endpoint_id": endpoint_id }),
    }
}

/// The JSON Schema (OpenAPI 3.0 dialect) of every public event: `WebhookEvent`, one of a
/// schema per type, each naming its `data`'s fields. Within a contract version the schemas
/// only gain optional fields; today's are closed (no other field is sent).
pub fn json_schemas() -> serde_json::Map<String, serde_json::Value> {
    use serde_json::json;
    use vodsource_domain::{MAX_DESCRIPTION_CHARS, MAX_TAGS, MAX_TAG_CHARS, MAX_TITLE_CHARS};
    let text = |max: usize| json!({ "type": "string", "maxLength": max });
    let count = || json!({ "type": "integer", "format": "int64", "minimum": 0 });
    let attempt = || json!({ "type": "integer", "format": "int32", "minimum": 1 });
    let tags = || json!({ "type": "array", "maxItems": MAX_TAGS, "items": { "type": "string", "minLength": 1, "maxLength": MAX_TAG_CHARS } });
    let data = |required: &[&str], properties: serde_json::Value| json!({ "type": "object", "additionalProperties": false, "required": required, "properties": properties });
    let datas = [
        (
            "video.created",
            data(
                &[
                    "owner",
                    "title",
                    "description",
                    "tags",
                    "filename",
                    "content_type",
                    "source",
                ],
                json!({
                    "owner": { "type": "string", "description": "The owner's subject." },
                    "title": { "type": "string", "minLength": 1, "maxLength": MAX_TITLE_CHARS },
                    "description": text(MAX_DESCRIPTION_CHARS),
                    "tags": tags(),
                    "filename": text(255),
                    "content_type": text(255),
                    "size_bytes": { "type": "integer", "format": "int64", "minimum": 1, "description": "The declared size; absent when left to a fetch." },
                    "source": { "type": "string", "enum": ["upload", "url"], "description": "Uploaded by a client, or fetched from a URL (the URL is not sent)." },
                }),
            ),
        ),
        (
            "video.upload.completed",
            data(&["size_bytes"], json!({ "size_bytes": count() })),
        ),
        (
            "video.ingest.failed",
            data(&["reason"], json!({ "reason": { "type": "string" } })),
        ),
        (
            "video.encoding.progressed",
            data(
                &["attempt", "stage", "percent"],
                json!({
                    "attempt": attempt(),
                    "stage": { "type": "string", "enum": ["probe", "encode", "package", "thumbnails", "upload"] },
                    "rendition": { "type": "string", "description": "The rung being encoded, when one is." },
                    "percent": { "type": "number", "minimum": 0, "maximum": 100 },
                    "eta_seconds": count(),
                }),
            ),
        ),
        ("video.playable", data(&["attempt"], json!({ "attempt": attempt() }))),
        (
            "video.ready",
            data(
                &["attempt", "duration_ms"],
                json!({ "attempt": attempt(), "duration_ms": count() }),
            ),
        ),
        (
            "video.encoding.failed",
            data(
                &["attempt", "reason", "retryable"],
                json!({
                    "attempt": attempt(),
                    "reason": { "type": "string" },
                    "retryable": { "type": "boolean", "description": "false: terminal (no attempt follows)." },
                }),
            ),
        ),
        ("video.published", data(&[], json!({}))),
        ("video.unpublished", data(&[], json!({}))),
        (
            "video.updated",
            data(
                &[],
                json!({
                    "title": { "type": "string", "minLength": 1, "maxLength": MAX_TITLE_CHARS },
                    "description": text(MAX_DESCRIPTION_CHARS),
                    "tags": tags(),
                }),
            ),
        ),
        ("video.deleted", data(&[], json!({ "reason": { "type": "string" } }))),
    ];
    let mut schemas = serde_json::Map::new();
    let mut variants = Vec::new();
    schemas.insert(
        "WebhookEvent_WebhookTest".into(),
        json!({
            "type": "object",
            "description": "Sent by `POST /v1/webhooks/{webhook_id}/test` only, once, not retried; it is about no video.",
            "additionalProperties": false,
            "required": ["id", "type", "api_version", "created_at", "position", "data"],
            "properties": {
                "id": { "type": "string", "format": "uuid" },
                "type": { "type": "string", "enum": [TEST_EVENT_TYPE] },
                "api_version": { "type": "string", "enum": [CONTRACT_VERSION] },
                "created_at": { "type": "string", "format": "date-time" },
                "position": { "type": "integer", "format": "int64", "minimum": 0, "description": "The log's head when it was sent." },
                "data": data(&["endpoint_id"], json!({ "endpoint_id": { "type": "string" } })),
            },
        }),
    );
    variants.push(json!({ "$ref": "#/components/schemas/WebhookEvent_WebhookTest" }));
    for (event_type, data) in datas {
        let description = EVENT_TYPES
            .iter()
            .find(|(t, _)| *t == event_type)
            .map_or("", |(_, d)| *d);
        let name = format!(
            "WebhookEvent_{}",
            event_type.split('.').map(capitalized).collect::<String>()
        );
        schemas.insert(
            name.clone(),
            json!({
                "type": "object",
                "description": description,
                "additionalProperties": false,
                "required": ["id", "type", "api_version", "created_at", "position", "video_id", "data"],
                "properties": {
                    "id": { "type": "string", "format": "uuid", "description": "The same on every delivery of this event: de-duplicate on it." },
                    "type": { "type": "string", "enum": [event_type] },
                    "api_version": { "type": "string", "enum": [CONTRACT_VERSION] },
                    "created_at": { "type": "string", "format": "date-time" },
                    "position": { "type": "integer", "format": "int64", "minimum": 1, "description": "Its position in the global log." },
                    "video_id": { "type": "string" },
                    "data": data,
                },
            }),
        );
        variants.push(json!({ "$ref": format!("#/components/schemas/{name}") }));
    }
    schemas.insert(
        "WebhookEvent".into(),
        json!({
            "description": "What a webhook request's body is: one public event. Verify `Vodsource-Signature` (HMAC-SHA256 of `<t>.<body>` under the endpoint's secret) before trusting it.",
            "oneOf": variants,
        }),
    );
    schemas
}

fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde_json::json;
    use vodsource_commands::ports::EventMetadata;
    use vodsource_domain::{EncodeStage, EncodingCost, Manifests};

    use super::*;

    fn recorded(position: u64) -> RecordedEvent {
        RecordedEvent {
            position,
            stream_id: "v1".into(),
            stream_type: "video".into(),
            version: position,
            event_id: uuid::Uuid::from_u128(position.into()),
            event_type: String::new(),
            schema_version: 1,
            occurred_at: Utc.with_ymd_and_hms(2026, 12, 5, 12, 0, 0).single().expect("date"),
            metadata: EventMetadata::default(),
            payload: String::new(),
        }
    }

    fn public(event: &VideoEvent) -> Option<(String, serde_json::Value)> {
        public_event(&recorded(7), event).map(|e| (e.event_type, e.data))
    }

    #[test]
    fn each_domain_event_maps_to_its_public_type_without_internal_fields() {
        let at = Utc.with_ymd_and_hms(2026, 12, 5, 12, 0, 0).single().expect("date");
        let cases = [
            (
                VideoEvent::VideoRegistered {
                    owner: "alice".into(),
                    title: "T".into(),
                    description: String::new(),
                    tags: vec!["a".into()],
                    filename: "a.mp4".into(),
                    content_type: "video/mp4".into(),
                    size_bytes: 0,
                    source_url: Some("https://secret.example/a.mp4?token=x".into()),
                    publish_when_playable: false,
                },
                Some((
                    "video.created",
                    json!({"owner": "alice", "title": "T", "description": "", "tags": ["a"], "filename": "a.mp4", "content_type": "video/mp4", "source": "url"}),
                )),
            ),
            (
                VideoEvent::SourceUploaded {
                    object_key: "sources/v1/source.mp4".into(),
                    size_bytes: 10,
                    checksum: Some("etag".into()),
                },
                Some(("video.upload.completed", json!({"size_bytes": 10}))),
            ),
            (
                VideoEvent::SourceIngestFailed {
                    reason: "refused".into(),
                },
                Some(("video.ingest.failed", json!({"reason": "refused"}))),
            ),
            (
                VideoEvent::EncodingProgressed {
                    attempt: 1,
                    worker_id: "w".into(),
                    stage: EncodeStage::Encode,
                    rendition: None,
                    percent: 50.0,
                    fps: Some(30.0),
                    eta_seconds: None,
                    lease_until: at,
                },
                Some((
                    "video.encoding.progressed",
                    json!({"attempt": 1, "stage": "encode", "percent": 50.0}),
                )),
            ),
            (
                VideoEvent::VideoPlayable {
                    attempt: 1,
                    worker_id: "w".into(),
                    manifests: Manifests {
                        hls_master_key: "media/v1/a1/master.m3u8".into(),
                        dash_mpd_key: "media/v1/a1/manifest.mpd".into(),
                    },
                },
                Some(("video.playable", json!({"attempt": 1}))),
            ),
            (
                VideoEvent::EncodingCompleted {
                    attempt: 1,
                    worker_id: "w".into(),
                    manifests: Manifests {
                        hls_master_key: "media/v1/a1/master.m3u8".into(),
                        dash_mpd_key: "media/v1/a1/manifest.mpd".into(),
                    },
                    poster_key: None,
                    thumbnails_key: None,
                    duration_ms: 2000,
                    cost: EncodingCost::default(),
                },
                Some(("video.ready", json!({"attempt": 1, "duration_ms": 2000}))),
            ),
            (
                VideoEvent::EncodingFailed {
                    attempt: 2,
                    worker_id: None,
                    reason: "could not open /var/lib/vod/work/a1/source.mp4".into(),
                    retryable: false,
                },
                Some((
                    "video.encoding.failed",
                    json!({"attempt": 2, "reason": "could not open source.mp4", "retryable": false}),
                )),
            ),
            (VideoEvent::VideoPublished {}, Some(("video.published", json!({})))),
            (VideoEvent::VideoUnpublished {}, Some(("video.unpublished", json!({})))),
            (
                VideoEvent::MetadataUpdated {
                    title: Some("New".into()),
                    description: None,
                    tags: None,
                },
                Some(("video.updated", json!({"title": "New"}))),
            ),
            (
                VideoEvent::VideoDeleted { reason: None },
                Some(("video.deleted", json!({}))),
            ),
            (VideoEvent::EncodingRequested { attempt: 1 }, None),
            (
                VideoEvent::EncodingClaimed {
                    attempt: 1,
                    worker_id: "w".into(),
                    lease_until: at,
                },
                None,
            ),
        ];
        for (event, expected) in cases {
            let expected = expected.map(|(t, data)| (t.to_owned(), data));
            assert_eq!(public(&event), expected, "{event:?}");
            if let Some((event_type, _)) = &expected {
                assert!(
                    EVENT_TYPES.iter().any(|(t, _)| t == event_type),
                    "{event_type} is documented"
                );
            }
        }
        let event = public_event(&recorded(7), &VideoEvent::VideoPublished {}).expect("public");
        assert_eq!(
            serde_json::to_value(&event).expect("json"),
            json!({
                "id": uuid::Uuid::from_u128(7).to_string(),
                "type": "video.published",
                "api_version": CONTRACT_VERSION,
                "created_at": "2026-12-05T12:00:00Z",
                "position": 7,
                "video_id": "v1",
                "data": {},
            })
        );
    }
}
