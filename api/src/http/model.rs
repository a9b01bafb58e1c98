//! The request and response bodies of the API.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use poem_openapi::Object;
use serde::{Deserialize, Serialize};
use vodsource_projections::{CatalogView, StatusView};

pub use vodsource_app::admin::{DeadLetter, DeadLetterPage, ProjectionInfo, Projections, RebuildInfo};
pub use vodsource_app::catalog::Playback;
pub use vodsource_app::videos::{Accepted, Registered, UploadTarget};
pub use vodsource_app::VideoStatus;

/// A JSON string and nothing else: poem-openapi's `String` also takes a number or a boolean
/// (`"title": false` became the title "false"), which the document does not allow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Text(pub String);

impl std::ops::Deref for Text {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl poem_openapi::types::Type for Text {
    const IS_REQUIRED: bool = true;
    type RawValueType = String;
    type RawElementValueType = String;

    fn name() -> std::borrow::Cow<'static, str> {
        String::name()
    }

    fn schema_ref() -> poem_openapi::registry::MetaSchemaRef {
        String::schema_ref()
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(&self.0)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(std::iter::once(&self.0))
    }
}

impl poem_openapi::types::ParseFromJSON for Text {
    fn parse_from_json(value: Option<serde_json::Value>) -> poem_openapi::types::ParseResult<Self> {
        match value {
            Some(serde_json::Value::String(text)) => Ok(Self(text)),
            other => Err(poem_openapi::types::ParseError::expected_type(
                other.unwrap_or_default(),
            )),
        }
    }
}

impl poem_openapi::types::ToJSON for Text {
    fn to_json(&self) -> Option<serde_json::Value> {
        Some(serde_json::Value::String(self.0.clone()))
    }
}

/// An optional field that, when present, has a value: `null` is refused (400) rather than
/// read as absent, as poem-openapi's `Option` would — the document does not allow it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Maybe<T>(pub Option<T>);

impl<T: poem_openapi::types::Type> poem_openapi::types::Type for Maybe<T> {
    const IS_REQUIRED: bool = false;
    type RawValueType = T::RawValueType;
    type RawElementValueType = T::RawElementValueType;

    fn name() -> std::borrow::Cow<'static, str> {
        format!("optional_{}", T::name()).into()
    }

    fn schema_ref() -> poem_openapi::registry::MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut poem_openapi::registry::Registry) {
        T::register(registry);
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        self.0.as_ref().and_then(T::as_raw_value)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        match &self.0 {
            Some(value) => value.raw_element_iter(),
            None => Box::new(std::iter::empty()),
        }
    }

    fn is_none(&self) -> bool {
        self.0.is_none()
    }
}

impl<T: poem_openapi::types::ParseFromJSON> poem_openapi::types::ParseFromJSON for Maybe<T> {
    fn parse_from_json(value: Option<serde_json::Value>) -> poem_openapi::types::ParseResult<Self> {
        match value {
            None => Ok(Self(None)),
            Some(serde_json::Value::Null) => Err(poem_openapi::types::ParseError::custom(
                "null is not a value here; leave the field out",
            )),
            Some(value) => Ok(Self(Some(
                T::parse_from_json(Some(value)).map_err(poem_openapi::types::ParseError::propagate)?,
            ))),
        }
    }
}

impl<T: poem_openapi::types::ToJSON> poem_openapi::types::ToJSON for Maybe<T> {
    fn to_json(&self) -> Option<serde_json::Value> {
        self.0.as_ref().and_then(T::to_json)
    }
}

/// `POST /videos`.
#[derive(Debug, Clone, Object, Serialize)]
#[oai(deny_unknown_fields)]
pub struct RegisterVideo {
    /// 1 to 200 characters.
    #[oai(validator(min_length = 1, max_length = 200))]
    pub title: Text,
    /// Up to 5000 characters.
    #[oai(validator(max_length = 5000))]
    pub description: Maybe<Text>,
    /// Up to 20 tags of 1 to 40 characters.
    #[oai(validator(max_items = 20, min_length = 1, max_length = 40))]
    pub tags: Maybe<Vec<Text>>,
    /// The source's file name, without folders: 1 to 255 characters, no `/`, `\\` or
    /// control characters, not `.` or `..`.
    #[oai(validator(min_length = 1, max_length = 255))]
    pub filename: Text,
    /// `video/<subtype>`, parameters allowed.
    #[oai(validator(max_length = 255))]
    pub content_type: Text,
    /// Exact size of the source in bytes. Required unless the source is fetched from
    /// `source_url` (then optional: a file of another size fails the video).
    #[oai(validator(minimum(value = "1")))]
    pub size_bytes: Maybe<u64>,
    /// Fetch the source from this URL instead of uploading it: `https` (`http` only where
    /// configuration allows it; else 422 `SOURCE_URL_REFUSED`). Addresses inside the
    /// network (loopback, private, link-local, cloud metadata) are refused after DNS
    /// resolution and on every redirect; a refusal, a 4xx, a file over the size limit or
    /// repeated failures fail the video (status `failed`, the reason in `last_error`).
    #[oai(validator(min_length = 1, max_length = 2048))]
    pub source_url: Maybe<Text>,
    /// Publish the video on its own as soon as it plays: while it is still encoding (its
    /// playlists then grow until it is ready), or at the latest when it is encoded. Once:
    /// unpublishing afterwards is not undone. Default false.
    pub publish_when_playable: Maybe<bool>,
}

/// `PATCH /videos/{id}`: the fields to change.
#[derive(Debug, Clone, Object, Serialize)]
#[oai(deny_unknown_fields)]
pub struct UpdateVideo {
    /// 1 to 200 characters.
    #[oai(validator(min_length = 1, max_length = 200))]
    pub title: Maybe<Text>,
    /// Up to 5000 characters.
    #[oai(validator(max_length = 5000))]
    pub description: Maybe<Text>,
    /// Replaces all tags.
    #[oai(validator(max_items = 20, min_length = 1, max_length = 40))]
    pub tags: Maybe<Vec<Text>>,
}

/// A rung of the encoded ladder.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct RenditionInfo {
    /// Name, for example `720p`.
    pub name: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Bits per second.
    pub bitrate_bps: u64,
}

/// A video in the catalog.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct Video {
    /// Id.
    pub video_id: String,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Owner (the subject that registered it).
    pub owner: String,
    /// Lifecycle status.
    pub status: VideoStatus,
    /// Visible to viewers.
    pub published: bool,
    /// It plays: while encoding (the first segments are stored and the encode keeps ahead
    /// of playback; playlists grow until it is ready) or encoded. It may be published from
    /// then on.
    pub playable: bool,
    /// The encoded ladder.
    pub renditions: Vec<RenditionInfo>,
    /// Duration once encoded.
    pub duration_ms: Option<u64>,
    /// Registration time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Stream version of the last change (send as If-Match to write conditionally).
    pub version: u64,
}

impl From<CatalogView> for Video {
    fn from(v: CatalogView) -> Self {
        Self {
            video_id: v.video_id,
            title: v.title,
            description: v.description,
            tags: v.tags,
            owner: v.owner,
            status: VideoStatus::from_stage(v.status),
            published: v.published,
            playable: v.playable,
            renditions: v
                .renditions
                .into_iter()
                .map(|r| RenditionInfo {
                    name: r.name,
                    width: r.width,
                    height: r.height,
                    bitrate_bps: r.bitrate_bps,
                })
                .collect(),
            duration_ms: v.duration_ms,
            created_at: v.created_at,
            updated_at: v.updated_at,
            version: v.version,
        }
    }
}

/// A page of the catalog.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct VideoPage {
    /// Newest first.
    pub items: Vec<Video>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

/// Encoding status.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct EncodingStatus {
    /// Id.
    pub video_id: String,
    /// Lifecycle status.
    pub status: VideoStatus,
    /// Encoding attempt number.
    pub attempt: u32,
    /// The worker holding the current attempt.
    pub worker_id: Option<String>,
    /// Its lease ends at.
    pub lease_until: Option<DateTime<Utc>>,
    /// Step of the encoder (probe, encode, package, …).
    pub encode_stage: Option<String>,
    /// Overall percent done.
    pub percent: f64,
    /// Percent done per rung.
    pub renditions: BTreeMap<String, f64>,
    /// The current attempt plays (while encoding, or encoded).
    pub playable: bool,
    /// When it became playable.
    pub playable_at: Option<DateTime<Utc>>,
    /// Frames per second of the encoder.
    pub fps: Option<f64>,
    /// Seconds left, estimated.
    pub eta_seconds: Option<u32>,
    /// The last failure.
    pub last_error: Option<String>,
    /// Whether the last failure will be retried.
    pub last_error_retryable: Option<bool>,
    /// The next attempt may not start before.
    pub not_before: Option<DateTime<Utc>>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Stream version of the last change.
    pub version: u64,
}

impl From<StatusView> for EncodingStatus {
    fn from(v: StatusView) -> Self {
        Self {
            video_id: v.video_id,
            status: VideoStatus::from_stage(v.stage),
            attempt: v.attempt,
            worker_id: v.lease_holder,
            lease_until: v.lease_until,
            encode_stage: v
                .encode_stage
                .and_then(|s| serde_json::to_value(s).ok())
                .and_then(|v| v.as_str().map(str::to_owned)),
            percent: v.percent,
            renditions: v.renditions,
            playable: v.playable,
            playable_at: v.playable_at,
            fps: v.fps,
            eta_seconds: v.eta_seconds,
            last_error_retryable: v.last_error.as_ref().map(|f| f.retryable),
            last_error: v.last_error.map(|f| vodsource_domain::redact_paths(&f.reason)),
            not_before: v.not_before,
            updated_at: v.updated_at,
            version: v.version,
        }
    }
}

/// One event of a video's history.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct HistoryEvent {
    /// Global log position (the SSE event id).
    pub position: u64,
    /// Version within the video's stream.
    pub version: u64,
    /// Event type, for example `EncodingProgressed`.
    #[oai(rename = "type")]
    pub event_type: String,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// Who caused it.
    pub actor: Option<String>,
    /// The event's fields.
    pub data: serde_json::Value,
}

/// A page of history.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct HistoryPage {
    /// Oldest first.
    pub events: Vec<HistoryEvent>,
    /// Pass as `after_version` for the next page; absent on the last.
    pub next_after_version: Option<u64>,
}

/// One dependency's health.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct Check {
    /// Which.
    pub name: String,
    /// Where (no secrets); for admins only.
    pub target: Option<String>,
    /// `up` or `down`.
    pub state: String,
    /// Why it is down; for admins only.
    pub error: Option<String>,
}

/// Readiness.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct Readiness {
    /// `ready` or `unavailable`.
    pub status: String,
    /// Each dependency.
    pub checks: Vec<Check>,
}

/// Liveness.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct Liveness {
    /// `live`.
    pub status: String,
}
