//! Reading and adjusting the fragment headers of fMP4 media segments: a chunk encoded on its
//! own starts its timeline and fragment count at zero, and is moved to its place in the whole
//! presentation by shifting each fragment's decode time (`tfdt`) and sequence number (`mfhd`).
//! Pure byte work on the boxes FFmpeg's muxer writes (ISO/IEC 14496-12).

/// What a segment's fragments say about where they sit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentTimes {
    /// The first fragment's base media decode time (`tfdt`), in the track's timescale.
    pub decode_time: u64,
    /// The first fragment's sequence number (`mfhd`).
    pub sequence: u32,
}

/// A box: its type and the byte range of its payload.
struct BoxAt {
    kind: [u8; 4],
    start: usize,
    payload: usize,
    end: usize,
}

/// The boxes laid end to end in `bytes[from..to]`.
fn boxes(bytes: &[u8], from: usize, to: usize) -> Result<Vec<BoxAt>, String> {
    let mut out = Vec::new();
    let mut at = from;
    while at < to {
        let header = bytes
            .get(at..at + 8)
            .ok_or_else(|| format!("a box header at byte {at} runs past the end"))?;
        let size32 = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        let kind = [header[4], header[5], header[6], header[7]];
        let (size, payload) = match size32 {
            0 => (to - at, at + 8),
            1 => {
                let large = bytes
                    .get(at + 8..at + 16)
                    .ok_or_else(|| format!("a large box header at byte {at} runs past the end"))?;
                let size = u64::from_be_bytes(large.try_into().map_err(|_| "a box size".to_owned())?);
                (
                    usize::try_from(size).map_err(|_| "a box too large".to_owned())?,
                    at + 16,
                )
            }
            n => (n as usize, at + 8),
        };
        let end = at
            .checked_add(size)
            .filter(|&end| end <= to && size >= payload - at)
            .ok_or_else(|| {
                format!(
                    "the {} box at byte {at} is {size} bytes, past the end",
                    String::from_utf8_lossy(&kind)
                )
            })?;
        out.push(BoxAt {
            kind,
            start: at,
            payload,
            end,
        });
        at = end;
    }
    Ok(out)
}

/// Visits every `moof`'s `mfhd` and every `tfdt` of its `traf`s.
fn visit(
    bytes: &mut [u8],
    mut on_mfhd: impl FnMut(&mut [u8]) -> Result<(), String>,
    mut on_tfdt: impl FnMut(&mut [u8]) -> Result<(), String>,
) -> Result<usize, String> {
    let mut fragments = 0;
    for moof in boxes(bytes, 0, bytes.len())?.into_iter().filter(|b| &b.kind == b"moof") {
        fragments += 1;
        for child in boxes(bytes, moof.payload, moof.end)? {
            match &child.kind {
                b"mfhd" => on_mfhd(&mut bytes[child.payload..child.end])?,
                b"traf" => {
                    for grandchild in boxes(bytes, child.payload, child.end)? {
                        if &grandchild.kind == b"tfdt" {
                            on_tfdt(&mut bytes[grandchild.payload..grandchild.end])?;
                        }
                    }
                }
                _ => {}
            }
        }
        let _ = moof.start;
    }
    Ok(fragments)
}

fn read_tfdt(payload: &[u8]) -> Result<u64, String> {
    match payload.first() {
        Some(1) if payload.len() >= 12 => Ok(u64::from_be_bytes(
            payload[4..12].try_into().map_err(|_| "tfdt".to_owned())?,
        )),
        Some(0) if payload.len() >= 8 => Ok(u64::from(u32::from_be_bytes(
            payload[4..8].try_into().map_err(|_| "tfdt".to_owned())?,
        ))),
        _ => Err("a tfdt box of unknown version or size".into()),
    }
}

fn write_tfdt(payload: &mut [u8], value: u64) -> Result<(), String> {
    match payload.first() {
        Some(1) if payload.len() >= 12 => {
            payload[4..12].copy_from_slice(&value.to_be_bytes());
            Ok(())
        }
        Some(0) if payload.len() >= 8 => {
            let value =
                u32::try_from(value).map_err(|_| format!("decode time {value} does not fit a version 0 tfdt"))?;
            payload[4..8].copy_from_slice(&value.to_be_bytes());
            Ok(())
        }
        _ => Err("a tfdt box of unknown version or size".into()),
    }
}

fn read_mfhd(payload: &[u8]) -> Result<u32, String> {
    payload
        .get(4..8)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)
        .ok_or_else(|| "an mfhd box too short".into())
}

/// Where the first fragment of `segment` sits; `None` when it holds no fragment.
///
/// # Errors
/// Boxes that do not parse.
pub fn fragment_times(segment: &[u8]) -> Result<Option<FragmentTimes>, String> {
    let mut copy = segment.to_vec();
    let mut decode_time = None;
    let mut sequence = None;
    visit(
        &mut copy,
        |mfhd| {
            sequence.get_or_insert(read_mfhd(mfhd)?);
            Ok(())
        },
        |tfdt| {
            decode_time.get_or_insert(read_tfdt(tfdt)?);
            Ok(())
        },
    )?;
    Ok(decode_time
        .zip(sequence)
        .map(|(decode_time, sequence)| FragmentTimes { decode_time, sequence }))
}

/// Moves every fragment of `segment` by `decode_delta` ticks and `sequence_delta` fragments.
/// Returns how many fragments it moved.
///
/// # Errors
/// Boxes that do not parse, or a time or number moved below zero or past its field.
pub fn shift(segment: &mut [u8], decode_delta: i64, sequence_delta: i64) -> Result<usize, String> {
    visit(
        segment,
        |mfhd| {
            let moved = i64::from(read_mfhd(mfhd)?) + sequence_delta;
            let moved = u32::try_from(moved).map_err(|_| format!("fragment number {moved} out of range"))?;
            mfhd[4..8].copy_from_slice(&moved.to_be_bytes());
            Ok(())
        },
        |tfdt| {
            let time = read_tfdt(tfdt)?;
            let moved = i128::from(time) + i128::from(decode_delta);
            let moved = u64::try_from(moved).map_err(|_| format!("decode time {moved} out of range"))?;
            write_tfdt(tfdt, moved)
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxed(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut out = u32::try_from(payload.len() + 8).expect("size").to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(payload);
        out
    }

    fn fragment(sequence: u32, tfdt_v1: Option<u64>, tfdt_v0: Option<u32>) -> Vec<u8> {
        let mfhd = boxed(b"mfhd", &[&[0u8; 4][..], &sequence.to_be_bytes()].concat());
        let tfhd = boxed(b"tfhd", &[0, 2, 0, 0, 0, 0, 0, 1]);
        let tfdt = match (tfdt_v1, tfdt_v0) {
            (Some(t), _) => boxed(b"tfdt", &[&[1u8, 0, 0, 0][..], &t.to_be_bytes()].concat()),
            (None, Some(t)) => boxed(b"tfdt", &[&[0u8, 0, 0, 0][..], &t.to_be_bytes()].concat()),
            (None, None) => Vec::new(),
        };
        let traf = boxed(b"traf", &[tfhd, tfdt].concat());
        let moof = boxed(b"moof", &[mfhd, traf].concat());
        [moof, boxed(b"mdat", &[7; 13])].concat()
    }

    #[test]
    fn every_fragment_of_a_segment_moves_by_the_same_time_and_count() {
        let mut segment = [
            boxed(b"styp", b"msdhcmfs"),
            fragment(1, Some(0), None),
            fragment(2, Some(512), None),
        ]
        .concat();
        let before = segment.clone();
        assert_eq!(
            fragment_times(&segment).expect("parses"),
            Some(FragmentTimes {
                decode_time: 0,
                sequence: 1
            })
        );
        assert_eq!(shift(&mut segment, 61_440, 40).expect("shifts"), 2);
        assert_eq!(
            fragment_times(&segment).expect("parses"),
            Some(FragmentTimes {
                decode_time: 61_440,
                sequence: 41
            })
        );
        // The second fragment moved too, and nothing else changed size or content.
        let second = segment.len() - fragment(2, Some(0), None).len();
        assert_eq!(
            fragment_times(&segment[second..]).expect("parses"),
            Some(FragmentTimes {
                decode_time: 61_952,
                sequence: 42
            })
        );
        assert_eq!(segment.len(), before.len());
        assert_eq!(shift(&mut segment, -61_440, -40).expect("back"), 2);
        assert_eq!(segment, before);
    }

    #[test]
    fn version_0_decode_times_move_and_refuse_to_overflow() {
        let mut segment = fragment(3, None, Some(90_000));
        shift(&mut segment, 10, 0).expect("fits");
        assert_eq!(
            fragment_times(&segment).expect("parses").map(|t| t.decode_time),
            Some(90_010)
        );
        let error = shift(&mut segment, i64::from(u32::MAX), 0).expect_err("does not fit 32 bits");
        assert!(error.contains("does not fit"), "{error}");
        let error = shift(&mut fragment(1, Some(5), None), -6, 0).expect_err("below zero");
        assert!(error.contains("out of range"), "{error}");
    }

    #[test]
    fn a_truncated_or_lying_box_is_an_error_not_a_panic() {
        let whole = fragment(1, Some(0), None);
        for cut in [3, 9, whole.len() - 1] {
            let mut truncated = whole[..cut].to_vec();
            assert!(shift(&mut truncated, 1, 1).is_err(), "cut at {cut}");
        }
        let mut lying = whole.clone();
        lying[0..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(fragment_times(&lying).is_err());
        assert_eq!(fragment_times(&boxed(b"mdat", &[0; 4])).expect("parses"), None);
    }
}
