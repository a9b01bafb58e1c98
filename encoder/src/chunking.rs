//! How a source is split for a chunked encode: runs of whole segments on the ladder's
//! keyframe grid, so that chunks join without re-encoding, and the audio as one unit of its
//! own (so its joins are gapless by construction). Pure arithmetic.

use vodsource_domain::{ChunkSpan, Video};

use crate::ladder::{Fps, Segmenter};

/// The chunks of a source `duration_ms` long at `fps`, cut every `chunk_seconds` (rounded to
/// whole segments of `segment_seconds`), the audio first when there is audio (it is quick, and
/// players need it from the start). `None` when the source is too short to be worth splitting
/// (under two chunks) or its length is unknown.
pub fn plan(
    duration_ms: u64,
    fps: Fps,
    segment_seconds: u32,
    chunk_seconds: u32,
    has_audio: bool,
) -> Option<Vec<ChunkSpan>> {
    if chunk_seconds == 0 || duration_ms == 0 {
        return None;
    }
    let segment_seconds = segment_seconds.max(1);
    let per_chunk = u64::from(chunk_seconds.div_ceil(segment_seconds).max(1));
    let segmenter = Segmenter::new(segment_seconds, fps);
    let frames = (duration_ms as f64 / 1000.0 * fps.as_f64()).round() as u64;
    // Cut where a whole chunk still follows: the last chunk is one to two chunks long, never a
    // sliver (the probe's duration is not exact to the frame).
    let mut cuts = Vec::new();
    let mut k = per_chunk;
    while segmenter.start_of(k + per_chunk) <= frames {
        cuts.push(segmenter.start_of(k));
        k += per_chunk;
    }
    if cuts.is_empty() {
        return None;
    }
    let mut chunks = Vec::with_capacity(cuts.len() + 2);
    if has_audio {
        chunks.push(ChunkSpan::Audio);
    }
    let mut from = 0;
    for cut in cuts {
        chunks.push(ChunkSpan::Frames { from, to: Some(cut) });
        from = cut;
    }
    chunks.push(ChunkSpan::Frames { from, to: None });
    Some(chunks)
}

/// How much of a split attempt's media is encoded, 0 to 100: the pictures of the runs written,
/// plus `fraction` (0 to 1) of run `mine`, the one this worker is encoding, over all pictures
/// (`total_frames`, the probe's). The audio is not counted: it takes seconds.
pub fn percent_done(video: &Video, mine: Option<(u32, f64)>, total_frames: u64) -> f64 {
    let total = total_frames.max(1) as f64;
    let frames = |span: &ChunkSpan| match span {
        ChunkSpan::Frames { from, to } => to.unwrap_or(total_frames).max(*from) - from,
        ChunkSpan::Audio => 0,
    };
    let done: f64 = video
        .chunks
        .iter()
        .enumerate()
        .map(|(i, chunk)| {
            let size = frames(&chunk.span) as f64;
            match mine {
                _ if chunk.output.is_some() => size,
                Some((index, fraction)) if index as usize == i => size * fraction.clamp(0.0, 1.0),
                _ => 0.0,
            }
        })
        .sum();
    (done * 100.0 / total).clamp(0.0, 100.0)
}

/// The segment number (1-based, as in `seg_00012.m4s`) a segment file's name carries.
pub fn segment_number(uri: &str) -> Option<u64> {
    uri.strip_prefix("seg_")?.strip_suffix(".m4s")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FPS30: Fps = Fps { num: 30, den: 1 };

    fn frames(chunks: &[ChunkSpan]) -> Vec<(u64, Option<u64>)> {
        chunks
            .iter()
            .filter_map(|c| match c {
                ChunkSpan::Frames { from, to } => Some((*from, *to)),
                ChunkSpan::Audio => None,
            })
            .collect()
    }

    #[test]
    fn a_ten_minute_source_is_cut_every_minute_on_segment_starts_with_the_audio_first() {
        let chunks = plan(600_000, FPS30, 4, 60, true).expect("split");
        assert_eq!(chunks[0], ChunkSpan::Audio);
        let runs = frames(&chunks);
        // 15 segments of 4 s = 1800 frames each; the last run goes to the end.
        assert_eq!(runs.len(), 10);
        assert_eq!(runs[0], (0, Some(1800)));
        assert_eq!(runs[1], (1800, Some(3600)));
        assert_eq!(runs[9], (9 * 1800, None));
        for pair in runs.windows(2) {
            assert_eq!(pair[0].1, Some(pair[1].0), "each run starts where the one before ended");
        }
        vodsource_domain::validate_chunk_plan(&chunks).expect("a plan the domain accepts");
    }

    #[test]
    fn cuts_fall_on_the_keyframe_grid_at_fractional_rates() {
        let fps = Fps { num: 30000, den: 1001 };
        let segmenter = Segmenter::new(4, fps);
        let chunks = plan(300_000, fps, 4, 30, false).expect("split");
        assert!(!chunks.contains(&ChunkSpan::Audio));
        for (from, _) in frames(&chunks) {
            assert!(segmenter.is_boundary(from), "frame {from} starts a segment");
        }
    }

    #[test]
    fn short_or_unknown_sources_and_a_zero_chunk_length_are_not_split() {
        assert_eq!(plan(100_000, FPS30, 4, 60, true), None, "under two chunks");
        assert_eq!(plan(0, FPS30, 4, 60, true), None, "unknown length");
        assert_eq!(plan(600_000, FPS30, 4, 0, true), None, "splitting off");
        let two = plan(128_000, FPS30, 4, 60, false).expect("exactly two chunks");
        assert_eq!(frames(&two), [(0, Some(1800)), (1800, None)]);
        // 62 s rounds up to 16 segments; the last run is 64 to 128 s long.
        let rounded = plan(200_000, FPS30, 4, 62, false).expect("split");
        assert_eq!(frames(&rounded), [(0, Some(1920)), (1920, Some(3840)), (3840, None)]);
    }

    #[test]
    fn progress_is_the_share_of_pictures_written_across_chunks() {
        use vodsource_domain::{Chunk, ChunkOutput, EncodingCost};
        let output = ChunkOutput {
            tracks: vec![],
            sprites: vec![],
            poster: None,
            cost: EncodingCost::default(),
        };
        let chunk = |span, written: bool| Chunk {
            span,
            claim: None,
            output: written.then(|| output.clone()),
        };
        let video = Video {
            chunks: vec![
                chunk(ChunkSpan::Audio, true),
                chunk(ChunkSpan::Frames { from: 0, to: Some(300) }, true),
                chunk(
                    ChunkSpan::Frames {
                        from: 300,
                        to: Some(600),
                    },
                    false,
                ),
                chunk(ChunkSpan::Frames { from: 600, to: None }, false),
            ],
            ..Video::default()
        };
        assert!((percent_done(&video, None, 1200) - 25.0).abs() < 1e-9);
        // Half of run 2 (300 pictures) adds 150 of 1200.
        assert!((percent_done(&video, Some((2, 0.5)), 1200) - 37.5).abs() < 1e-9);
        // The last run goes to the end of the source.
        assert!((percent_done(&video, Some((3, 1.0)), 1200) - 75.0).abs() < 1e-9);
    }

    #[test]
    fn segment_numbers_are_read_from_file_names() {
        assert_eq!(segment_number("seg_00012.m4s"), Some(12));
        assert_eq!(segment_number("init.mp4"), None);
        assert_eq!(segment_number("seg_x.m4s"), None);
    }
}
