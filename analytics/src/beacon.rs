//! Player beacons: the schema, and validation that judges every event on its own.
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
const MAX_MEDIA_MS: u64 = 7 * 24 * 3600 * 1000;
const MAX_WAIT_MS: u32 = 3600 * 1000;
const MAX_ID_CHARS: usize = 64;
const MAX_TEXT_CHARS: usize = 256;

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
    Ok(batch
        .events
        .into_iter()
        .enumerate()
        .map(|(index, raw)| {
            let event_id = raw
                .get("event_id")
                .and_then(Value::as_str)
                .and_then(|s| Uuid::parse_str(s).ok());
            EventResult {
                index,
                event_id,
                outcome: validate(raw, now_ms),
            }
        })
        .collect())
}

/// Checks one event.
fn validate(raw: Value, now_ms: i64) -> Result<QoeEvent, BeaconError> {
    let Some(map) = raw.as_object() else {
        return Err(refuse("event", "must be a JSON object"));
    };
    check_types(map)?;
    let mut event: QoeEvent = serde_json::from_value(raw).map_err(|e| serde_refusal(&e.to_string()))?;
    id("sid", &event.sid)?;
    id("cid", &event.cid)?;
    if let Some(viewer) = &event.viewer_id {
        text("viewer_id", viewer, 128)?;
    }
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
    for (field, value) in [("position_ms", event.position_ms), ("duration_ms", event.duration_ms)] {
        if value.is_some_and(|v| v > MAX_MEDIA_MS) {
            return Err(refuse(field, "must be at most 7 days"));
        }
    }
    if event.br.is_some_and(|b| b > 1_000_000) {
        return Err(refuse("br", "encoded bitrate must be at most 1,000,000 kbit/s"));
    }
    if event.mtp.is_some_and(|b| b > 10_000_000) {
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
    if event.event_type == QoeEventType::Error && event.error_code.is_none() {
        return Err(refuse("error_code", "is required on error events"));
    }
    for (field, value) in [
        ("error_code", &event.error_code),
        ("error_message", &event.error_message),
        ("player_name", &event.player_name),
        ("player_version", &event.player_version),
        ("device_type", &event.device_type),
        ("os", &event.os),
        ("browser", &event.browser),
    ] {
        if let Some(value) = value {
            text(field, value, MAX_TEXT_CHARS)?;
        }
    }
    event.received_at = now_ms;
    Ok(event)
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
            Kind::Uuid => (
                value.as_str().is_some_and(|s| Uuid::parse_str(s).is_ok()),
                "a UUID string",
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

fn id(field: &str, value: &str) -> Result<(), BeaconError> {
    if value.is_empty() {
        return Err(refuse(field, "must not be empty"));
    }
    text(field, value, MAX_ID_CHARS)
}

fn text(field: &str, value: &str, max: usize) -> Result<(), BeaconError> {
    let chars = value.chars().count();
    if chars > max {
        return Err(refuse(field, format!("must be at most {max} characters, got {chars}")));
    }
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

    fn refused(value: Value) -> BeaconError {
        let results = parse_batch(&batch(&[value]), NOW).expect("batch");
        results[0].outcome.clone().expect_err("refused")
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
    fn bad_events_are_refused_one_by_one_naming_the_field() {
        let events = [
            event(),
            with(|m| {
                m.insert("br".into(), json!("fast"));
            }),
            with(|m| {
                m.remove("sid");
            }),
            with(|m| {
                m.insert("event_type".into(), json!("exploded"));
            }),
            with(|m| {
                m.insert("ts".into(), json!(NOW + 3_600_000));
            }),
            with(|m| {
                m.insert("colour".into(), json!("blue"));
            }),
            json!(42),
        ];
        let results = parse_batch(&batch(&events), NOW).expect("batch");
        let fields: Vec<Option<String>> = results
            .iter()
            .map(|r| r.outcome.as_ref().err().map(|e| e.field.clone()))
            .collect();
        assert_eq!(
            fields,
            [
                None,
                Some("br".into()),
                Some("sid".into()),
                Some("event_type".into()),
                Some("ts".into()),
                Some("colour".into()),
                Some("event".into())
            ]
        );
        assert_eq!(
            results[1].event_id, results[0].event_id,
            "the id is reported even when refused"
        );
        assert_eq!(results[6].index, 6);
    }

    #[test]
    fn ranges_and_texts_are_checked() {
        assert_eq!(
            refused(with(|m| {
                m.insert("bl".into(), json!(4_000_000));
            }))
            .field,
            "bl"
        );
        assert_eq!(
            refused(with(|m| {
                m.insert("br".into(), json!(2_000_000));
            }))
            .field,
            "br"
        );
        assert_eq!(
            refused(with(|m| {
                m.insert("br".into(), json!(-1));
            }))
            .field,
            "br"
        );
        assert_eq!(
            refused(with(|m| {
                m.insert("position_ms".into(), json!(u64::MAX));
            }))
            .field,
            "position_ms"
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
                m.insert("sid".into(), json!(""));
            }))
            .field,
            "sid"
        );
        assert_eq!(
            refused(with(|m| {
                m.insert("cid".into(), json!("x".repeat(65)));
            }))
            .field,
            "cid"
        );
        assert_eq!(
            refused(with(|m| {
                m.insert("os".into(), json!("a\u{0}b"));
            }))
            .field,
            "os"
        );
        assert_eq!(
            refused(with(|m| {
                m.insert("ot".into(), json!("video"));
            }))
            .field,
            "ot"
        );
        assert_eq!(
            refused(with(|m| {
                m.insert("event_id".into(), json!("not-a-uuid"));
            }))
            .field,
            "event_id"
        );
        let error = with(|m| {
            m.insert("event_type".into(), json!("error"));
        });
        assert_eq!(refused(error).field, "error_code");
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
}
