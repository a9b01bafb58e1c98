//! The QoE stream's record format: a compact binary encoding of an accepted [`QoeEvent`].
//!
//! JSON was the first format, and the lake sink spent two thirds of its time parsing it
//! (serde_json at ~350 MB/s on 460-byte events). This encoding is read with bounds checks and
//! no parsing: about 150 bytes per event instead of 460, which also halves what the stream
//! stores and carries. Readers still take JSON records (the first byte is `{`), so a stream
//! written before, or by another producer, stays readable.
//!
//! Layout, version 1 (integers little-endian). The text fields come last, in one block, so a
//! reader checks UTF-8 once per record rather than once per field:
//!
//! | bytes | field |
//! |---|---|
//! | 1 | version, `0x01` |
//! | 16 | `event_id` |
//! | 1 | `event_type` (index in [`EVENT_TYPES`]) |
//! | 8 + 8 | `ts`, `received_at` |
//! | 4 | presence bits of the optional fields, in the order below |
//! | … | present numbers: `position_ms` `duration_ms` u64, `br` `bl` `mtp` u32, `ot` u8 (index in [`OBJECT_TYPES`]), `su` `bs` u8, `startup_ms` `rebuffer_ms` u32 |
//! | 2 each | byte lengths (`u16`) of `sid`, `cid` and the present texts: `viewer_id`, `error_code`, `error_message`, `player_name`, `player_version`, `device_type`, `os`, `browser` |
//! | … | those texts, UTF-8, one after another |

use uuid::Uuid;

use crate::beacon::{ObjectType, QoeEvent, QoeEventType};

/// The current version byte.
pub const VERSION: u8 = 1;

/// Event types by their wire index: [`QoeEventType::ALL`], which is append only.
pub const EVENT_TYPES: [QoeEventType; 11] = QoeEventType::ALL;

/// CMCD object types by their wire index (append only).
pub const OBJECT_TYPES: [ObjectType; 9] = [
    ObjectType::Manifest,
    ObjectType::Audio,
    ObjectType::Video,
    ObjectType::Muxed,
    ObjectType::Init,
    ObjectType::Caption,
    ObjectType::TimedText,
    ObjectType::Key,
    ObjectType::Other,
];

impl ObjectType {
    /// The CMCD token.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Manifest => "m",
            Self::Audio => "a",
            Self::Video => "v",
            Self::Muxed => "av",
            Self::Init => "i",
            Self::Caption => "c",
            Self::TimedText => "tt",
            Self::Key => "k",
            Self::Other => "o",
        }
    }
}

/// Why a record does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The record ends before its fields do.
    #[error("the record is truncated")]
    Truncated,
    /// An unknown version byte.
    #[error("unknown QoE record version {0}")]
    Version(u8),
    /// A field holds an impossible value.
    #[error("bad {0} in a QoE record")]
    Field(&'static str),
    /// A JSON record that is not an event.
    #[error("not a QoE event: {0}")]
    Json(String),
}

/// An event decoded from a record, strings borrowed from it.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)] // the fields of [`QoeEvent`]
pub struct WireEvent<'a> {
    pub event_id: Uuid,
    pub event_type: QoeEventType,
    pub sid: &'a str,
    pub cid: &'a str,
    pub viewer_id: Option<&'a str>,
    pub ts: i64,
    pub received_at: i64,
    pub position_ms: Option<u64>,
    pub duration_ms: Option<u64>,
    pub br: Option<u32>,
    pub bl: Option<u32>,
    pub mtp: Option<u32>,
    pub ot: Option<ObjectType>,
    pub su: Option<bool>,
    pub bs: Option<bool>,
    pub startup_ms: Option<u32>,
    pub rebuffer_ms: Option<u32>,
    pub error_code: Option<&'a str>,
    pub error_message: Option<&'a str>,
    pub player_name: Option<&'a str>,
    pub player_version: Option<&'a str>,
    pub device_type: Option<&'a str>,
    pub os: Option<&'a str>,
    pub browser: Option<&'a str>,
}

/// The QoE stream's record of `event`: keyed by its session (a session's events stay in one
/// partition, in order), the value [`encode`]d.
pub fn record(event: &QoeEvent) -> vodsource_commands::ports::StreamRecord {
    vodsource_commands::ports::StreamRecord {
        key: event.sid.clone(),
        value: encode(event),
    }
}

/// Encodes an accepted event (strings are validated to far below 64 KiB; longer ones are cut
/// at a character boundary rather than corrupting the record).
pub fn encode(event: &QoeEvent) -> Vec<u8> {
    let mut out = Vec::with_capacity(160);
    out.push(VERSION);
    out.extend_from_slice(event.event_id.as_bytes());
    out.push(EVENT_TYPES.iter().position(|t| *t == event.event_type).unwrap_or(0) as u8);
    out.extend_from_slice(&event.ts.to_le_bytes());
    out.extend_from_slice(&event.received_at.to_le_bytes());
    let texts: [&Option<String>; 8] = [
        &event.viewer_id,
        &event.error_code,
        &event.error_message,
        &event.player_name,
        &event.player_version,
        &event.device_type,
        &event.os,
        &event.browser,
    ];
    let present = [
        event.position_ms.is_some(),
        event.duration_ms.is_some(),
        event.br.is_some(),
        event.bl.is_some(),
        event.mtp.is_some(),
        event.ot.is_some(),
        event.su.is_some(),
        event.bs.is_some(),
        event.startup_ms.is_some(),
        event.rebuffer_ms.is_some(),
    ]
    .into_iter()
    .chain(texts.iter().map(|s| s.is_some()));
    let bits = present
        .enumerate()
        .fold(0u32, |bits, (i, on)| if on { bits | 1 << i } else { bits });
    out.extend_from_slice(&bits.to_le_bytes());
    for v in [event.position_ms, event.duration_ms].into_iter().flatten() {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for v in [event.br, event.bl, event.mtp].into_iter().flatten() {
        out.extend_from_slice(&v.to_le_bytes());
    }
    if let Some(ot) = event.ot {
        out.push(OBJECT_TYPES.iter().position(|t| *t == ot).unwrap_or(0) as u8);
    }
    for v in [event.su, event.bs].into_iter().flatten() {
        out.push(u8::from(v));
    }
    for v in [event.startup_ms, event.rebuffer_ms].into_iter().flatten() {
        out.extend_from_slice(&v.to_le_bytes());
    }
    let all: Vec<&str> = [event.sid.as_str(), event.cid.as_str()]
        .into_iter()
        .chain(texts.into_iter().flatten().map(String::as_str))
        .map(clip)
        .collect();
    for text in &all {
        out.extend_from_slice(&(text.len() as u16).to_le_bytes());
    }
    for text in all {
        out.extend_from_slice(text.as_bytes());
    }
    out
}

/// At most `u16::MAX` bytes, cut at a character boundary.
fn clip(s: &str) -> &str {
    let mut end = s.len().min(u16::MAX as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.bytes.len() < n {
            return Err(WireError::Truncated);
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, WireError> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn bool(&mut self, field: &'static str) -> Result<bool, WireError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(WireError::Field(field)),
        }
    }
}

/// Decodes a binary record (not JSON: see [`decode_event`]).
///
/// # Errors
/// A truncated record, an unknown version, an impossible field.
pub fn decode(record: &[u8]) -> Result<WireEvent<'_>, WireError> {
    let mut r = Reader { bytes: record };
    let version = r.u8()?;
    if version != VERSION {
        return Err(WireError::Version(version));
    }
    let event_id = Uuid::from_bytes(r.array()?);
    let event_type = *EVENT_TYPES
        .get(r.u8()? as usize)
        .ok_or(WireError::Field("event_type"))?;
    let ts = r.i64()?;
    let received_at = r.i64()?;
    let bits = r.u32()?;
    let has = |i: u32| bits & (1 << i) != 0;
    let position_ms = if has(0) { Some(r.u64()?) } else { None };
    let duration_ms = if has(1) { Some(r.u64()?) } else { None };
    let br = if has(2) { Some(r.u32()?) } else { None };
    let bl = if has(3) { Some(r.u32()?) } else { None };
    let mtp = if has(4) { Some(r.u32()?) } else { None };
    let ot = if has(5) {
        Some(*OBJECT_TYPES.get(r.u8()? as usize).ok_or(WireError::Field("ot"))?)
    } else {
        None
    };
    let su = if has(6) { Some(r.bool("su")?) } else { None };
    let bs = if has(7) { Some(r.bool("bs")?) } else { None };
    let startup_ms = if has(8) { Some(r.u32()?) } else { None };
    let rebuffer_ms = if has(9) { Some(r.u32()?) } else { None };
    // Lengths of sid, cid and the present texts, then one UTF-8 block holding them all.
    let mut lengths = [0usize; 10];
    let mut count = 2;
    lengths[0] = r.u16()? as usize;
    lengths[1] = r.u16()? as usize;
    for i in 0..8 {
        if has(10 + i) {
            lengths[count] = r.u16()? as usize;
            count += 1;
        }
    }
    let block = std::str::from_utf8(r.bytes).map_err(|_| WireError::Field("text"))?;
    if lengths[..count].iter().sum::<usize>() != block.len() {
        return Err(WireError::Field("length"));
    }
    let mut at = 0;
    let mut next = |i: usize| -> Result<&str, WireError> {
        let text = block.get(at..at + lengths[i]).ok_or(WireError::Field("text"))?;
        at += lengths[i];
        Ok(text)
    };
    let sid = next(0)?;
    let cid = next(1)?;
    let mut strs: [Option<&str>; 8] = [None; 8];
    let mut k = 2;
    for (i, slot) in strs.iter_mut().enumerate() {
        if has(10 + i as u32) {
            *slot = Some(next(k)?);
            k += 1;
        }
    }
    let [viewer_id, error_code, error_message, player_name, player_version, device_type, os, browser] = strs;
    Ok(WireEvent {
        event_id,
        event_type,
        sid,
        cid,
        viewer_id,
        ts,
        received_at,
        position_ms,
        duration_ms,
        br,
        bl,
        mtp,
        ot,
        su,
        bs,
        startup_ms,
        rebuffer_ms,
        error_code,
        error_message,
        player_name,
        player_version,
        device_type,
        os,
        browser,
    })
}

/// Decodes a record of either format into an owned event.
///
/// # Errors
/// As [`decode`], or JSON that is not an event.
pub fn decode_event(record: &[u8]) -> Result<QoeEvent, WireError> {
    if record.first() == Some(&b'{') {
        return serde_json::from_slice(record).map_err(|e| WireError::Json(e.to_string()));
    }
    let e = decode(record)?;
    let own = |s: Option<&str>| s.map(str::to_owned);
    Ok(QoeEvent {
        event_id: e.event_id,
        event_type: e.event_type,
        sid: e.sid.to_owned(),
        cid: e.cid.to_owned(),
        viewer_id: own(e.viewer_id),
        ts: e.ts,
        received_at: e.received_at,
        position_ms: e.position_ms,
        duration_ms: e.duration_ms,
        br: e.br,
        bl: e.bl,
        mtp: e.mtp,
        ot: e.ot,
        su: e.su,
        bs: e.bs,
        startup_ms: e.startup_ms,
        rebuffer_ms: e.rebuffer_ms,
        error_code: own(e.error_code),
        error_message: own(e.error_message),
        player_name: own(e.player_name),
        player_version: own(e.player_version),
        device_type: own(e.device_type),
        os: own(e.os),
        browser: own(e.browser),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> QoeEvent {
        QoeEvent {
            event_id: Uuid::now_v7(),
            event_type: QoeEventType::RebufferEnd,
            sid: "s-1".into(),
            cid: "video-é".into(),
            viewer_id: Some("ann".into()),
            ts: 1_795_408_200_000,
            received_at: 1_795_408_200_040,
            position_ms: Some(65_000),
            duration_ms: Some(600_000),
            br: Some(2800),
            bl: Some(9000),
            mtp: Some(12_000),
            ot: Some(ObjectType::Muxed),
            su: Some(false),
            bs: Some(true),
            startup_ms: Some(900),
            rebuffer_ms: Some(1200),
            error_code: Some("E1".into()),
            error_message: Some("stall \"x\"".into()),
            player_name: Some("hls.js".into()),
            player_version: Some("1.6.2".into()),
            device_type: Some("tv".into()),
            os: Some("tvOS".into()),
            browser: Some("AVKit".into()),
        }
    }

    #[test]
    fn every_field_round_trips_and_absent_ones_cost_nothing() {
        let event = full();
        let bytes = encode(&event);
        assert_eq!(decode_event(&bytes), Ok(event.clone()));
        let bare = QoeEvent {
            received_at: event.received_at,
            ..QoeEvent::new(event.event_id, event.event_type, &event.sid, &event.cid, event.ts)
        };
        let small = encode(&bare);
        assert_eq!(small.len(), 1 + 16 + 1 + 16 + 4 + 2 * 2 + "s-1".len() + "video-é".len());
        assert_eq!(decode_event(&small), Ok(bare));
    }

    #[test]
    fn json_records_still_read() {
        let event = full();
        let json = serde_json::to_vec(&event).expect("json");
        assert_eq!(decode_event(&json), Ok(event));
        assert!(matches!(decode_event(b"{\"x\":1}"), Err(WireError::Json(_))));
    }

    #[test]
    fn damaged_records_are_refused_not_misread() {
        let bytes = encode(&full());
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(b'x');
        assert_eq!(decode(&longer), Err(WireError::Field("length")));
        let mut version = bytes.clone();
        version[0] = 9;
        assert_eq!(decode(&version), Err(WireError::Version(9)));
        let mut kind = bytes.clone();
        kind[17] = 200;
        assert_eq!(decode(&kind), Err(WireError::Field("event_type")));
        let mut utf8 = bytes.clone();
        let last = utf8.len() - 1;
        utf8[last] = 0xff;
        assert_eq!(decode(&utf8), Err(WireError::Field("text")));
        // "é" is two bytes: a length that splits it is refused, not sliced.
        let event = QoeEvent {
            cid: "é".into(),
            ..full()
        };
        let mut split = encode(&event);
        let lengths = 1 + 16 + 1 + 16 + 4 + 8 + 8 + 4 * 3 + 1 + 1 + 1 + 4 * 2;
        // sid one byte longer and cid one shorter: sid would end inside "é".
        split[lengths] += 1;
        split[lengths + 2] -= 1;
        assert_eq!(decode(&split), Err(WireError::Field("text")));
    }
}
