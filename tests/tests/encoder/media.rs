//! The transcode against real FFmpeg libraries, its outputs read back with ffprobe.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use vodsource_encoder::ladder::{LadderConfig, RungSpec};
use vodsource_encoder::manifest::parse_media_playlist;
use vodsource_encoder::media::{probe, transcode, Job, MediaError, MediaErrorKind, Packaged, Progress};
use vodsource_encoder::SourceLimits;
use vodsource_tests::TempDir;

use crate::helpers::{clip, ffprobe, pattern, pattern_with, rotate_90, video_packets};

fn encode(source: &Path, out: &Path) -> Result<Packaged, MediaError> {
    encode_with(source, out, false)
}

fn encode_with(source: &Path, out: &Path, lead: bool) -> Result<Packaged, MediaError> {
    encode_watched(source, out, lead, &Progress::default())
}

fn encode_watched(source: &Path, out: &Path, lead: bool, progress: &Progress) -> Result<Packaged, MediaError> {
    encode_configured(source, out, lead, progress, &LadderConfig::default())
}

fn encode_configured(
    source: &Path,
    out: &Path,
    lead: bool,
    progress: &Progress,
    config: &LadderConfig,
) -> Result<Packaged, MediaError> {
    let probed = probe(source)?;
    std::fs::create_dir_all(out).expect("out dir");
    transcode(&Job {
        source,
        probed: &probed,
        out_dir: out,
        config,
        limits: &SourceLimits::default(),
        cancel: &AtomicBool::new(false),
        progress,
        lead,
    })
}

fn attribute<'a>(line: &'a str, name: &str) -> &'a str {
    let start = line
        .find(&format!("{name}="))
        .map(|i| i + name.len() + 1)
        .unwrap_or_else(|| panic!("{name} in {line}"));
    let rest = &line[start..];
    match rest.strip_prefix('"') {
        Some(quoted) => &quoted[..quoted.find('"').expect("closing quote")],
        None => rest.split(',').next().unwrap_or_default(),
    }
}

#[test]
fn a_720p_source_becomes_an_aligned_ladder_that_ffprobe_reads() {
    let dir = TempDir::new();
    let source = pattern(dir.path(), "src.mp4", "1280x720", 30, 9);
    let out = dir.path().join("out");
    // Told of every segment the moment a rung closes it (the publisher stores it then).
    let progress = Progress::default();
    let closed = Arc::new(AtomicUsize::new(0));
    let count = closed.clone();
    progress.on_segment(move || {
        count.fetch_add(1, Ordering::Relaxed);
    });
    let packaged = encode_watched(&source, &out, false, &progress).expect("the ladder is made");
    let segments: usize = packaged.rungs.iter().map(|(_, track)| track.segments.len()).sum();
    assert_eq!(
        closed.load(Ordering::Relaxed),
        segments,
        "one call per segment of each rung"
    );
    for (rung, _) in &packaged.rungs {
        let out = progress.output(&rung.name).expect("frames out");
        assert_eq!(out.frames, 270, "{}", rung.name);
    }

    // Rungs: no 1080p (never upscaled); sizes, codec, profile, level, bitrate.
    let names: Vec<&str> = packaged.rungs.iter().map(|(r, _)| r.name.as_str()).collect();
    assert_eq!(names, ["720p", "480p", "360p"]);
    let mut keyframes: Vec<Vec<f64>> = Vec::new();
    for (rung, track) in &packaged.rungs {
        let playlist = out.join(&rung.name).join("index.m3u8");
        let streams = ffprobe(&playlist, &["-show_streams", "-show_format"]);
        let video = &streams["streams"].as_array().expect("streams")[0];
        assert_eq!(video["codec_name"], "h264");
        assert_eq!(video["profile"], "High");
        assert_eq!(
            (video["width"].as_u64(), video["height"].as_u64()),
            (Some(u64::from(rung.width)), Some(u64::from(rung.height)))
        );
        assert_eq!(
            video["level"].as_u64(),
            Some(u64::from(rung.level_idc)),
            "{} level",
            rung.name
        );
        assert_eq!(video["r_frame_rate"], "30/1");
        let measured = track.average_bandwidth() as f64;
        let target = rung.bitrate_bps as f64;
        assert!(
            (measured - target).abs() / target < 0.25,
            "{}: {measured} bit/s against a target of {target}",
            rung.name
        );
        assert!(
            track.peak_bandwidth() as f64 <= rung.maxrate_bps as f64 * 1.35,
            "{} peak",
            rung.name
        );

        // A short first segment (2 s: the first 4 s cut in two), then 4 s (the last shorter),
        // listed by the media playlist, all on disk.
        let (init, segments) =
            parse_media_playlist(&std::fs::read_to_string(&playlist).expect("playlist")).expect("parses");
        assert!(out.join(&rung.name).join(init).is_file());
        let durations: Vec<f64> = segments.iter().map(|s| s.0).collect();
        assert_eq!(durations.len(), 4, "{durations:?}");
        assert!(
            (durations[0] - 2.0).abs() < 0.001 && (durations[1] - 2.0).abs() < 0.001,
            "{durations:?}"
        );
        assert!((durations[2] - 4.0).abs() < 0.001, "{durations:?}");
        assert!((durations[3] - 1.0).abs() < 0.05, "{durations:?}");

        let packets = video_packets(&playlist);
        assert_eq!(packets.len(), 270, "every frame of 9 s at 30 fps");
        keyframes.push(packets.iter().filter(|p| p.1).map(|p| p.0).collect());
    }
    // IDRs exactly at the segment starts (0, 2, 4, 8 s), the same on every rung: players
    // switch cleanly.
    let first = &keyframes[0];
    assert_eq!(first.len(), 4, "{first:?}");
    for (pts, at) in first.iter().zip([0.0, 2.0, 4.0, 8.0]) {
        assert!((pts - first[0] - at).abs() < 0.001, "{first:?}");
    }
    assert!(keyframes.iter().all(|k| k == first), "{keyframes:?}");

    // The master playlist: one variant per rung with measured bandwidths and full attributes.
    let master = std::fs::read_to_string(out.join("master.m3u8")).expect("master");
    let lines: Vec<&str> = master.lines().collect();
    assert_eq!(lines[0], "#EXTM3U");
    assert!(master.contains("#EXT-X-INDEPENDENT-SEGMENTS"));
    let media = lines
        .iter()
        .find(|l| l.starts_with("#EXT-X-MEDIA:"))
        .expect("audio rendition");
    assert_eq!(attribute(media, "TYPE"), "AUDIO");
    assert!(out.join(attribute(media, "URI")).is_file());
    let variants: Vec<(&str, &str)> = lines
        .windows(2)
        .filter(|w| w[0].starts_with("#EXT-X-STREAM-INF:"))
        .map(|w| (w[0], w[1]))
        .collect();
    assert_eq!(variants.len(), 3);
    for ((line, uri), (rung, _)) in variants.iter().zip(&packaged.rungs) {
        let peak: u64 = attribute(line, "BANDWIDTH").parse().expect("BANDWIDTH");
        let average: u64 = attribute(line, "AVERAGE-BANDWIDTH").parse().expect("AVERAGE-BANDWIDTH");
        assert!(peak >= average && average > rung.bitrate_bps / 2, "{line}");
        assert_eq!(attribute(line, "RESOLUTION"), format!("{}x{}", rung.width, rung.height));
        assert_eq!(attribute(line, "CODECS"), format!("{},mp4a.40.2", rung.video_codecs()));
        assert_eq!(attribute(line, "FRAME-RATE"), "30.000");
        assert_eq!(attribute(line, "AUDIO"), "audio");
        assert!(out.join(uri).is_file(), "{uri}");
    }
    // The whole ladder through the HLS demuxer: three video rungs and the audio.
    let streams = ffprobe(&out.join("master.m3u8"), &["-show_streams"]);
    let codecs: Vec<&str> = streams["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .filter_map(|s| s["codec_name"].as_str())
        .collect();
    assert_eq!(codecs.iter().filter(|c| **c == "h264").count(), 3, "{codecs:?}");
    assert!(codecs.contains(&"aac"));

    // The DASH MPD over the same segments parses, with every representation.
    let mpd = ffprobe(&out.join("manifest.mpd"), &["-show_streams", "-show_format"]);
    let streams = mpd["streams"].as_array().expect("streams");
    let mut sizes: Vec<(u64, u64)> = streams
        .iter()
        .filter(|s| s["codec_type"] == "video")
        .map(|s| (s["width"].as_u64().unwrap_or(0), s["height"].as_u64().unwrap_or(0)))
        .collect();
    sizes.sort_unstable();
    assert_eq!(sizes, [(640, 360), (854, 480), (1280, 720)]);
    assert!(streams.iter().any(|s| s["codec_name"] == "aac"));
    let duration: f64 = mpd["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .expect("duration");
    assert!((duration - 9.0).abs() < 0.1, "{duration}");

    // Audio: AAC-LC stereo 48 kHz.
    let audio = ffprobe(&out.join("audio/index.m3u8"), &["-show_streams"]);
    let audio = &audio["streams"][0];
    assert_eq!(
        (
            audio["codec_name"].as_str(),
            audio["profile"].as_str(),
            audio["channels"].as_u64(),
            audio["sample_rate"].as_str()
        ),
        (Some("aac"), Some("LC"), Some(2), Some("48000"))
    );

    // Poster and sprite are JPEGs; the WebVTT points into the sprite.
    let poster = ffprobe(&out.join("poster.jpg"), &["-show_streams"]);
    assert_eq!(poster["streams"][0]["codec_name"], "mjpeg");
    assert_eq!(poster["streams"][0]["width"], 1280);
    let vtt = std::fs::read_to_string(out.join("thumbs/thumbnails.vtt")).expect("vtt");
    assert!(
        vtt.starts_with("WEBVTT\n\n00:00:00.000 --> 00:00:02.000\nsprite_001.jpg#xywh=0,0,160,90\n"),
        "{vtt}"
    );
    assert_eq!(vtt.matches("-->").count(), 5);
    let sprite = ffprobe(&out.join("thumbs/sprite_001.jpg"), &["-show_streams"]);
    assert_eq!(
        (
            sprite["streams"][0]["width"].as_u64(),
            sprite["streams"][0]["height"].as_u64()
        ),
        (Some(800), Some(90))
    );
    assert_eq!(packaged.duration_ms, 9000);
    assert!(packaged.files.contains(&"manifest.mpd".to_owned()));
}

#[test]
fn with_a_lead_on_the_one_decode_or_on_its_own_the_low_rungs_make_the_same_ladder() {
    let dir = TempDir::new();
    let source = pattern(dir.path(), "src.mp4", "1280x720", 30, 9);
    let chained = dir.path().join("chained");
    let one = encode_with(&source, &chained, false).expect("one decode");
    // 480p and 360p (the default lead: short side ≤ 480) ahead of 720p: on the one decode
    // (9 s of 720p fit in the default buffer), or from a decode of their own with the audio
    // from a third.
    for (buffer, decodes) in [(1024, None), (0, Some(0))] {
        let led = dir.path().join(format!("led-{buffer}"));
        let config = LadderConfig {
            lead_buffer_mib: Some(buffer),
            ..LadderConfig::default()
        };
        let three = encode_configured(&source, &led, true, &Progress::default(), &config).expect("led");
        assert_eq!(three.second_decode_from, decodes, "buffer {buffer} MiB");
        the_same_ladder(&source, (&chained, &one), (&led, &three));
    }
}

#[test]
fn a_lead_on_the_one_decode_scales_through_the_larger_rungs_sizes_and_every_rung_is_the_whole_ladders_to_the_byte() {
    let dir = TempDir::new();
    let source = pattern(dir.path(), "src.mp4", "640x360", 30, 6);
    // 144p ahead of 360p and 240p: the lead's pictures are scaled 360p → 240p → 144p, as the
    // whole ladder's chain scales them, and the 240p rung takes the 240p the lead's were made
    // from. One x264 thread per rung: with more, x264 is not repeatable to the byte.
    let config = LadderConfig {
        rungs: small_rungs(),
        lead_max_height: 144,
        lead_buffer_mib: Some(1024),
        x264_threads: Some(1),
        ..LadderConfig::default()
    };
    let (whole_dir, led_dir) = (dir.path().join("whole"), dir.path().join("led"));
    let whole = encode_configured(&source, &whole_dir, false, &Progress::default(), &config).expect("whole");
    let led = encode_configured(&source, &led_dir, true, &Progress::default(), &config).expect("led");
    assert_eq!(
        (led.second_decode_from, led.spilled),
        (None, None),
        "the one decode throughout"
    );
    assert_eq!(led.files, whole.files);
    for file in &whole.files {
        let (a, b) = (
            std::fs::read(whole_dir.join(file)).expect("reads"),
            std::fs::read(led_dir.join(file)).expect("reads"),
        );
        assert!(a == b, "{file} differs with a lead");
    }
}

/// 360p, 240p and 144p: a ladder of three for a 360p source.
fn small_rungs() -> Vec<RungSpec> {
    [("360p", 360, 800), ("240p", 240, 400), ("144p", 144, 200)]
        .map(|(name, height, bitrate_kbps)| RungSpec {
            name: name.into(),
            height,
            bitrate_kbps,
        })
        .to_vec()
}

/// `three` (in `led`), encoded with a lead, is `one` (in `chained`) but for the lead's
/// rungs' scaling: the same rungs, segments, keyframes and audio, and no worse a picture.
fn the_same_ladder(source: &Path, (chained, one): (&Path, &Packaged), (led, three): (&Path, &Packaged)) {
    let names = |p: &Packaged| p.rungs.iter().map(|(r, _)| r.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(three), ["720p", "480p", "360p"]);
    assert_eq!(names(three), names(one));
    let mut keyframes = Vec::new();
    for ((rung, track), (_, alone)) in three.rungs.iter().zip(&one.rungs) {
        let durations =
            |t: &vodsource_encoder::manifest::Track| t.segments.iter().map(|s| s.duration).collect::<Vec<_>>();
        assert_eq!(durations(track), durations(alone), "{}", rung.name);
        let playlist = led.join(&rung.name).join("index.m3u8");
        let packets = video_packets(&playlist);
        assert_eq!(packets.len(), 270, "{}: every frame of 9 s at 30 fps", rung.name);
        keyframes.push(packets.iter().filter(|p| p.1).map(|p| p.0).collect::<Vec<f64>>());
        // Scaled from the source rather than from the next larger rung: no worse.
        let size = (rung.width, rung.height);
        let (from_lead, from_chain) = (
            crate::chunks::psnr(&playlist, source, size),
            crate::chunks::psnr(&chained.join(&rung.name).join("index.m3u8"), source, size),
        );
        assert!(
            from_lead > from_chain - 0.3,
            "{}: {from_lead:.2} dB against {from_chain:.2} dB",
            rung.name
        );
    }
    // Keyframes on the same pictures in every rung, whichever decode fed it.
    assert_eq!(keyframes[0].len(), 4, "{keyframes:?}");
    assert!(keyframes.iter().all(|k| k == &keyframes[0]), "{keyframes:?}");
    let audio = three.audio.as_ref().expect("the audio track");
    let alone = one.audio.as_ref().expect("the audio track");
    assert_eq!(audio.segments.len(), alone.segments.len());
    assert!((audio.duration() - 9.0).abs() < 0.1, "{}", audio.duration());
    assert_eq!(three.duration_ms, 9000);
    assert!(three.poster.is_some() && three.thumbnails.is_some());
    assert!(led.join("master.m3u8").is_file() && led.join("manifest.mpd").is_file());
}

#[test]
fn a_lead_that_would_fall_behind_on_the_one_decode_spills_the_larger_rungs_pictures_or_decodes_again_and_nothing_changes(
) {
    let dir = TempDir::new();
    // A keyframe every second: the larger rungs' own decode seeks to one mid-source.
    let source = pattern_with(dir.path(), "src.mp4", ("1280x720", 30, 9), &["-g", "30"]);
    let shared = dir.path().join("shared");
    // One x264 thread per rung: with more, x264 is not repeatable to the byte (two runs of
    // one encode differ), and the comparisons below would prove nothing.
    let alike = LadderConfig {
        x264_threads: Some(1),
        ..LadderConfig::default()
    };
    let one =
        encode_configured(&source, &shared, true, &Progress::default(), &alike).expect("the lead on the one decode");
    assert_eq!((one.second_decode_from, one.spilled), (None, None));
    // A buffer of 60 pictures of 720p (2 s): when the larger rungs' queue is first full the
    // lead has been handed 2–6 s, short of the 6 s (a 4 s segment and the slack) beyond a
    // viewer who started then. The pictures past it go to disk (the default spill); with
    // no spill the larger rungs decode the source again from there; with a spill of 8 MiB
    // (6 pictures of 720p) they do both, the decode from where the spill ran out.
    for spill_mib in [16384, 0, 8] {
        let out = dir.path().join(format!("spill-{spill_mib}"));
        let short = LadderConfig {
            lead_buffer_mib: Some(80),
            lead_spill_mib: spill_mib,
            ..alike.clone()
        };
        let two = encode_configured(&source, &out, true, &Progress::default(), &short).expect("encodes");
        let left_at = match (spill_mib, two.spilled, two.second_decode_from) {
            (16384, Some(spilled), None) => {
                assert!(
                    spilled.pictures > 0 && spilled.peak_bytes >= 1280 * 720 * 3 / 2,
                    "{spilled:?}"
                );
                spilled.from
            }
            (0, None, Some(from)) => from,
            (8, Some(spilled), Some(from)) => {
                assert!(spilled.peak_bytes <= 8 << 20, "{spilled:?}");
                assert!(
                    spilled.from < from,
                    "the decode begins after the spill: {spilled:?}, {from}"
                );
                spilled.from
            }
            (_, spilled, from) => panic!("a spill of {spill_mib} MiB: {spilled:?}, second decode from {from:?}"),
        };
        assert!((60..180).contains(&left_at), "{spill_mib} MiB: {left_at}");
        // The pictures read back from disk, and the larger rungs' own decode sought into the
        // source, are exactly those the one decode would have handed on: every file is the
        // same, byte for byte, and no spill file is left.
        assert_eq!(two.files, one.files);
        for file in &one.files {
            if file.ends_with(".m4s") || file.ends_with(".mp4") || file.ends_with(".m3u8") {
                let (a, b) = (
                    std::fs::read(shared.join(file)).expect("reads"),
                    std::fs::read(out.join(file)).expect("reads"),
                );
                assert!(
                    a == b,
                    "{file} differs (a spill of {spill_mib} MiB from picture {left_at})"
                );
            }
        }
    }
}

#[test]
fn with_a_lead_the_larger_rungs_encode_at_the_lowest_priority_and_the_lead_at_its_own() {
    let dir = TempDir::new();
    let source = pattern(dir.path(), "src.mp4", "1280x720", 30, 6);
    let out = dir.path().join("led");
    // The nice value of every rung thread of this process, sampled while the encode runs
    // (each rung thread is named after its rung; the x264 threads it starts take the name).
    let done = AtomicBool::new(false);
    let mut seen: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
    std::thread::scope(|scope| {
        let encode = scope.spawn(|| {
            let packaged = encode_with(&source, &out, true);
            done.store(true, Ordering::Relaxed);
            packaged
        });
        while !done.load(Ordering::Relaxed) {
            for (name, nice) in rung_threads() {
                seen.entry(name).or_default().insert(nice);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        encode.join().expect("joins").expect("encodes");
    });
    // Other tests' encodes run beside this one at their own priority: what must hold is that
    // the 720p rung was seen at the lowest, and the lead's never.
    assert!(seen.get("rung 720p").is_some_and(|n| n.contains(&19)), "{seen:?}");
    for lead in ["rung 480p", "rung 360p"] {
        let nice = seen
            .get(lead)
            .unwrap_or_else(|| panic!("no {lead} thread seen: {seen:?}"));
        assert!(!nice.contains(&19), "{lead}: {seen:?}");
    }
}

#[test]
fn the_leads_rungs_encode_with_the_lead_preset_and_the_larger_rungs_with_the_ladders_on_either_path() {
    let dir = TempDir::new();
    let source = pattern(dir.path(), "src.mp4", "640x360", 30, 3);
    let config = LadderConfig {
        rungs: small_rungs(),
        preset: "veryfast".into(),
        lead_preset: Some("ultrafast".into()),
        lead_max_height: 240,
        ..LadderConfig::default()
    };
    for lead in [false, true] {
        let out = dir.path().join(format!("lead-{lead}"));
        let packaged = encode_configured(&source, &out, lead, &Progress::default(), &config).expect("encodes");
        // x264 writes the settings it encoded with into the first picture's SEI: `subme=0` and
        // `cabac=0` are ultrafast's, `subme=2` and `cabac=1` veryfast's.
        let settings = |name: &str| {
            let bytes: Vec<u8> = packaged
                .files
                .iter()
                .filter(|file| file.starts_with(&format!("{name}/")))
                .flat_map(|file| std::fs::read(out.join(file)).expect("reads"))
                .collect();
            let text = String::from_utf8_lossy(&bytes);
            let at = text
                .find("options: ")
                .unwrap_or_else(|| panic!("{name}: no x264 settings in its files"));
            let options = &text[at..];
            let value = |key: &str| {
                let start = options
                    .find(&format!(" {key}="))
                    .unwrap_or_else(|| panic!("{key} in {name}"))
                    + key.len()
                    + 2;
                options[start..].split(' ').next().unwrap_or_default().to_owned()
            };
            (value("cabac"), value("subme"))
        };
        let fast = ("0".to_owned(), "0".to_owned());
        let veryfast = ("1".to_owned(), "2".to_owned());
        assert_eq!(settings("360p"), veryfast, "lead {lead}");
        assert_eq!(settings("240p"), fast, "lead {lead}");
        assert_eq!(settings("144p"), fast, "lead {lead}");
    }
}

/// `(name, nice value)` of each thread of this process named `rung …`.
fn rung_threads() -> Vec<(String, i32)> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .filter_map(|task| {
            let stat = std::fs::read_to_string(task.ok()?.path().join("stat")).ok()?;
            // `pid (comm) state …`: the nice value is the 19th field, the 17th after the name.
            let (head, rest) = stat.rsplit_once(')')?;
            let name = head.split_once('(')?.1;
            let nice = rest.split_whitespace().nth(16)?.parse().ok()?;
            name.starts_with("rung ").then(|| (name.to_owned(), nice))
        })
        .collect()
}

#[test]
fn a_rotated_phone_video_is_turned_upright() {
    let dir = TempDir::new();
    let source = clip(
        dir.path(),
        "phone.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=30",
            "-t",
            "2",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
        ],
    );
    rotate_90(&source);
    let probed = probe(&source).expect("probes");
    assert_eq!(probed.probe.rotation, 90);
    assert_eq!((probed.display_width, probed.display_height), (360, 640));
    let out = dir.path().join("out");
    let packaged = encode(&source, &out).expect("encodes");
    let (rung, _) = &packaged.rungs[0];
    assert_eq!((rung.name.as_str(), rung.width, rung.height), ("360p", 360, 640));
    let streams = ffprobe(&out.join("360p/index.m3u8"), &["-show_streams"]);
    let video = &streams["streams"][0];
    assert_eq!(
        (video["width"].as_u64(), video["height"].as_u64()),
        (Some(360), Some(640))
    );
    assert!(
        video["side_data_list"].is_null(),
        "no rotation left for the player: {video}"
    );
}

#[test]
fn variable_frame_rate_becomes_a_constant_rate() {
    let dir = TempDir::new();
    let source = clip(
        dir.path(),
        "vfr.mkv",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=30",
            "-t",
            "6",
            "-vf",
            "select='not(eq(mod(n\\,5)\\,0))*not(eq(mod(n\\,7)\\,0))'",
            "-fps_mode",
            "vfr",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
        ],
    );
    let probed = probe(&source).expect("probes");
    assert!(probed.probe.variable_frame_rate, "{:?}", probed.probe);
    let out = dir.path().join("out");
    let packaged = encode(&source, &out).expect("encodes");
    let playlist = out.join(format!("{}/index.m3u8", packaged.rungs[0].0.name));
    let packets = video_packets(&playlist);
    let steps: Vec<f64> = packets.windows(2).map(|w| w[1].0 - w[0].0).collect();
    let first = steps[0];
    assert!(
        steps.iter().all(|s| (s - first).abs() < 0.002),
        "constant spacing: {steps:?}"
    );
    assert!(
        (packets.len() as f64 * first - 6.0).abs() < 0.3,
        "{} frames at {first}",
        packets.len()
    );
}

#[test]
fn a_4k_60fps_source_gets_the_full_ladder_at_60fps() {
    let dir = TempDir::new();
    let source = pattern(dir.path(), "uhd.mp4", "3840x2160", 60, 1);
    let out = dir.path().join("out");
    let packaged = encode(&source, &out).expect("encodes");
    let sizes: Vec<(u32, u32)> = packaged.rungs.iter().map(|(r, _)| (r.width, r.height)).collect();
    assert_eq!(sizes, [(1920, 1080), (1280, 720), (854, 480), (640, 360)]);
    let streams = ffprobe(&out.join("1080p/index.m3u8"), &["-show_streams"]);
    assert_eq!(streams["streams"][0]["r_frame_rate"], "60/1");
    assert_eq!(streams["streams"][0]["level"], 42);
    assert_eq!(video_packets(&out.join("360p/index.m3u8")).len(), 60);
}

#[test]
fn a_file_whose_name_and_type_lie_is_read_by_its_content() {
    let dir = TempDir::new();
    // Matroska with MPEG-4 Part 2 video and MP3-less PCM audio, named .mp4.
    let source = clip(
        dir.path(),
        "not-really.mkv",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=25",
            "-f",
            "lavfi",
            "-i",
            "sine",
            "-t",
            "2",
            "-c:v",
            "mpeg4",
            "-c:a",
            "pcm_s16le",
        ],
    );
    let named = dir.path().join("upload.mp4");
    std::fs::rename(&source, &named).expect("rename");
    let probed = probe(&named).expect("probes by content");
    assert_eq!(probed.probe.video_codec.as_deref(), Some("mpeg4"));
    assert_eq!(probed.probe.audio_codec.as_deref(), Some("pcm_s16le"));
    let packaged = encode(&named, &dir.path().join("out")).expect("encodes");
    assert_eq!(packaged.rungs.len(), 1);
    assert!(packaged.audio.is_some());
}

fn refused(result: Result<Packaged, MediaError>, expected: &str) {
    match result {
        Ok(_) => panic!("expected a failure mentioning {expected:?}"),
        Err(error) => {
            assert_eq!(error.kind, MediaErrorKind::Source, "{error}");
            assert!(!error.retryable());
            assert!(
                error.message.contains(expected),
                "{:?} does not mention {expected:?}",
                error.message
            );
        }
    }
}

#[test]
fn bad_sources_end_in_a_failure_whose_reason_a_person_understands() {
    let dir = TempDir::new();
    let path = |name: &str| dir.path().join(name);
    let out = dir.path().join("out");

    std::fs::write(path("empty.mp4"), b"").expect("write");
    refused(encode(&path("empty.mp4"), &out), "empty");

    std::fs::write(path("notes.mp4"), "these are meeting notes, not a video\n".repeat(100)).expect("write");
    refused(encode(&path("notes.mp4"), &out), "not a media file");

    // moov at the end, cut off: the index is gone.
    let whole = pattern(dir.path(), "whole.mp4", "640x360", 30, 4);
    let bytes = std::fs::read(&whole).expect("read");
    std::fs::write(path("no-moov.mp4"), &bytes[..bytes.len() / 2]).expect("write");
    refused(encode(&path("no-moov.mp4"), &out), "moov");

    // moov first, media cut: decodes a third of what it declares.
    let faststart = clip(
        dir.path(),
        "faststart.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=30",
            "-t",
            "9",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-movflags",
            "+faststart",
        ],
    );
    let bytes = std::fs::read(&faststart).expect("read");
    std::fs::write(path("cut.mp4"), &bytes[..bytes.len() / 3]).expect("write");
    refused(encode(&path("cut.mp4"), &dir.path().join("out-cut")), "truncated");

    let audio_only = clip(
        dir.path(),
        "audio.m4a",
        &["-f", "lavfi", "-i", "sine", "-t", "2", "-c:a", "aac"],
    );
    refused(encode(&audio_only, &out), "only audio");

    // A playlist naming a local file: FFmpeg would read /etc/passwd into the "video".
    std::fs::write(
        path("playlist.mp4"),
        "#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:10.0,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n",
    )
    .expect("write");
    refused(encode(&path("playlist.mp4"), &out), "not a media file");
    // A concat list naming another file beside it (relative, so FFmpeg's own `safe` check
    // passes): without the container list it would encode whole.mp4.
    std::fs::write(path("list.mp4"), "ffconcat version 1.0\nfile 'whole.mp4'\n").expect("write");
    refused(encode(&path("list.mp4"), &out), "not a media file");

    let tiny = clip(
        dir.path(),
        "tiny.mkv",
        &["-f", "lavfi", "-i", "color=size=2x2:rate=10", "-t", "1", "-c:v", "ffv1"],
    );
    refused(encode(&tiny, &out), "2×2");
}

/// A source whose container lies (a short declared duration, a small declared picture) is
/// still held to the limits while it decodes.
#[test]
fn the_limits_hold_while_decoding_whatever_the_probe_was_told() {
    let dir = TempDir::new();
    let source = pattern(dir.path(), "liar.mp4", "320x240", 30, 3);
    let mut probed = probe(&source).expect("probe");
    let transcode_with = |probed: &vodsource_encoder::media::Probed, limits: &SourceLimits, out: &str| {
        let out = dir.path().join(out);
        std::fs::create_dir_all(&out).expect("out dir");
        transcode(&Job {
            source: &source,
            probed,
            out_dir: &out,
            config: &LadderConfig::default(),
            limits,
            cancel: &AtomicBool::new(false),
            progress: &Progress::default(),
            lead: false,
        })
    };
    // It says it lasts half a second; it runs three, past a one-second limit.
    probed.probe.duration_ms = 500;
    let short = SourceLimits {
        max_duration: std::time::Duration::from_secs(1),
        ..SourceLimits::default()
    };
    let error = transcode_with(&probed, &short, "long").expect_err("past the limit");
    assert_eq!(error.kind, MediaErrorKind::Source);
    assert!(error.message.contains("max_source_duration_secs"), "{}", error.message);
    // It says it is 160x120; its pictures are 320x240, above a 200x200 limit.
    let mut probed = probe(&source).expect("probe");
    probed.probe.width = 160;
    probed.probe.height = 120;
    let small = SourceLimits {
        max_pixels: 200 * 200,
        ..SourceLimits::default()
    };
    let error = transcode_with(&probed, &small, "big").expect_err("past the limit");
    assert!(
        error.message.contains("a picture of the source is 320x240"),
        "{}",
        error.message
    );
}
