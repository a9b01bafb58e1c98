//! Player beacons: the schema, and validation in two steps. The *shape* of a batch (each
//! event's fields, types, enumerations, lengths and ranges — everything the published JSON
//! Schema says) is checked for the whole batch: one event out of shape is a broken client,
//! and the batch is refused naming the event and the field. What depends on the server
//! (the client clock against the server's, `error_code` on error events, control characters,
//! and in the API who may report on which video) is judged for every event on its own.
//!
//! Field names follow CMCD (CTA-5004) where it has one: `sid` session id, `cid` content id,
//! `br` encoded bitrate (kbit/s), `bl` buffer length (ms), `mtp` measured throughput (kbit/s),
//! `ot` object type, `su` startup, `bs` buffer starvation. Times are integer milliseconds
//! since the Unix epoch, UTC.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// The most events one batch may carry.
pub const MAX_BATCH_EVENTS: usize = 500;
/// The largest batch body in bytes.
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;

/// How far a client clock may be behind the server (players send late when they were offline).
const MAX_LAG_MS: i64 = 24 * 3600 * 1000;
/// How far a client clock may be ahead of the server.
const MAX_LEAD_MS: i64 = 5 * 60 * 1000;
/// Largest `position_ms` and `duration_ms`: a week.
pub const MAX_MEDIA_MS: u64 = 7 * 24 * 3600 * 1000;
/// Largest `bl`, `startup_ms` and `rebuffer_ms`: an hour.
pub const MAX_WAIT_MS: u32 = 3600 * 1000;
/// Largest `br`, kbit/s.
pub const MAX_BITRATE_KBPS: u32 = 1_000_000;
/// Largest `mtp`, kbit/s.
pub const MAX_THROUGHPUT_KBPS: u32 = 10_000_000;
/// Longest `sid` and `cid`.
pub const MAX_ID_CHARS: usize = 64;
/// Longest `viewer_id`.
pub const MAX_VIEWER_CHARS: usize = 128;
/// Longest free text (`error_code`, `error_message`, player and device fields).
pub const MAX_TEXT_CHARS: usize = 256;

/// What happened in the player.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QoeEventType {
    /// The viewer asked to play (the start of startup time).
    SessionStart,
    /// The first frame is shown, or playback resumed.
    Playing,
    /// Periodic while playing.
    Heartbeat,
    /// The viewer paused.
    Pause,
    /// The viewer moved the playhead.
    Seek,
    /// The buffer ran dry.
    RebufferStart,
    /// Playback resumed after a stall.
    RebufferEnd,
    /// The player switched rungs.
    BitrateChange,
    /// Playback failed.
    Error,
    /// The media played to its end.
    Ended,
    /// The player went away.
    SessionEnd,
}

impl QoeEventType {
    /// Every event type, in the order they were added. Append only: the stream's binary
    /// format ([`crate::wire`]) stores an event type as its index here.
    pub const ALL: [QoeEventType; 11] = [
        Self::SessionStart,
        Self::Playing,
        Self::Heartbeat,
        Self::Pause,
        Self::Seek,
        Self::RebufferStart,
        Self::RebufferEnd,
        Self::BitrateChange,
        Self::Error,
        Self::Ended,
        Self::SessionEnd,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SessionStart => "session_start",
            Self::Playing => "playing",
            Self::Heartbeat => "heartbeat",
            Self::Pause => "pause",
            Self::Seek => "seek",
            Self::RebufferStart => "rebuffer_start",
            Self::RebufferEnd => "rebuffer_end",
            Self::BitrateChange => "bitrate_change",
            Self::Error => "error",
            Self::Ended => "ended",
            Self::SessionEnd => "session_end",
        }
    }
}

/// CMCD object type of what was being fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ObjectType {
    /// Manifest or playlist.
    #[serde(rename = "m")]
    Manifest,
    /// Audio only.
    #[serde(rename = "a")]
    Audio,
    /// Video only.
    #[serde(rename = "v")]
    Video,
    /// Muxed audio and video.
    #[serde(rename = "av")]
    Muxed,
    /// Init segment.
    #[serde(rename = "i")]
    Init,
    /// Caption or subtitle.
    #[serde(rename = "c")]
    Caption,
    /// Timed text.
    #[serde(rename = "tt")]
    TimedText,
    /// Key or license.
    #[serde(rename = "k")]
    Key,
    /// Anything else.
    #[serde(rename = "o")]
    Other,
}

/// An event: as a player sends it (every field but `received_at`, which validation
/// refuses from players), and, stamped with the server's receive time, as it goes on the QoE
/// stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)] // the fields are the beacon's, described at the top of this module
pub struct QoeEvent {
    pub event_id: Uuid,
    pub event_type: QoeEventType,
    pub sid: String,
    pub cid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub viewer_id: Option<String>,
    /// Client time, ms since the epoch.
    pub ts: i64,
    /// Server receive time, ms since the epoch.
    #[serde(default)]
    pub received_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub br: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bl: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtp: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ot: Option<ObjectType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub su: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bs: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_ms: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebuffer_ms: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub player_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub player_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub browser: Option<String>,
}

impl QoeEvent {
    /// An event with its required fields and nothing else (received now-ish: `received_at`
    /// is `ts`; the server stamps the real one).
    pub fn new(event_id: Uuid, event_type: QoeEventType, sid: &str, cid: &str, ts: i64) -> Self {
        Self {
            event_id,
            event_type,
            sid: sid.to_owned(),
            cid: cid.to_owned(),
            viewer_id: None,
            ts,
            received_at: ts,
            position_ms: None,
            duration_ms: None,
            br: None,
            bl: None,
            mtp: None,
            ot: None,
            su: None,
            bs: None,
            startup_ms: None,
            rebuffer_ms: None,
            error_code: None,
            error_message: None,
            player_name: None,
            player_version: None,
            device_type: None,
            os: None,
            browser: None,
        }
    }
}

/// Why one event was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{field}: {message}")]
pub struct BeaconError {
    /// The field at fault (`event` when the event is not an object).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

fn refuse(field: &str, message: impl Into<String>) -> BeaconError {
    BeaconError {
        field: field.to_owned(),
        message: message.into(),
    }
}

/// Why a whole batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The body is over [`MAX_BATCH_BYTES`].
    #[error("the batch is {0} bytes; at most {MAX_BATCH_BYTES} are accepted")]
    TooLarge(usize),
    /// The body is not `{"events": [...]}`.
    #[error("the body must be a JSON object with an `events` array: {0}")]
    Malformed(String),
    /// No events.
    #[error("the batch has no events")]
    Empty,
    /// Over [`MAX_BATCH_EVENTS`].
    #[error("the batch has {0} events; at most {MAX_BATCH_EVENTS} are accepted")]
    TooMany(usize),
    /// An event out of the schema's shape.
    #[error("event {index}: {fault}")]
    Shape {
        /// Its position in the batch.
        index: usize,
        /// What is wrong.
        fault: BeaconError,
    },
}

/// The verdict on one event of a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct EventResult {
    /// Its position in the batch.
    pub index: usize,
    /// Its id, when it had a readable one.
    pub event_id: Option<Uuid>,
    /// The accepted event, or why not.
    pub outcome: Result<QoeEvent, BeaconError>,
}

/// Parses a batch body and judges each event on its own, stamping accepted ones with
/// `now_ms` as their receive time.
///
/// # Errors
/// A [`BatchError`] when the body as a whole is unusable: too large, not the batch shape,
/// empty, or too many events.
pub fn parse_batch(body: &[u8], now_ms: i64) -> Result<Vec<EventResult>, BatchError> {
    if body.len() > MAX_BATCH_BYTES {
        return Err(BatchError::TooLarge(body.len()));
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| BatchError::Malformed(e.to_string()))?;
    judge_batch(value, now_ms)
}

/// As [`parse_batch`], for a body already parsed as JSON (its size checked by the caller).
///
/// # Errors
/// As [`parse_batch`], but for the size.
pub fn judge_batch(body: Value, now_ms: i64) -> Result<Vec<EventResult>, BatchError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Batch {
        events: Vec<Value>,
    }
    let batch: Batch = serde_json::from_value(body).map_err(|e| BatchError::Malformed(e.to_string()))?;
    if batch.events.is_empty() {
        return Err(BatchError::Empty);
    }
    if batch.events.len() > MAX_BATCH_EVENTS {
        return Err(BatchError::TooMany(batch.events.len()));
    }
    // The shape first, for the whole batch.
    let mut shaped = Vec::with_capacity(batch.events.len());
    for (index, raw) in batch.events.into_iter().enumerate() {
        shaped.push(shape(raw).map_err(|fault| BatchError::Shape { index, fault })?);
    }
    Ok(shaped
        .into_iter()
        .enumerate()
        .map(|(index, event)| EventResult {
            index,
            event_id: Some(event.event_id),
            outcome: judge(event, now_ms),
        })
        .collect())
}

/// Checks an event against the schema: known fields of their types (null stands for
/// absent), required ones present, lengths and ranges.
fn shape(raw: Value) -> Result<QoeEvent, BeaconError> {
    let Some(map) = raw.as_object() else {
        return Err(refuse("event", "must be a JSON object"));
    };
    check_types(map)?;
    let event: QoeEvent = serde_json::from_value(raw).map_err(|e| serde_refusal(&e.to_string()))?;
    length("sid", &event.sid, 1, MAX_ID_CHARS)?;
    length("cid", &event.cid, 1, MAX_ID_CHARS)?;
    if let Some(viewer) = &event.viewer_id {
        length("viewer_id", viewer, 0, MAX_VIEWER_CHARS)?;
    }
    for (field, value) in [("position_ms", event.position_ms), ("duration_ms", event.duration_ms)] {
        if value.is_some_and(|v| v > MAX_MEDIA_MS) {
            return Err(refuse(field, format!("must be at most {MAX_MEDIA_MS} (7 days)")));
        }
    }
    if event.br.is_some_and(|b| b > MAX_BITRATE_KBPS) {
        return Err(refuse("br", "encoded bitrate must be at most 1,000,000 kbit/s"));
    }
    if event.mtp.is_some_and(|b| b > MAX_THROUGHPUT_KBPS) {
        return Err(refuse("mtp", "measured throughput must be at most 10,000,000 kbit/s"));
    }
    for (field, value) in [
        ("bl", event.bl),
        ("startup_ms", event.startup_ms),
        ("rebuffer_ms", event.rebuffer_ms),
    ] {
        if value.is_some_and(|v| v > MAX_WAIT_MS) {
            return Err(refuse(field, "must be at most one hour (3600000 ms)"));
        }
    }
    for (field, value) in texts(&event) {
        if let Some(value) = value {
            length(field, value, 0, MAX_TEXT_CHARS)?;
        }
    }
    Ok(event)
}

fn texts(event: &QoeEvent) -> [(&'static str, &Option<String>); 7] {
    [
        ("error_code", &event.error_code),
        ("error_message", &event.error_message),
        ("player_name", &event.player_name),
        ("player_version", &event.player_version),
        ("device_type", &event.device_type),
        ("os", &event.os),
        ("browser", &event.browser),
    ]
}

/// Judges a well-shaped event against the server: its clock, and rules a schema cannot say.
fn judge(mut event: QoeEvent, now_ms: i64) -> Result<QoeEvent, BeaconError> {
    if event.ts < now_ms - MAX_LAG_MS || event.ts > now_ms + MAX_LEAD_MS {
        return Err(refuse(
            "ts",
            format!(
                "client time {} is {} the server's by more than allowed (24 h behind, 5 min ahead)",
                event.ts,
                if event.ts < now_ms { "behind" } else { "ahead of" }
            ),
        ));
    }
    if event.event_type == QoeEventType::Error && event.error_code.is_none() {
        return Err(refuse("error_code", "is required on error events"));
    }
    for (field, value) in [("sid", &event.sid), ("cid", &event.cid)] {
        plain(field, value)?;
    }
    if let Some(viewer) = &event.viewer_id {
        plain("viewer_id", viewer)?;
    }
    for (field, value) in texts(&event) {
        if let Some(value) = value {
            plain(field, value)?;
        }
    }
    event.received_at = now_ms;
    Ok(event)
}

/// The JSON Schema (OpenAPI 3.0 dialect) of a batch, `BeaconBatch`, and of one event,
/// `BeaconEvent`, as [`judge_batch`] checks the shape: the API publishes these.
pub fn json_schemas() -> (Value, Value) {
    let text = |max: usize| serde_json::json!({ "type": "string", "maxLength": max, "nullable": true });
    let count = |max: u64| serde_json::json!({ "type": "integer", "format": "int64", "minimum": 0, "maximum": max, "nullable": true });
    let event_types: Vec<&str> = QoeEventType::ALL.iter().map(|t| t.as_str()).collect();
    let event = serde_json::json!({
        "type": "object",
        "description": "One player event; field names follow CMCD (CTA-5004) where it has one. Null stands for absent. Besides its shape, each event must pass the server's own rules, judged one by one: `ts` at most 24 h behind and 5 min ahead of the server's clock, `error_code` present on `error` events, no control characters in text, `cid` a video the caller may play, `viewer_id` the caller's own.",
        "required": ["event_id", "event_type", "sid", "cid", "ts"],
        "additionalProperties": false,
        "properties": {
            "event_id": { "type": "string", "format": "uuid", "description": "Unique per event: a resent event is stored once." },
            "event_type": { "type": "string", "enum": event_types },
            "sid": { "type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS, "description": "Session id." },
            "cid": { "type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS, "description": "Content id: the video." },
            "viewer_id": { "type": "string", "maxLength": MAX_VIEWER_CHARS, "nullable": true },
            "ts": { "type": "integer", "format": "int64", "minimum": i64::MIN, "maximum": i64::MAX, "description": "Client time, ms since the Unix epoch." },
            "position_ms": count(MAX_MEDIA_MS),
            "duration_ms": count(MAX_MEDIA_MS),
            "br": count(u64::from(MAX_BITRATE_KBPS)),
            "bl": count(u64::from(MAX_WAIT_MS)),
            "mtp": count(u64::from(MAX_THROUGHPUT_KBPS)),
            // OpenAPI 3.0: an enumeration that may be null lists null (`nullable` alone does not).
            "ot": { "type": "string", "enum": ["m", "a", "v", "av", "i", "c", "tt", "k", "o", null], "nullable": true },
            "su": { "type": "boolean", "nullable": true },
            "bs": { "type": "boolean", "nullable": true },
            "startup_ms": count(u64::from(MAX_WAIT_MS)),
            "rebuffer_ms": count(u64::from(MAX_WAIT_MS)),
            "error_code": text(MAX_TEXT_CHARS),
            "error_message": text(MAX_TEXT_CHARS),
            "player_name": text(MAX_TEXT_CHARS),
            "player_version": text(MAX_TEXT_CHARS),
            "device_type": text(MAX_TEXT_CHARS),
            "os": text(MAX_TEXT_CHARS),
            "browser": text(MAX_TEXT_CHARS),
        }
    });
    let batch = serde_json::json!({
        "type": "object",
        "required": ["events"],
        "additionalProperties": false,
        "properties": {
            "events": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_BATCH_EVENTS,
                "items": { "$ref": "#/components/schemas/BeaconEvent" }
            }
        }
    });
    (batch, event)
}

/// The JSON type each field must have.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    Uuid,
    EventType,
    ObjectType,
    Text,
    Millis,
    Count64,
    Count32,
    Flag,
}

pub(crate) const FIELDS: [(&str, Kind); 23] = [
    ("event_id", Kind::Uuid),
    ("event_type", Kind::EventType),
    ("sid", Kind::Text),
    ("cid", Kind::Text),
    ("viewer_id", Kind::Text),
    ("ts", Kind::Millis),
    ("position_ms", Kind::Count64),
    ("duration_ms", Kind::Count64),
    ("br", Kind::Count32),
    ("bl", Kind::Count32),
    ("mtp", Kind::Count32),
    ("ot", Kind::ObjectType),
    ("su", Kind::Flag),
    ("bs", Kind::Flag),
    ("startup_ms", Kind::Count32),
    ("rebuffer_ms", Kind::Count32),
    ("error_code", Kind::Text),
    ("error_message", Kind::Text),
    ("player_name", Kind::Text),
    ("player_version", Kind::Text),
    ("device_type", Kind::Text),
    ("os", Kind::Text),
    ("browser", Kind::Text),
];

/// The name of every field a beacon event may carry, in the schema's order (the lake's
/// `qoe_events` table has a column for each).
pub fn field_names() -> impl Iterator<Item = &'static str> {
    FIELDS.iter().map(|(name, _)| *name)
}

/// Every field known and of its type (null stands for absent), so a refusal names the field.
fn check_types(map: &serde_json::Map<String, Value>) -> Result<(), BeaconError> {
    for (key, value) in map {
        let Some((_, kind)) = FIELDS.iter().find(|(name, _)| name == key) else {
            return Err(refuse(key, "is not a beacon field"));
        };
        if value.is_null() {
            continue;
        }
        let (ok, expected) = match kind {
            // The hyphenated form only, as JSON Schema's `uuid` format says.
            Kind::Uuid => (
                value.as_str().is_some_and(|s| s.len() == 36 && Uuid::parse_str(s).is_ok()),
                "a UUID string in the hyphenated form",
            ),
            Kind::EventType => (
                serde_json::from_value::<QoeEventType>(value.clone()).is_ok(),
                "one of session_start, playing, heartbeat, pause, seek, rebuffer_start, rebuffer_end, bitrate_change, error, ended, session_end",
            ),
            Kind::ObjectType => (
                serde_json::from_value::<ObjectType>(value.clone()).is_ok(),
                "a CMCD object type: m, a, v, av, i, c, tt, k or o",
            ),
            Kind::Text => (value.is_string(), "a string"),
            Kind::Millis => (value.as_i64().is_some(), "an integer of milliseconds since the epoch"),
            Kind::Count64 => (value.as_u64().is_some(), "a non-negative integer"),
            Kind::Count32 => (
                value.as_u64().is_some_and(|v| v <= u64::from(u32::MAX)),
                "a non-negative 32-bit integer",
            ),
            Kind::Flag => (value.is_boolean(), "true or false"),
        };
        if !ok {
            return Err(refuse(key, format!("must be {expected}, got {value}")));
        }
    }
    Ok(())
}

/// serde's message names the field in backquotes (`missing field `sid``, `unknown field
/// `foo``, `invalid type … for key `br``); the field becomes the error's field.
fn serde_refusal(message: &str) -> BeaconError {
    let field = message
        .split('`')
        .nth(1)
        .filter(|f| !f.is_empty() && f.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or("event");
    let message = message.split(" at line ").next().unwrap_or(message);
    refuse(field, message)
}

fn length(field: &str, value: &str, min: usize, max: usize) -> Result<(), BeaconError> {
    let chars = value.chars().count();
    if chars < min {
        return Err(refuse(field, "must not be empty"));
    }
    if chars > max {
        return Err(refuse(field, format!("must be at most {max} characters, got {chars}")));
    }
    Ok(())
}

fn plain(field: &str, value: &str) -> Result<(), BeaconError> {
    if value.chars().any(char::is_control) {
        return Err(refuse(field, "must not contain control characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const NOW: i64 = 1_795_400_000_000;

    fn event() -> Value {
        json!({
            "event_id": "01a2065e-ef08-7151-b48f-431b78c26bdb",
            "event_type": "playing",
            "sid": "s-1",
            "cid": "video-1",
            "viewer_id": "alice",
            "ts": NOW - 1500,
            "position_ms": 12000,
            "br": 2800,
            "bl": 8000,
            "mtp": 25000,
            "ot": "v",
            "su": false,
            "startup_ms": 640,
            "player_name": "hls.js",
        })
    }

    fn with(change: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
        let mut value = event();
        if let Some(map) = value.as_object_mut() {
            change(map);
        }
        value
    }

    fn batch(events: &[Value]) -> Vec<u8> {
        serde_json::to_vec(&json!({ "events": events })).expect("json")
    }

    /// Why a lone event is refused per event (the server's rules).
    fn refused(value: Value) -> BeaconError {
        let results = parse_batch(&batch(&[event(), value]), NOW).expect("batch");
        assert!(results[0].outcome.is_ok(), "the good event beside it is accepted");
        results[1].outcome.clone().expect_err("refused")
    }

    /// Why a batch holding `value` after a good event is refused whole (the schema's rules).
    fn misshapen(value: Value) -> BeaconError {
        match parse_batch(&batch(&[event(), value]), NOW) {
            Err(BatchError::Shape { index, fault }) => {
                assert_eq!(index, 1);
                fault
            }
            other => panic!("expected a shape fault, got {other:?}"),
        }
    }

    #[test]
    fn a_good_event_is_accepted_and_stamped_with_the_receive_time() {
        let results = parse_batch(&batch(&[event()]), NOW).expect("batch");
        let accepted = results[0].outcome.clone().expect("accepted");
        assert_eq!(accepted.received_at, NOW);
        assert_eq!(accepted.event_type, QoeEventType::Playing);
        assert_eq!(accepted.ot, Some(ObjectType::Video));
        assert_eq!(accepted.br, Some(2800));
        let stored = serde_json::to_value(&accepted).expect("serializes");
        assert_eq!(stored["event_type"], "playing");
        assert_eq!(stored["ot"], "v");
        assert!(stored.get("duration_ms").is_none(), "absent fields stay absent");
    }

    #[test]
    fn an_event_out_of_the_schema_refuses_the_batch_naming_event_and_field() {
        let cases: Vec<(Value, &str)> = vec![
            (
                with(|m| {
                    m.insert("br".into(), json!("fast"));
                }),
                "br",
            ),
            (
                with(|m| {
                    m.remove("sid");
                }),
                "sid",
            ),
            (
                with(|m| {
                    m.insert("event_type".into(), json!("exploded"));
                }),
                "event_type",
            ),
            (
                with(|m| {
                    m.insert("colour".into(), json!("blue"));
                }),
                "colour",
            ),
            (json!(42), "event"),
            (
                with(|m| {
                    m.insert("bl".into(), json!(4_000_000));
                }),
                "bl",
            ),
            (
                with(|m| {
                    m.insert("br".into(), json!(2_000_000));
                }),
                "br",
            ),
            (
                with(|m| {
                    m.insert("br".into(), json!(-1));
                }),
                "br",
            ),
            (
                with(|m| {
                    m.insert("position_ms".into(), json!(u64::MAX));
                }),
                "position_ms",
            ),
            (
                with(|m| {
                    m.insert("sid".into(), json!(""));
                }),
                "sid",
            ),
            (
                with(|m| {
                    m.insert("cid".into(), json!("x".repeat(65)));
                }),
                "cid",
            ),
            (
                with(|m| {
                    m.insert("error_message".into(), json!("x".repeat(257)));
                }),
                "error_message",
            ),
            (
                with(|m| {
                    m.insert("ot".into(), json!("video"));
                }),
                "ot",
            ),
            (
                with(|m| {
                    m.insert("event_id".into(), json!("not-a-uuid"));
                }),
                "event_id",
            ),
        ];
        for (value, field) in cases {
            assert_eq!(misshapen(value).field, field);
        }
    }

    #[test]
    fn the_servers_own_rules_are_judged_event_by_event() {
        assert_eq!(
            refused(with(|m| {
                m.insert("ts".into(), json!(NOW + 3_600_000));
            }))
            .field,
            "ts"
        );
        assert_eq!(
            refused(with(|m| {
                m.insert("ts".into(), json!(NOW - 2 * MAX_LAG_MS));
            }))
            .field,
            "ts"
        );
        assert_eq!(
            refused(with(|m| {
                m.insert("os".into(), json!("a\u{0}b"));
            }))
            .field,
            "os"
        );
        let error = with(|m| {
            m.insert("event_type".into(), json!("error"));
        });
        assert_eq!(refused(error).field, "error_code");
        let results = parse_batch(
            &batch(&[with(|m| {
                m.insert("ts".into(), json!(NOW + 3_600_000));
            })]),
            NOW,
        )
        .expect("batch");
        assert_eq!(
            results[0].event_id,
            event()["event_id"].as_str().and_then(|s| Uuid::parse_str(s).ok())
        );
    }

    #[test]
    fn the_published_schema_names_every_field_and_nothing_else() {
        let (batch, event) = json_schemas();
        let mut published: Vec<&str> = event["properties"]
            .as_object()
            .map(|p| p.keys().map(String::as_str).collect())
            .unwrap_or_default();
        published.sort_unstable();
        let mut known: Vec<&str> = FIELDS.iter().map(|(name, _)| *name).collect();
        known.sort_unstable();
        assert_eq!(published, known);
        assert_eq!(batch["properties"]["events"]["maxItems"], MAX_BATCH_EVENTS);
        assert_eq!(event["properties"]["cid"]["maxLength"], MAX_ID_CHARS);
    }

    #[test]
    fn every_field_of_the_schema_is_a_known_field() {
        let full = with(|m| {
            for (name, value) in [
                ("duration_ms", json!(60_000)),
                ("bs", json!(true)),
                ("rebuffer_ms", json!(250)),
                ("error_code", json!("E1")),
                ("error_message", json!("media decode")),
                ("player_version", json!("1.5")),
                ("device_type", json!("tv")),
                ("os", json!("tvOS")),
                ("browser", json!("none")),
            ] {
                m.insert(name.into(), value);
            }
        });
        let keys: Vec<String> = full
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        assert_eq!(keys.len(), FIELDS.len(), "the test sends every field");
        let accepted = parse_batch(&batch(&[full]), NOW).expect("batch")[0]
            .outcome
            .clone()
            .expect("accepted");
        let stored = serde_json::to_value(accepted).expect("serializes");
        for (name, _) in FIELDS {
            assert!(stored.get(name).is_some(), "{name} is stored");
        }
    }

    #[test]
    fn unusable_batches_are_refused_whole() {
        assert!(matches!(parse_batch(b"[1,2]", NOW), Err(BatchError::Malformed(_))));
        assert!(matches!(parse_batch(b"{\"events\": []}", NOW), Err(BatchError::Empty)));
        let many: Vec<Value> = (0..=MAX_BATCH_EVENTS).map(|_| event()).collect();
        assert_eq!(parse_batch(&batch(&many), NOW), Err(BatchError::TooMany(501)));
        let huge = vec![b' '; MAX_BATCH_BYTES + 1];
        assert_eq!(parse_batch(&huge, NOW), Err(BatchError::TooLarge(MAX_BATCH_BYTES + 1)));
    }

    #[test]
    fn an_event_id_is_a_uuid_in_the_hyphenated_form_only() {
        for other in [
            "01a2065eef087151b48f431b78c26bdb",
            "{01a2065e-ef08-7151-b48f-431b78c26bdb}",
        ] {
            assert_eq!(
                misshapen(with(|m| {
                    m.insert("event_id".into(), json!(other));
                }))
                .field,
                "event_id",
                "{other}"
            );
        }
    }
}
