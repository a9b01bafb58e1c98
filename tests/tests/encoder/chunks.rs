//! A source encoded in chunks (runs of frames from a seek, and the audio on its own) against
//! the same source encoded whole: the same segments, numbered and timed alike, with the same
//! keyframes, the same audio bytes, and the same picture quality.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use vodsource_encoder::ladder::LadderConfig;
use vodsource_encoder::manifest::parse_media_playlist;
use vodsource_encoder::media::fmp4::{fragment_times, FragmentTimes};
use vodsource_encoder::media::{probe, transcode, transcode_part, Job, Part, PartDone, Progress};
use vodsource_encoder::SourceLimits;
use vodsource_tests::TempDir;

use crate::helpers::{clip, video_packets};

/// 24 s of 854×480 at 30 fps with a tone; H.264 with B-frames and a 2.5 s GOP that does not
/// fall on the ladder's 4 s grid, so every chunk starts from a seek into the middle of a GOP.
fn source(dir: &Path) -> PathBuf {
    clip(
        dir,
        "src.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=854x480:rate=30",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=44100",
            "-t",
            "24",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-g",
            "75",
            "-c:a",
            "aac",
            "-shortest",
        ],
    )
}

fn run(source: &Path, out: &Path, part: Option<Part>) -> Option<PartDone> {
    let probed = probe(source).expect("probe");
    std::fs::create_dir_all(out).expect("out dir");
    let job = Job {
        source,
        probed: &probed,
        out_dir: out,
        config: &LadderConfig::default(),
        limits: &SourceLimits::default(),
        cancel: &AtomicBool::new(false),
        progress: &Progress::default(),
        lead: false,
    };
    match part {
        None => {
            transcode(&job).expect("the whole encode");
            None
        }
        Some(part) => Some(transcode_part(&job, part).expect("the chunk's encode")),
    }
}

/// `(duration, uri)` of each segment the playlist in `dir/name` lists.
fn listed(dir: &Path, name: &str) -> Vec<(f64, String)> {
    let text = std::fs::read_to_string(dir.join(name).join("index.m3u8")).expect("playlist");
    parse_media_playlist(&text).expect("parses").1
}

fn times(path: &Path) -> FragmentTimes {
    fragment_times(&std::fs::read(path).expect("segment"))
        .expect("parses")
        .expect("a fragment")
}

/// `init` and `segments` laid end to end: one fMP4 file FFmpeg reads like the player does.
fn joined(init: &Path, segments: &[PathBuf], to: &Path) -> PathBuf {
    let mut bytes = std::fs::read(init).expect("init");
    for segment in segments {
        bytes.extend(std::fs::read(segment).expect("segment"));
    }
    std::fs::write(to, bytes).expect("joined");
    to.to_owned()
}

/// PSNR (average, dB) of `encoded` against `source` scaled to `size`, both from their first
/// picture.
pub(crate) fn psnr(encoded: &Path, source: &Path, size: (u32, u32)) -> f64 {
    let filter = format!(
        "[0:v]setpts=PTS-STARTPTS[a];[1:v]scale={}:{}:flags=bicubic,setpts=PTS-STARTPTS[b];[a][b]psnr",
        size.0, size.1
    );
    let output = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-nostats", "-i"])
        .arg(encoded)
        .arg("-i")
        .arg(source)
        .args(["-lavfi", &filter, "-f", "null", "-"])
        .output()
        .expect("ffmpeg runs; install it with `scripts/services.sh start ffmpeg`");
    let log = String::from_utf8_lossy(&output.stderr);
    let average = log
        .split("average:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok());
    average.unwrap_or_else(|| panic!("no PSNR in ffmpeg's log:\n{log}"))
}

#[test]
fn a_source_encoded_in_chunks_equals_the_same_source_encoded_whole() {
    let dir = TempDir::new();
    let source = source(dir.path());
    let whole = dir.path().join("whole");
    run(&source, &whole, None);
    // Three runs of 8 s each (two segments of 120 frames at 30 fps; the first run's first is
    // cut in two, as a whole encode's), and the audio.
    let runs = [(0, Some(240)), (240, Some(480)), (480, None)];
    let parts: Vec<(PathBuf, PartDone)> = runs
        .iter()
        .enumerate()
        .map(|(i, &(from, to))| {
            let out = dir.path().join(format!("chunk{i}"));
            let done = run(&source, &out, Some(Part::Frames { from, to })).expect("done");
            (out, done)
        })
        .collect();
    let audio_dir = dir.path().join("audio-part");
    let audio = run(&source, &audio_dir, Some(Part::Audio)).expect("done");

    let rungs: Vec<String> = parts[0].1.rungs.iter().map(|r| r.name.clone()).collect();
    assert_eq!(rungs, ["480p", "360p"], "the ladder of a 480p source");
    for (i, rung) in parts[0].1.rungs.iter().enumerate() {
        let name = &rung.name;
        let expected = listed(&whole, name);
        assert_eq!(expected.len(), 7, "{name}: 24 s in 2 s, 2 s and 4 s segments");
        // The chunks' segments, in order: the same names and durations as the whole encode's.
        let mut got = Vec::new();
        let mut files = Vec::new();
        for (out, done) in &parts {
            let track = &done.tracks[i];
            assert_eq!(&track.name, name);
            for segment in &track.segments {
                got.push((segment.duration, segment.uri.clone()));
                files.push(out.join(name).join(&segment.uri));
            }
        }
        assert_eq!(got, expected, "{name}: segment names and durations");
        // Each fragment decodes where, and is numbered as, the whole encode's.
        for (file, (_, uri)) in files.iter().zip(&expected) {
            assert_eq!(
                times(file),
                times(&whole.join(name).join(uri)),
                "{name}/{uri}: tfdt and mfhd"
            );
        }
        // Played end to end, the chunks' track has the whole encode's timestamps and keyframes.
        let whole_files: Vec<PathBuf> = expected.iter().map(|(_, uri)| whole.join(name).join(uri)).collect();
        let one = joined(
            &whole.join(name).join("init.mp4"),
            &whole_files,
            &dir.path().join(format!("{name}-whole.mp4")),
        );
        let chunked = joined(
            &parts[0].0.join(name).join("init.mp4"),
            &files,
            &dir.path().join(format!("{name}-chunked.mp4")),
        );
        let (one_packets, chunked_packets) = (video_packets(&one), video_packets(&chunked));
        assert_eq!(one_packets.len(), 720, "{name}: every picture");
        assert_eq!(chunked_packets, one_packets, "{name}: timestamps and keyframes");
        let keyframes: Vec<f64> = chunked_packets.iter().filter(|p| p.1).map(|p| p.0).collect();
        assert_eq!(keyframes.len(), 7, "{name}: one keyframe per segment: {keyframes:?}");
        // The same quality: chunks restart the rate control, and that must not show.
        let (a, b) = (
            psnr(&one, &source, (rung.width, rung.height)),
            psnr(&chunked, &source, (rung.width, rung.height)),
        );
        assert!(
            (a - b).abs() <= 0.05,
            "{name}: PSNR {a:.3} dB whole, {b:.3} dB in chunks"
        );
        eprintln!("{name}: PSNR {a:.3} dB whole, {b:.3} dB in chunks");
        // The init segment stored (the first run's) is the whole encode's.
        assert_eq!(
            std::fs::read(parts[0].0.join(name).join("init.mp4")).expect("init"),
            std::fs::read(whole.join(name).join("init.mp4")).expect("init"),
            "{name}: init segment"
        );
    }
    // The audio, encoded in one piece, is the whole encode's, byte for byte: nothing to join.
    let track = &audio.tracks[0];
    assert_eq!(track.name, "audio");
    let expected = listed(&whole, "audio");
    let got: Vec<(f64, String)> = track.segments.iter().map(|s| (s.duration, s.uri.clone())).collect();
    assert_eq!(got, expected);
    for (_, uri) in &expected {
        assert_eq!(
            std::fs::read(audio_dir.join("audio").join(uri)).expect("segment"),
            std::fs::read(whole.join("audio").join(uri)).expect("segment"),
            "audio/{uri}"
        );
    }
    // Thumbnails: each chunk holds the tiles of its own pictures, numbered over the source.
    let tiles: Vec<(u64, usize)> = parts
        .iter()
        .flat_map(|(_, done)| done.sprites.iter().map(|(_, first, count)| (*first, *count)))
        .collect();
    assert_eq!(tiles, [(0, 4), (4, 4), (8, 4)], "a tile every 2 s");
    assert_eq!(parts[0].1.poster.as_deref(), Some("poster.jpg"));
    assert!(parts[1].1.poster.is_none() && parts[2].1.poster.is_none());
}
