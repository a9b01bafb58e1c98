//! The transcode: one decode of the source feeds every rung. The decode thread demuxes,
//! decodes, turns the picture upright, converts to a constant frame rate and scales once to
//! the top rung; each rung runs on its own thread, scales from the next larger rung (not
//! from the source), hands its picture down the ladder, and encodes and packages itself.
//! Audio is resampled and encoded on a thread of its own.

mod audio;
mod error;
pub mod fmp4;
pub mod limits;
pub mod package;

pub mod probe;
mod progress;
mod spill;
mod thumbs;
mod track;
mod video;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;

use ffmpeg::media::Type as MediaType;
use ffmpeg::{frame, picture};
use ffmpeg_next as ffmpeg;

pub(crate) use audio::SAMPLE_RATE as AUDIO_SAMPLE_RATE;
pub use error::{MediaError, MediaErrorKind};
pub use probe::{probe, Probed};
pub use progress::{Progress, ProgressSnapshot};
pub use spill::Spilled;
pub use thumbs::{thumbnails_vtt, Geometry as ThumbnailGeometry, Sheet};

use crate::ladder::{auto_lead_buffer_mib, of_lead_size, plan, Fps, LadderConfig, RungPlan, Segmenter};
use crate::manifest::{Track, TrackKind};
use limits::SourceLimits;

/// How many pictures may wait between two stages of the pipeline.
const QUEUE: usize = 8;

/// One transcode to run.
pub struct Job<'a> {
    /// The source file.
    pub source: &'a Path,
    /// What probing found.
    pub probed: &'a Probed,
    /// An empty folder that receives every output.
    pub out_dir: &'a Path,
    /// The ladder and encoder settings.
    pub config: &'a LadderConfig,
    /// What the worker agrees to decode.
    pub limits: &'a SourceLimits,
    /// Set to stop early; the transcode then fails with `Cancelled`.
    pub cancel: &'a AtomicBool,
    /// Updated as rungs advance.
    pub progress: &'a Progress,
    /// A whole encode's low rungs (short side at most `config.lead_max_height`) and audio are
    /// encoded ahead of the larger rungs: what progressive publication lists first. They
    /// share the one decode while the larger rungs' pictures fit in `config.lead_buffer_mib`
    /// and, past it, `config.lead_spill_mib` on disk (see [`Packaged::spilled`],
    /// [`Packaged::second_decode_from`]).
    pub lead: bool,
}

/// Everything a finished transcode wrote, relative to `out_dir`.
#[derive(Debug, Clone)]
pub struct Packaged {
    /// The rungs, largest first, with their tracks.
    pub rungs: Vec<(RungPlan, Track)>,
    /// The audio track, if the source had audio.
    pub audio: Option<Track>,
    /// `master.m3u8`.
    pub hls_master: String,
    /// `manifest.mpd`.
    pub dash_mpd: String,
    /// The poster JPEG.
    pub poster: Option<String>,
    /// The WebVTT index of the thumbnail sprites.
    pub thumbnails: Option<String>,
    /// Duration of the encoded media.
    pub duration_ms: u64,
    /// Every file written, relative to `out_dir`.
    pub files: Vec<String>,
    /// The picture from which the larger rungs were fed by a decode of their own beside the
    /// lead's ([`Job::lead`]): when the lead could not stay ahead of a viewer on the one
    /// decode with the pictures the larger rungs had yet to take in memory and on disk
    /// (`lead_buffer_mib`, `lead_spill_mib`), or from the start (0) with `lead_buffer_mib = 0`.
    /// `None`: one decode fed every rung.
    pub second_decode_from: Option<u64>,
    /// What waited past the larger rungs' queue beside a lead ([`Job::lead`]), in memory and
    /// on disk, while the queue was full and the lead had to go on: `None` when nothing did.
    pub spilled: Option<Spilled>,
}

/// A track a transcode writes: its folder name, what it is and its codecs string.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedTrack {
    /// Folder and rendition name (`720p`, `audio`).
    pub name: String,
    /// Video with its shape, or audio.
    pub kind: TrackKind,
    /// RFC 6381 codecs of this track alone.
    pub codecs: String,
}

/// The tracks a transcode of `probed` with `config` writes: the rungs, largest first, then
/// the audio when the source has audio.
///
/// # Errors
/// `Source` when the source cannot make a ladder.
pub fn planned_tracks(probed: &Probed, config: &LadderConfig) -> Result<Vec<PlannedTrack>, MediaError> {
    let fps = Fps::choose(probed.probe.frame_rate, config.max_fps);
    let rungs = plan(config, probed.display_width, probed.display_height, fps.as_f64())?;
    let mut tracks: Vec<PlannedTrack> = rungs.iter().map(|rung| PlannedTrack::video(rung, fps)).collect();
    if probed.has_audio {
        tracks.push(PlannedTrack::audio());
    }
    Ok(tracks)
}

/// The rungs, by name, that a whole encode of `probed` with a lead ([`Job::lead`]) encodes
/// ahead of the others: none when the source gets no lead.
///
/// # Errors
/// `Source` when the source cannot make a ladder.
pub fn lead_rungs(probed: &Probed, config: &LadderConfig) -> Result<Vec<String>, MediaError> {
    let fps = Fps::choose(probed.probe.frame_rate, config.max_fps);
    let size = (probed.display_width, probed.display_height);
    let rungs = plan(config, size.0, size.1, fps.as_f64())?;
    Ok(lead_for(&rungs, config.lead_max_height, size, fps)
        .map(|k| rungs[k..].iter().map(|rung| rung.name.clone()).collect())
        .unwrap_or_default())
}

impl PlannedTrack {
    /// The track of `rung` at `fps`.
    fn video(rung: &RungPlan, fps: Fps) -> Self {
        Self {
            name: rung.name.clone(),
            kind: TrackKind::Video {
                width: rung.width,
                height: rung.height,
                fps: (fps.num, fps.den),
            },
            codecs: rung.video_codecs(),
        }
    }

    /// The AAC-LC stereo track.
    fn audio() -> Self {
        Self {
            name: "audio".into(),
            kind: TrackKind::Audio {
                channels: 2,
                sample_rate: audio::SAMPLE_RATE,
            },
            codecs: "mp4a.40.2".into(),
        }
    }
}

/// Where the thumbnail tiles of a source fall, as [`transcode`] and every share of a chunked
/// encode lay them out: `top` is the largest rung's picture size.
pub fn thumbnail_geometry(top: (u32, u32), fps: Fps, duration_s: f64) -> ThumbnailGeometry {
    let top = RungPlan {
        name: String::new(),
        width: top.0,
        height: top.1,
        bitrate_bps: 0,
        maxrate_bps: 0,
        bufsize_bits: 0,
        level_idc: 0,
        preset: String::new(),
    };
    thumbs::Thumbnailer::new(&top, fps, duration_s).geometry()
}

/// Decodes the source once and writes the whole ladder, packaged, into `job.out_dir`.
///
/// # Errors
/// `Source` for media that cannot make a ladder (with the reason), `Io`/`Internal` for
/// failures another attempt may not meet, `Cancelled` when `job.cancel` was set.
pub fn transcode(job: &Job<'_>) -> Result<Packaged, MediaError> {
    let encoded = encode(job, Part::Whole)?;
    let seconds = encoded.seconds();
    let duration_s = job.probed.probe.duration_ms as f64 / 1000.0;
    if duration_s > 2.0 && encoded.seconds() < duration_s * 0.75 {
        return Err(MediaError::bad(format!(
            "the source's video ends at {:.1} s of a declared {duration_s:.1} s; the file looks truncated or damaged",
            encoded.seconds()
        )));
    }
    job.progress.packaging();
    let (second_decode_from, spilled) = (encoded.second_decode_from, encoded.spilled);
    let packaged = package::package(
        job.out_dir,
        &encoded.rungs,
        &encoded.done,
        encoded.audio.as_ref(),
        encoded.fps,
        job.config.segment_seconds,
        encoded.thumbnails,
        seconds,
    )?;
    Ok(Packaged {
        second_decode_from,
        spilled,
        ..packaged
    })
}

/// One share of a chunked encode: a run of frames across the whole ladder, or the audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Everything at once (what [`transcode`] does).
    Whole,
    /// Pictures `from..to` at the output rate, counted from the source's first picture
    /// (`to`: `None` for the end of the source), on every rung. `from` and `to` must fall on
    /// segment starts; the segments are numbered, and their fragments timed, as those of a
    /// whole encode, so the chunks of a source join without re-encoding.
    Frames {
        /// The first picture.
        from: u64,
        /// One past the last picture; `None`: to the end.
        to: Option<u64>,
    },
    /// The audio track of the whole source, alone.
    Audio,
}

/// What one share of a chunked encode wrote into `job.out_dir`.
#[derive(Debug, Clone)]
pub struct PartDone {
    /// The rungs encoded, largest first (none for the audio).
    pub rungs: Vec<RungPlan>,
    /// The tracks written (the rungs largest first, or the audio), each with the segments of
    /// this share in order; their playlists are the muxer's, not to be published.
    pub tracks: Vec<Track>,
    /// Pictures encoded per rung.
    pub frames: u64,
    /// The poster, when this share holds its picture.
    pub poster: Option<String>,
    /// The thumbnail tiles of this share: their sprite files, each with the first tile's
    /// number (tiles are numbered over the whole source) and how many it holds.
    pub sprites: Vec<Sheet>,
    /// Every file written, relative to `out_dir`.
    pub files: Vec<String>,
}

/// Encodes one share of a chunked encode of `job.source` into `job.out_dir`.
///
/// # Errors
/// As [`transcode`]; also `Source` when a run of frames starts past the source's end.
pub fn transcode_part(job: &Job<'_>, part: Part) -> Result<PartDone, MediaError> {
    let encoded = encode(job, part)?;
    let fps = encoded.fps;
    let (first, time_base) = match part {
        Part::Frames { from, .. } => (from, Some(ffmpeg::Rational(fps.den as i32, fps.num as i32))),
        Part::Whole | Part::Audio => (0, None),
    };
    if matches!(part, Part::Frames { .. }) && encoded.frames == 0 {
        return Err(MediaError::bad(format!(
            "the source has no picture from frame {first} on (it ends earlier than probed)"
        )));
    }
    job.progress.packaging();
    let segmenter = Segmenter::of(job.config, fps);
    let mut tracks = Vec::new();
    for (rung, done) in encoded.rungs.iter().zip(&encoded.done) {
        let planned = PlannedTrack::video(rung, fps);
        let track = package::part_track(job.out_dir, &planned, done.timescale)?;
        if let Some(encoder_tb) = time_base {
            let stream_tb = ffmpeg::Rational(1, i32::try_from(done.timescale).unwrap_or(i32::MAX));
            let at = ffmpeg::Rescale::rescale(&i64::try_from(first).unwrap_or(i64::MAX), encoder_tb, stream_tb);
            let number = segmenter.index_of(first).unwrap_or(0);
            package::place(job.out_dir, &track, at, number)?;
        }
        tracks.push(track);
    }
    if let Some(audio) = &encoded.audio {
        tracks.push(package::part_track(
            job.out_dir,
            &PlannedTrack::audio(),
            audio.timescale,
        )?);
    }
    let (poster, sprites) = match part {
        Part::Frames { .. } => encoded.thumbnails.finish_part(job.out_dir)?,
        Part::Whole | Part::Audio => (None, Vec::new()),
    };
    let mut files = Vec::new();
    package::list_files(job.out_dir, job.out_dir, &mut files)?;
    files.sort();
    Ok(PartDone {
        rungs: encoded.rungs.clone(),
        tracks,
        frames: encoded.frames,
        poster,
        sprites,
        files,
    })
}

/// What the encoding stage of a transcode leaves for packaging.
struct Encoded {
    rungs: Vec<RungPlan>,
    done: Vec<video::RungDone>,
    audio: Option<audio::AudioDone>,
    frames: u64,
    fps: Fps,
    thumbnails: thumbs::Thumbnailer,
    /// See [`Packaged::second_decode_from`].
    second_decode_from: Option<u64>,
    /// See [`Packaged::spilled`].
    spilled: Option<Spilled>,
}

impl Encoded {
    fn seconds(&self) -> f64 {
        self.frames as f64 / self.fps.as_f64()
    }

    /// What a pass without thumbnails leaves: its tracks.
    fn tracks(self) -> Tracks {
        Tracks {
            rungs: self.rungs,
            done: self.done,
            audio: self.audio,
            frames: self.frames,
        }
    }
}

/// The tracks of one pass of an encode.
struct Tracks {
    rungs: Vec<RungPlan>,
    done: Vec<video::RungDone>,
    audio: Option<audio::AudioDone>,
    frames: u64,
}

/// The decode and the encodes of `part`: one pass over the source, or, for a whole encode
/// with a lead ([`Job::lead`]), three at once ([`encode_led`]).
fn encode(job: &Job<'_>, part: Part) -> Result<Encoded, MediaError> {
    init()?;
    job.limits.check_probe(&job.probed.probe)?;
    let config = job.config;
    let fps = Fps::choose(job.probed.probe.frame_rate, config.max_fps);
    let all_rungs = plan(
        config,
        job.probed.display_width,
        job.probed.display_height,
        fps.as_f64(),
    )?;
    let segmenter = Segmenter::of(config, fps);
    let duration_s = job.probed.probe.duration_ms as f64 / 1000.0;
    let expected_frames = (duration_s * fps.as_f64()).round() as u64;
    let (rungs, window, with_audio) = match part {
        Part::Whole => (all_rungs.clone(), None, true),
        Part::Frames { from, to } => {
            if !segmenter.is_boundary(from) || to.is_some_and(|to| to <= from || !segmenter.is_boundary(to)) {
                return Err(MediaError::internal(format!(
                    "frames {from}..{to:?} do not start and end on segment starts"
                )));
            }
            (all_rungs.clone(), Some((from, to)), false)
        }
        Part::Audio => (Vec::new(), None, true),
    };
    let share = match window {
        Some((from, to)) => to.unwrap_or(expected_frames).min(expected_frames).saturating_sub(from),
        None => expected_frames,
    };
    job.progress.start(share, &rungs);
    let setup = Setup {
        all_rungs: &all_rungs,
        fps,
        segmenter,
        duration_s,
        window,
    };
    let lead_from = match part {
        Part::Whole if job.lead => lead_for(
            &rungs,
            config.lead_max_height,
            (job.probed.display_width, job.probed.display_height),
            fps,
        ),
        _ => None,
    };
    match lead_from {
        Some(k) => {
            let mib = config
                .lead_buffer_mib
                .unwrap_or_else(|| auto_lead_buffer_mib(crate::memory::available(), 1));
            let buffer = (mib > 0).then(|| lead_queue(mib, &rungs[..k], fps.as_f64()));
            encode_led(job, &setup, &rungs, (k, buffer), with_audio)
        }
        None => {
            let whole = Pass {
                rungs: &rungs,
                threads: &x264_threads(&rungs, config),
                offset: 0,
                audio: with_audio,
                thumbnails: true,
                yields: false,
                lead: None,
            };
            pass(job, &setup, &whole, &AtomicBool::new(false), None)
        }
    }
}

/// How `mib` MiB for the `larger` rungs' pictures beside a lead at `fps` are used: the
/// larger rungs' queue, in pictures (at most [`LEAD_QUEUE_SECONDS`], at least one), and the
/// bytes past it that pictures may wait in memory when the lead must go on
/// ([`SharedLead::held`]). A picture takes the bytes of every larger rung's size (4:2:0,
/// 8 bits: the decode hands them the sizes it made for the lead).
fn lead_queue(mib: u32, larger: &[RungPlan], fps: f64) -> (usize, u64) {
    let picture = larger
        .iter()
        .map(|rung| u64::from(rung.width) * u64::from(rung.height) * 3 / 2)
        .sum::<u64>()
        .max(1);
    let bytes = u64::from(mib) << 20;
    let seconds = (LEAD_QUEUE_SECONDS * fps).ceil().max(1.0) as u64;
    let queue = (bytes / picture).clamp(1, seconds);
    (
        usize::try_from(queue).unwrap_or(usize::MAX),
        bytes.saturating_sub(queue * picture),
    )
}

/// How far, in seconds of pictures, the lead runs ahead of the larger rungs when no viewer
/// needs it further: their queue. Past it the lead waits for them, unless it would fall
/// behind a viewer (they encode slower than real time): then their pictures wait in memory
/// past the queue, then on disk ([`spill`]). So memory is taken only as far as the larger
/// rungs fall behind real time, not as far as the lead could sprint.
const LEAD_QUEUE_SECONDS: f64 = 10.0;

/// Whether a lead that has been handed `lead_s` seconds of pictures is less than `ahead_s`
/// ahead of a viewer who started playing at the beginning `elapsed_s` seconds ago: what it
/// has been handed is stored a segment and x264's look-ahead later, and the viewer plays a
/// second of media a second.
fn lead_falls_behind(lead_s: f64, elapsed_s: f64, ahead_s: f64) -> bool {
    lead_s < elapsed_s + ahead_s
}

/// What a lead must have been handed beyond a viewer's position, past one segment (the one
/// being written is not stored until it closes): x264's look-ahead, the lead's queue, and
/// the player's own margin.
const LEAD_SLACK_SECONDS: f64 = 2.0;

/// A whole encode with a lead: `rungs[k..]` ahead of `rungs[..k]`, because those encode at
/// the lowest CPU priority (they take what the lead leaves, and the cores never idle while
/// either has work). With a `buffer`, one decode feeds both, the larger rungs up to `buffer`
/// pictures behind, and more on disk when the lead must go on ([`SharedLead`]); without, the
/// lead has a decode of its own. The audio
/// (`with_audio`) is demuxed and encoded apart, held just ahead of the lead by a [`Pace`]:
/// its segments are longer than the lead's first, and in step with the video it would be
/// stored after them.
fn encode_led(
    job: &Job<'_>,
    setup: &Setup<'_>,
    rungs: &[RungPlan],
    (k, buffer): (usize, Option<(usize, u64)>),
    with_audio: bool,
) -> Result<Encoded, MediaError> {
    let config = job.config;
    let stop = AtomicBool::new(false);
    let lead_names = rungs[k..].iter().map(|r| r.name.as_str()).collect::<Vec<_>>();
    match buffer {
        Some((buffer, held)) => tracing::debug!(
            lead = ?lead_names,
            buffer,
            held_mib = held >> 20,
            "the lead encodes ahead on the one decode, the larger rungs up to {buffer} pictures behind"
        ),
        None => tracing::debug!(lead = ?lead_names, "the lead encodes ahead from a decode of its own"),
    }
    // x264 threads shared within the lead and within the larger rungs, as if each were alone:
    // the lead has the cores to itself at the start.
    let mut threads = x264_threads(&rungs[..k], config);
    threads.extend(x264_threads(&rungs[k..], config));
    let mut passes = match buffer {
        Some((buffer, held)) => vec![Pass {
            rungs,
            threads: &threads,
            offset: 0,
            audio: false,
            thumbnails: true,
            yields: false,
            lead: Some(SharedLead { from: k, buffer, held }),
        }],
        // Two decodes: the larger rungs; the lead.
        None => vec![
            Pass {
                rungs: &rungs[..k],
                threads: &threads[..k],
                offset: 0,
                audio: false,
                thumbnails: true,
                yields: true,
                lead: None,
            },
            Pass {
                rungs: &rungs[k..],
                threads: &threads[k..],
                offset: k,
                audio: false,
                thumbnails: false,
                yields: false,
                lead: None,
            },
        ],
    };
    let lead_apart = passes.len() == 2;
    // The audio alone: it takes seconds, and is then there from start to end, whatever the
    // video's pace.
    let audio_at = (with_audio && job.probed.has_audio).then(|| {
        passes.push(Pass {
            rungs: &[],
            threads: &[],
            offset: rungs.len(),
            audio: true,
            thumbnails: false,
            yields: false,
            lead: None,
        });
        passes.len() - 2
    });
    let stopping = |outcome: Result<Encoded, MediaError>| {
        if outcome.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        outcome
    };
    let lead_over = AtomicBool::new(false);
    let pace = Pace {
        ahead: f64::from(config.segment_seconds) + AUDIO_AHEAD_SECONDS,
        progress: job.progress,
        lead: k,
        fps: setup.fps.as_f64(),
        over: &lead_over,
    };
    let (main, others) = std::thread::scope(|scope| {
        let handles: Vec<_> = passes[1..]
            .iter()
            .enumerate()
            .map(|(i, one)| {
                let (stopping, stop, lead_over) = (&stopping, &stop, &lead_over);
                // The audio keeps just ahead of the lead rather than taking the cores first.
                let pace = (Some(i) == audio_at).then_some(&pace);
                scope.spawn(move || {
                    let outcome = stopping(pass(job, setup, one, stop, pace)).map(Encoded::tracks);
                    if lead_apart && i == 0 {
                        lead_over.store(true, Ordering::Relaxed);
                    }
                    outcome
                })
            })
            .collect();
        // The first pass (with the thumbnails, which stay on their thread) runs on this one;
        // the larger rungs' encoders at the lowest priority.
        let main = stopping(pass(job, setup, &passes[0], &stop, None));
        if !lead_apart {
            lead_over.store(true, Ordering::Relaxed);
        }
        let others: Vec<_> = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(MediaError::internal("a decode of the source panicked")))
            })
            .collect();
        (main, others)
    });
    let mut main = match main {
        Ok(main) => main,
        Err(error) => {
            return Err(first_error(&others)
                .filter(|_| error.kind == MediaErrorKind::Cancelled)
                .unwrap_or(error))
        }
    };
    if let Some(error) = first_error(&others) {
        return Err(error);
    }
    let mut others = others.into_iter().filter_map(Result::ok);
    if lead_apart {
        let Some(lead) = others.next() else {
            return Err(MediaError::internal("the lead decode left no outcome"));
        };
        if main.frames != lead.frames {
            return Err(MediaError::internal(format!(
                "the two decodes of the source made {} and {} pictures",
                main.frames, lead.frames
            )));
        }
        main.rungs.extend(lead.rungs);
        main.done.extend(lead.done);
        main.second_decode_from = Some(0);
    }
    main.audio = others.next().and_then(|audio| audio.audio);
    Ok(main)
}

/// Where the lead starts in `rungs` (largest first) for a `size` source at `fps`: nowhere
/// past [`LEAD_MAX_PIXEL_RATE`], else as [`lead_from`].
fn lead_for(rungs: &[RungPlan], max_height: u32, size: (u32, u32), fps: Fps) -> Option<usize> {
    let pixel_rate = f64::from(size.0) * f64::from(size.1) * fps.as_f64();
    (pixel_rate <= LEAD_MAX_PIXEL_RATE)
        .then(|| lead_from(rungs, max_height))
        .flatten()
}

/// Where the lead starts in `rungs` (largest first): the first rung of its size
/// ([`of_lead_size`]), when larger rungs remain for the other pass.
fn lead_from(rungs: &[RungPlan], max_height: u32) -> Option<usize> {
    rungs
        .iter()
        .position(|rung| of_lead_size(rung.width, rung.height, max_height))
        .filter(|&k| k > 0)
}

/// Sources decoded more than this many pixels a second (1080p60) get no lead: a second decode
/// of 1440p or 4K costs as much as the ladder's own rungs, and the lead could not keep ahead
/// on a few cores anyway.
const LEAD_MAX_PIXEL_RATE: f64 = 1920.0 * 1080.0 * 60.0;

/// How far (media seconds) past one whole audio segment the audio runs ahead of the lead:
/// its first segment is then stored before the lead's, and the audio's decode takes little
/// from the lead's first seconds (12 s ahead closed the lead's first segment ~0.08 s later
/// in traced runs of a 20 s 1080p source).
const AUDIO_AHEAD_SECONDS: f64 = 2.0;

/// Keeps the audio's decode just ahead of the lead: at the same priority, it would otherwise
/// take a core from the lead at the start, when the lead's first segments are what a viewer
/// waits for.
struct Pace<'a> {
    /// Media seconds the audio may be ahead of the lead.
    ahead: f64,
    progress: &'a Progress,
    /// The lead's first rung in the progress.
    lead: usize,
    fps: f64,
    /// Set when the lead pass ends (done or failed).
    over: &'a AtomicBool,
}

impl Pace<'_> {
    /// Waits, before the audio at `at` seconds is decoded, while that is more than
    /// `ahead` seconds ahead of the lead.
    fn wait_audio(&self, at: f64, cancel: &AtomicBool, stop: &AtomicBool) {
        self.wait_while(cancel, stop, |lead| at > lead as f64 / self.fps + self.ahead);
    }

    /// Waits while `behind(pictures the lead has encoded)`, until the lead ends or the encode
    /// stops.
    fn wait_while(&self, cancel: &AtomicBool, stop: &AtomicBool, behind: impl Fn(u64) -> bool) {
        while !(self.over.load(Ordering::Relaxed) || cancel.load(Ordering::Relaxed) || stop.load(Ordering::Relaxed))
            && behind(self.progress.frames_from(self.lead))
        {
            self.progress.wait(std::time::Duration::from_millis(50));
        }
    }
}

/// The nice value of the larger rungs' pass beside a lead: the lowest priority there is, so
/// that the lead (and the API, and a viewer's requests, on a machine that serves as well as
/// encodes) goes first, and the pass has the cores only as far as they are left idle.
const LOWEST_PRIORITY: i32 = 19;

/// Gives the calling thread, and the threads it starts from now on, [`LOWEST_PRIORITY`]
/// (Linux keeps a nice value per thread and a new thread inherits it). Raising one's own nice
/// value needs no privilege; lowering it again would, so it is only done on a thread that ends
/// with the work (a rung encoder's, never one of the runtime's). Where it fails the encode goes
/// on at the priority it has, only slower to playable.
fn lowest_priority() {
    if let Err(error) = rustix::process::setpriority_process(None, LOWEST_PRIORITY) {
        tracing::warn!(%error, "the larger rungs keep their priority beside the lead");
    }
}

/// What every pass of one encode shares.
struct Setup<'a> {
    all_rungs: &'a [RungPlan],
    fps: Fps,
    segmenter: Segmenter,
    duration_s: f64,
    window: Option<(u64, Option<u64>)>,
}

/// One decode of the source and the encodes it feeds.
#[derive(Clone, Copy)]
struct Pass<'a> {
    /// The rungs it encodes, largest first (the decode scales to the first).
    rungs: &'a [RungPlan],
    /// x264 threads of each.
    threads: &'a [usize],
    /// The first rung's place in the encode's progress.
    offset: usize,
    /// Whether it encodes the audio.
    audio: bool,
    /// Whether it makes the poster and thumbnails.
    thumbnails: bool,
    /// Whether its rung encoders (and the x264 threads they start) run at
    /// [`LOWEST_PRIORITY`]; the decode that feeds them waits on them once their queues fill.
    yields: bool,
    /// A lead within `rungs`, fed by this decode beside the larger rungs.
    lead: Option<SharedLead>,
}

/// A lead on the decode of the larger rungs: `rungs[from..]` of the pass, fed each picture
/// before the larger rungs are, which encode at [`LOWEST_PRIORITY`] and may be up to `buffer`
/// pictures behind (the pictures wait in their queue). Where that is not far enough to keep
/// the lead ahead of a viewer ([`lead_falls_behind`]), the pictures past the queue wait in
/// memory up to `held` bytes, then on disk up to `lead_spill_mib` ([`spill`]); past that,
/// the larger rungs get a decode of their own from the next picture on and the lead goes on
/// alone.
#[derive(Clone, Copy)]
struct SharedLead {
    from: usize,
    buffer: usize,
    held: u64,
}

/// Runs `pass`; stops early when `job.cancel` or `stop` is set; waits on `pace`, if any,
/// before each audio packet.
fn pass(
    job: &Job<'_>,
    setup: &Setup<'_>,
    pass: &Pass<'_>,
    stop: &AtomicBool,
    pace: Option<&Pace<'_>>,
) -> Result<Encoded, MediaError> {
    let Setup {
        all_rungs,
        fps,
        segmenter,
        duration_s,
        window,
    } = *setup;
    let config = job.config;
    let rungs = pass.rungs;
    let (mut input, video_index) = open_video(job.source)?;
    let audio_index = (pass.audio && job.probed.has_audio)
        .then(|| input.streams().best(MediaType::Audio).map(|s| s.index()))
        .flatten();
    let video_start = video::stream_start(&input, video_index);
    let mut decode = match rungs.first() {
        None => None,
        Some(top) => Some(video::Decode::new(
            &input,
            video_index,
            job.probed,
            top,
            fps,
            job.limits,
        )?),
    };
    // Where the first picture of the source falls, so that a run of frames deep in the
    // source is counted as a whole decode counts it; then to just before the run.
    // A run deep in the source encodes the segment before it too, and drops it: x264's rate
    // control then meets the run's first picture in the state a whole encode has there (not
    // starting afresh), and the run's quality is the whole encode's.
    let warm_from = match window {
        Some((from, _)) if from > 0 => segmenter
            .index_of(from)
            .map_or(from, |k| segmenter.start_of(k.saturating_sub(WARM_UP_SEGMENTS))),
        _ => 0,
    };
    let origin = match window {
        Some((from, _)) if from > 0 => {
            let origin = first_picture(job, video_index, &all_rungs[0], fps)?;
            seek_before(&mut input, video_start, warm_from, fps)?;
            Some(origin)
        }
        Some(_) => Some(first_picture(job, video_index, &all_rungs[0], fps)?),
        None => None,
    };
    let mut audio_decode = match audio_index {
        Some(index) => audio::Decode::new(&input, index, video_start).ok(),
        None => None,
    };
    let mut thumbnails = thumbs::Thumbnailer::new(&all_rungs[0], fps, duration_s);

    let first_segment = window.map_or(Some(0), |(from, _)| segmenter.index_of(from));
    // Stops the larger rungs' relay and own decode, if they get them, when this one fails.
    let halt = AtomicBool::new(false);
    let spill = spill::Spill::new(
        pass.lead.map_or(0, |lead| lead.held),
        u64::from(config.lead_spill_mib) << 20,
    );
    std::thread::scope(|scope| -> Result<Encoded, MediaError> {
        // The chain: decode → rung 0 → rung 1 → … ; each rung forwards its picture down. A
        // lead begins a chain of its own, fed by the decode before the larger rungs are.
        let mut handles = Vec::new();
        let lead_at = pass.lead.map(|lead| lead.from);
        let (first_tx, mut rx) = sync_channel::<video::Picture>(pass.lead.map_or(QUEUE, |lead| lead.buffer));
        let mut lead_tx = None;
        for (i, rung) in rungs.iter().enumerate() {
            if Some(i) == lead_at {
                let (tx, lead_rx) = sync_channel::<video::Picture>(QUEUE);
                lead_tx = Some(tx);
                rx = lead_rx;
            }
            let (next_tx, next_rx) = sync_channel::<video::Picture>(QUEUE);
            let next = (i + 1 < rungs.len() && Some(i + 1) != lead_at).then_some(next_tx);
            let encode = video::RungEncode {
                plan: rung.clone(),
                dir: job.out_dir.join(&rung.name),
                fps,
                keyint: segmenter.max_frames(),
                first_segment: first_segment.unwrap_or(0) + 1,
                keep_from: window.map_or(0, |(from, _)| from),
                threads: pass.threads.get(i).copied().unwrap_or(1),
            };
            let progress = job.progress;
            let slot = pass.offset + i;
            let input_rx = std::mem::replace(&mut rx, next_rx);
            let yields = pass.yields || lead_at.is_some_and(|k| i < k);
            // Named for `top -H` (and the x264 threads it starts take the name too).
            let thread = std::thread::Builder::new()
                .name(format!("rung {}", rung.name))
                .spawn_scoped(scope, move || {
                    if yields {
                        lowest_priority();
                    }
                    encode.run(input_rx, next, |frames, closed| progress.set(slot, frames, closed))
                })
                .map_err(|e| MediaError::internal(format!("start the {} encoder: {e}", rung.name)))?;
            handles.push(thread);
        }
        drop(rx);
        let audio_handle = audio_decode.as_ref().map(|_| {
            let (tx, rx) = sync_channel::<frame::Audio>(QUEUE * 4);
            let encode = audio::AudioEncode {
                time_base: audio_decode
                    .as_ref()
                    .map_or(ffmpeg::Rational(1, 1), audio::Decode::time_base),
                dir: job.out_dir.join("audio"),
                bitrate: u64::from(config.audio_bitrate_kbps) * 1000,
                segment_seconds: config.segment_seconds,
            };
            (tx, scope.spawn(move || encode.run(rx)))
        });
        let (audio_tx, audio_handle) = match audio_handle {
            Some((tx, handle)) => (Some(tx), Some(handle)),
            None => (None, None),
        };

        // A lead's split (scaling through the larger rungs' sizes, handing on) runs on a thread
        // of its own, beside the decode: the lead waits on neither alone. It returns the
        // relay it started, if any.
        let (mut out, split_handle) = match (lead_tx, lead_at) {
            (Some(lead), Some(k)) => {
                let (tx, rx) = sync_channel::<(u64, Arc<frame::Video>)>(QUEUE);
                let (spill, halt) = (&spill, &halt);
                let handle = std::thread::Builder::new()
                    .name("split".into())
                    .spawn_scoped(scope, move || {
                        // Started at the first picture the split leaves in the spill.
                        let relay = std::cell::RefCell::new(None);
                        let start_spill = |larger: SyncSender<video::Picture>| {
                            let handle = start_relay(scope, (job, setup, &rungs[0]), (spill, halt), larger)?;
                            *relay.borrow_mut() = Some(handle);
                            Ok(spill::Writer::new(spill, job.out_dir))
                        };
                        // (A scaler stays on the thread that made it.)
                        let mut split = Split {
                            lead,
                            through: rungs[1..k]
                                .iter()
                                .map(|rung| video::ScaleTo::new(rung.width, rung.height))
                                .collect(),
                            larger: Some(first_tx),
                            spill: None,
                            start_spill: &start_spill,
                            fps: fps.as_f64(),
                            ahead: f64::from(config.segment_seconds) + LEAD_SLACK_SECONDS,
                            viewers: (job.progress, pass.offset + k),
                        };
                        let sent = rx.into_iter().try_for_each(|(n, picture)| split.send(n, picture));
                        // (Dropped, the spill's writer tells the relay that no more come.)
                        drop(split);
                        (sent, relay.into_inner())
                    })
                    .map_err(|e| MediaError::internal(format!("start the lead's split: {e}")))?;
                (Out::Split(tx), Some(handle))
            }
            _ => (Out::Chain(first_tx), None),
        };
        job.progress.begin();
        let fed = feed(
            &mut input,
            decode.as_mut(),
            audio_decode.as_mut().zip(audio_tx.as_ref()),
            audio_index,
            video_index,
            &Window {
                origin,
                warm_from,
                from: window.map_or(0, |w| w.0),
                to: window.and_then(|w| w.1),
                segmenter,
            },
            pass.thumbnails.then_some(&mut thumbnails),
            &mut out,
            (job.cancel, stop, pace),
            (job.limits.max_frames(fps.as_f64()), job.limits),
        );
        if fed.is_err() {
            halt.store(true, Ordering::Relaxed);
        }
        drop(out);
        drop(audio_tx);
        let (split, relay) = match split_handle.map(|h| h.join()) {
            None => (None, None),
            Some(Ok((sent, relay))) => (Some(sent), relay),
            Some(Err(_)) => (Some(Err(MediaError::internal("the lead's split panicked"))), None),
        };
        let mut outcomes: Vec<Result<video::RungDone, MediaError>> = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(MediaError::internal("a rung encoder panicked")))
            })
            .collect();
        let audio_done = audio_handle.map(|h| {
            h.join()
                .unwrap_or_else(|_| Err(MediaError::internal("the audio encoder panicked")))
        });
        let relayed = relay.map(|handle| {
            handle
                .join()
                .unwrap_or_else(|_| Err(MediaError::internal("the larger rungs' relay panicked")))
        });
        if job.cancel.load(Ordering::Relaxed) || stop.load(Ordering::Relaxed) {
            return Err(MediaError::cancelled("cancelled"));
        }
        // A stage that failed is the cause; the feed then only saw its channel close.
        if let Some(error) = first_error(&outcomes) {
            return Err(error);
        }
        // So is a split that failed.
        if let Some(Err(error)) = split {
            if error.kind != MediaErrorKind::Cancelled {
                return Err(error);
            }
        }
        // A relay that failed is the cause; the feed then only saw it stop.
        let relayed = match relayed {
            Some(Err(error)) if error.kind != MediaErrorKind::Cancelled => return Err(error),
            relayed => relayed,
        };
        let frames = fed?;
        let second_decode_from = match relayed {
            None | Some(Ok(None)) => None,
            Some(Err(error)) => return Err(error),
            Some(Ok(Some((from, more)))) if from + more == frames => Some(from),
            Some(Ok(Some((from, more)))) => {
                return Err(MediaError::internal(format!(
                    "the two decodes of the source made {frames} and {} pictures",
                    from + more
                )))
            }
        };
        let done: Vec<video::RungDone> = outcomes.drain(..).filter_map(Result::ok).collect();
        if frames == 0 && !rungs.is_empty() && window.is_none() {
            return Err(MediaError::bad("no video frame of the source could be decoded"));
        }
        let audio = match audio_done {
            Some(Ok(done)) => Some(done),
            Some(Err(e)) => return Err(e),
            None => None,
        };
        let spilled = spill.spilled();
        if let Some(spilled) = spilled {
            tracing::info!(
                from = spilled.from,
                pictures = spilled.pictures,
                on_disk = spilled.on_disk,
                peak_held_mib = spilled.peak_held_bytes >> 20,
                peak_mib = spilled.peak_bytes >> 20,
                "the larger rungs' pictures waited past their queue"
            );
        }
        Ok(Encoded {
            rungs: rungs.to_vec(),
            done,
            audio,
            frames,
            fps,
            thumbnails,
            second_decode_from,
            spilled,
        })
    })
}

/// What a relay did: `None` when the spill was enough, else the picture from which the larger
/// rungs had a decode of their own and how many pictures it handed on.
type Relayed = Result<Option<(u64, u64)>, MediaError>;

/// Starts the thread that feeds the larger rungs once their queue in memory is not enough: it
/// hands on what the split left in `spill`, then, if the spill ran out, decodes from where it
/// stopped ([`detached_feed`]).
fn start_relay<'scope, 'env>(
    scope: &'scope std::thread::Scope<'scope, 'env>,
    (job, setup, top): (&'env Job<'env>, &'env Setup<'env>, &'env RungPlan),
    (spill, halt): (&'env spill::Spill, &'env AtomicBool),
    larger: SyncSender<video::Picture>,
) -> Result<std::thread::ScopedJoinHandle<'scope, Relayed>, MediaError> {
    std::thread::Builder::new()
        .name("spill relay".into())
        .spawn_scoped(scope, move || {
            lowest_priority();
            match spill.relay(&larger, (job.cancel, halt))? {
                None => Ok(None),
                Some(from) => {
                    tracing::info!(from, "the larger rungs get a decode of their own");
                    detached_feed(job, setup, top, from, larger, halt).map(|more| Some((from, more)))
                }
            }
        })
        .map_err(|e| MediaError::internal(format!("start the larger rungs' relay: {e}")))
}

/// The larger rungs' own decode from picture `from` on, once a lead left the one decode
/// ([`SharedLead`]): it counts pictures from the source's first, as a run of frames does, and
/// hands on exactly those the one decode would have. Returns how many it handed on.
fn detached_feed(
    job: &Job<'_>,
    setup: &Setup<'_>,
    top: &RungPlan,
    from: u64,
    out: SyncSender<video::Picture>,
    stop: &AtomicBool,
) -> Result<u64, MediaError> {
    let fps = setup.fps;
    let (mut input, video_index) = open_video(job.source)?;
    let video_start = video::stream_start(&input, video_index);
    let mut decode = video::Decode::new(&input, video_index, job.probed, top, fps, job.limits)?;
    let origin = first_picture(job, video_index, top, fps)?;
    seek_before(&mut input, video_start, from, fps)?;
    feed(
        &mut input,
        Some(&mut decode),
        None,
        None,
        video_index,
        &Window {
            origin: Some(origin),
            warm_from: from,
            from,
            to: None,
            segmenter: setup.segmenter,
        },
        None,
        &mut Out::Chain(out),
        (job.cancel, stop, None),
        (job.limits.max_frames(fps.as_f64()), job.limits),
    )
}

/// Opens `source` and finds its video stream.
fn open_video(source: &Path) -> Result<(ffmpeg::format::context::Input, usize), MediaError> {
    let input = probe::open(source)?;
    let video_index = input
        .streams()
        .best(MediaType::Video)
        .map(|s| s.index())
        .ok_or_else(|| MediaError::bad("the source has no video stream"))?;
    Ok((input, video_index))
}

/// Sends the demuxer [`SEEK_BEFORE_SECONDS`] before picture `n` (at `fps`, the video starting
/// at `video_start` seconds): it lands on the keyframe at or before that.
fn seek_before(
    input: &mut ffmpeg::format::context::Input,
    video_start: f64,
    n: u64,
    fps: Fps,
) -> Result<(), MediaError> {
    let at = video_start + n as f64 / fps.as_f64() - SEEK_BEFORE_SECONDS;
    let ts = (at.max(0.0) * f64::from(ffmpeg::ffi::AV_TIME_BASE)) as i64;
    input
        .seek(ts, ..ts.saturating_add(1))
        .map_err(|e| MediaError::bad(format!("the source cannot be read from {at:.1} s: {e}")))
}

/// Where a decode hands its pictures.
enum Out {
    /// One chain of rungs.
    Chain(SyncSender<video::Picture>),
    /// A lead and the larger rungs ([`SharedLead`]): the thread that runs their [`Split`].
    Split(SyncSender<(u64, Arc<frame::Video>)>),
}

impl Out {
    /// Hands on picture `n`; fails (as cancelled: the stage that stopped says why) when a
    /// chain has stopped.
    fn send(&mut self, n: u64, picture: Arc<frame::Video>) -> Result<(), MediaError> {
        match self {
            Out::Chain(tx) => tx.send(picture.into()).map_err(|_| MediaError::cancelled("cancelled")),
            Out::Split(tx) => tx.send((n, picture)).map_err(|_| MediaError::cancelled("cancelled")),
        }
    }
}

/// The two chains of a [`SharedLead`], fed on a thread of their own beside the decode (the
/// scaling for the lead does not hold up the decode).
struct Split<'a> {
    lead: SyncSender<video::Picture>,
    /// The sizes of the larger rungs below the top one, largest first: each picture is scaled
    /// through them (as the whole ladder's chain scales it) for the lead to scale from the
    /// last, and the larger rungs take them with it.
    through: Vec<video::ScaleTo>,
    /// The larger rungs' queue, until they get a decode of their own.
    larger: Option<SyncSender<video::Picture>>,
    /// Where pictures go while the larger rungs' queue is full and the lead must go on;
    /// started at the first.
    spill: Option<spill::Writer<'a>>,
    /// Starts the relay that hands the spilled pictures to the queue it is given.
    start_spill: &'a dyn Fn(SyncSender<video::Picture>) -> Result<spill::Writer<'a>, MediaError>,
    fps: f64,
    /// What the lead must have been handed beyond a viewer's position.
    ahead: f64,
    /// The encode's progress and the lead's first rung in it: no viewer can start before each
    /// of the lead's rungs has closed its first segment.
    viewers: (&'a Progress, usize),
}

impl Split<'_> {
    /// The lead takes picture `n` first. The larger rungs take it too, unless their queue is
    /// full while the lead is falling behind a viewer: then it waits past the queue (in
    /// memory, then on disk), and so does every picture after it until the larger rungs have
    /// taken those; past the spill's budgets, the larger rungs get a decode of their own from
    /// `n` on and this decode feeds the lead alone.
    fn send(&mut self, n: u64, picture: Arc<frame::Video>) -> Result<(), MediaError> {
        let stopped = || MediaError::cancelled("cancelled");
        let mut smaller = Vec::with_capacity(self.through.len());
        for size in &mut self.through {
            let larger = smaller.last().unwrap_or(&picture);
            let scaled = size
                .run(larger)
                .map_err(|e| MediaError::internal(format!("scale for the lead: {e}")))?;
            smaller.push(scaled);
        }
        let for_lead = smaller.last().map_or_else(|| Arc::clone(&picture), Arc::clone);
        self.lead.send(for_lead.into()).map_err(|_| stopped())?;
        let Some(larger) = self.larger.as_ref() else {
            return Ok(());
        };
        // Until a viewer may be watching, the larger rungs take the picture alone and scale it
        // again (at the lowest priority, ~1.4 ms a 720p): the sizes made for the lead are then
        // written again for the next picture once the lead is done with them, where holding
        // them for the larger rungs took new memory for each while the lead makes its start.
        if !self.watched() {
            smaller.clear();
        }
        // Pictures on disk go first: this one waits in memory if the lead can wait for them,
        // else it follows them to disk.
        if let Some(spill) = self.spill.as_ref().map(spill::Writer::spill) {
            if spill.pending() && !spill.drained_unless(|| self.behind(n))? {
                return self.spill(
                    n,
                    video::Picture {
                        frame: picture,
                        smaller,
                    },
                );
            }
        }
        let picture = match larger.try_send(video::Picture {
            frame: picture,
            smaller,
        }) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Disconnected(_)) => return Err(stopped()),
            Err(TrySendError::Full(picture)) => picture,
        };
        if self.behind(n) {
            return self.spill(n, picture);
        }
        larger.send(picture).map_err(|_| stopped())
    }

    /// Leaves picture `n` in the spill (memory, then disk), starting it if need be; past its
    /// budgets, or when it cannot write, the larger rungs get a decode of their own from `n` on.
    fn spill(&mut self, n: u64, picture: video::Picture) -> Result<(), MediaError> {
        let Some(larger) = self.larger.as_ref() else {
            return Ok(());
        };
        let writer = match self.spill.as_mut() {
            Some(writer) => writer,
            None => self.spill.insert((self.start_spill)(larger.clone())?),
        };
        let first = writer.spill().spilled().is_none();
        match writer.push(n, picture) {
            Ok(true) => {
                if first {
                    tracing::info!(
                        from = n,
                        "the lead would fall behind a viewer on the one decode: the larger rungs' pictures past their queue wait in memory, then on disk"
                    );
                }
                return Ok(());
            }
            Ok(false) => tracing::info!(
                from = n,
                "the spill is at its budget: the larger rungs get a decode of their own once it is read"
            ),
            // A full or failing disk costs the second decode, not the encode.
            Err(error) => tracing::warn!(
                from = n,
                %error,
                "the spill cannot write: the larger rungs get a decode of their own once it is read"
            ),
        }
        if let Some(writer) = self.spill.take() {
            writer.then_decode_from(n);
        }
        self.larger = None;
        Ok(())
    }

    /// Whether a viewer may be watching: each of the lead's rungs has closed its first
    /// segment.
    fn watched(&self) -> bool {
        let (progress, lead) = self.viewers;
        progress.first_segments_closed(lead).is_some()
    }

    /// Whether the lead, handed pictures up to `n`, falls behind the first viewer there can
    /// be: one who started as the last of the lead's rungs closed its first segment (the
    /// video is playable after that, never before). Until then no one is watching, and the
    /// lead waits on the larger rungs rather than leave them.
    fn behind(&self, n: u64) -> bool {
        let (progress, lead) = self.viewers;
        progress.first_segments_closed(lead).is_some_and(|since| {
            lead_falls_behind((n + 1) as f64 / self.fps, since.elapsed().as_secs_f64(), self.ahead)
        })
    }
}

/// Segments encoded before a run and dropped, to warm up the rate control.
const WARM_UP_SEGMENTS: u64 = 1;

/// How far before a run's first picture the demuxer is sent: it lands on the keyframe at or
/// before that, and the pictures before the run are decoded and dropped.
const SEEK_BEFORE_SECONDS: f64 = 0.5;

/// The time (at the output rate) the rate conversion gives the source's first picture: frame
/// numbers of a run deep in the source count from it, as a whole decode's do.
fn first_picture(job: &Job<'_>, video_index: usize, top: &RungPlan, fps: Fps) -> Result<i64, MediaError> {
    let mut input = probe::open(job.source)?;
    let mut decode = video::Decode::new(&input, video_index, job.probed, top, fps, job.limits)?;
    let first = std::cell::Cell::new(None);
    let mut emit = |picture: frame::Video| {
        first.set(picture.pts());
        Err(MediaError::cancelled("found"))
    };
    for (stream, packet) in input.packets() {
        if stream.index() == video_index {
            match decode.packet(&packet, &mut emit) {
                Ok(()) => {}
                Err(e) if e.kind == MediaErrorKind::Cancelled => break,
                Err(e) => return Err(e),
            }
        }
    }
    if first.get().is_none() {
        let _ = decode.finish(&mut emit);
    }
    first
        .get()
        .ok_or_else(|| MediaError::bad("no video frame of the source could be decoded"))
}

/// Initialises FFmpeg, keeping its own log to fatal errors: bad input is reported once, as
/// the failure's reason, not as a stream of demuxer complaints.
pub(crate) fn init() -> Result<(), MediaError> {
    ffmpeg::init().map_err(|e| MediaError::ffmpeg("FFmpeg did not initialise", e))?;
    ffmpeg::log::set_level(ffmpeg::log::Level::Fatal);
    Ok(())
}

/// The first error that is a cause rather than a consequence of another stage stopping.
fn first_error<T>(outcomes: &[Result<T, MediaError>]) -> Option<MediaError> {
    let errors: Vec<&MediaError> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    errors
        .iter()
        .find(|e| e.kind != MediaErrorKind::Cancelled)
        .or(errors.first())
        .map(|e| (*e).clone())
}

/// Which pictures a decode hands on.
struct Window {
    /// The rate-converted time of the source's first picture, when pictures are counted
    /// from their times (a run of frames); `None`: counted as they come (a whole decode).
    origin: Option<i64>,
    /// The first picture handed to the encoders; those before `from` only warm them up.
    warm_from: u64,
    /// The first picture encoded for good.
    from: u64,
    /// One past the last; `None`: to the end.
    to: Option<u64>,
    segmenter: Segmenter,
}

/// Reads every packet (of a run of frames: until its end), decodes, and hands pictures and
/// audio on. Returns the number of pictures handed on.
#[allow(clippy::too_many_arguments)]
fn feed(
    input: &mut ffmpeg::format::context::Input,
    mut decode: Option<&mut video::Decode>,
    mut audio: Option<(&mut audio::Decode, &SyncSender<frame::Audio>)>,
    audio_index: Option<usize>,
    video_index: usize,
    window: &Window,
    mut thumbnails: Option<&mut thumbs::Thumbnailer>,
    out: &mut Out,
    (cancel, stop, pace): (&AtomicBool, &AtomicBool, Option<&Pace<'_>>),
    (max_frames, limits): (u64, &SourceLimits),
) -> Result<u64, MediaError> {
    let mut counted = 0u64;
    let mut produced = 0u64;
    let ended = std::cell::Cell::new(false);
    let mut emit = |mut picture: frame::Video| -> Result<(), MediaError> {
        let n = match window.origin {
            Some(origin) => match picture.pts().map(|pts| pts - origin) {
                Some(n) if n >= 0 => n as u64,
                _ => return Ok(()),
            },
            None => counted,
        };
        counted += 1;
        if n < window.warm_from {
            return Ok(());
        }
        let warming = n < window.from;
        if window.to.is_some_and(|to| n >= to) {
            ended.set(true);
            return Ok(());
        }
        // The probe's duration can lie (or be absent): the limit holds on what decodes.
        if n >= max_frames {
            return Err(limits.past_duration());
        }
        picture.set_pts(Some(i64::try_from(n).unwrap_or(i64::MAX)));
        picture.set_kind(if window.segmenter.is_boundary(n) {
            picture::Type::I
        } else {
            picture::Type::None
        });
        if !warming {
            if let Some(thumbnails) = thumbnails.as_mut() {
                thumbnails.offer(n, &picture);
            }
            produced += 1;
        }
        // A rung that stopped reports why when joined.
        out.send(n, Arc::new(picture))
    };
    for (stream, packet) in input.packets() {
        if cancel.load(Ordering::Relaxed) || stop.load(Ordering::Relaxed) {
            return Err(MediaError::cancelled("cancelled"));
        }
        if stream.index() == video_index {
            if let Some(decode) = decode.as_mut() {
                decode.packet(&packet, &mut emit)?;
                if ended.get() {
                    break;
                }
            }
        } else if Some(stream.index()) == audio_index {
            if let Some((decoder, tx)) = audio.as_mut() {
                if let (Some(pace), Some(pts)) = (pace, packet.pts()) {
                    pace.wait_audio(pts as f64 * f64::from(stream.time_base()), cancel, stop);
                }
                // Broken audio must not sink the video: the audio track then ends early.
                if decoder.packet(&packet, tx).is_err() {
                    audio = None;
                }
            }
        }
    }
    if !ended.get() {
        if let Some(decode) = decode {
            decode.finish(&mut emit)?;
        }
    }
    if let Some((decoder, tx)) = audio {
        let _ = decoder.finish(tx);
    }
    Ok(produced)
}

/// x264 threads per rung: the machine's cores shared by pixel count, at least one each, so
/// the largest rung does not become the one thread everyone waits for.
fn x264_threads(rungs: &[RungPlan], config: &LadderConfig) -> Vec<usize> {
    if let Some(fixed) = config.x264_threads {
        return vec![fixed.max(1) as usize; rungs.len()];
    }
    let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get) as f64;
    let pixels: Vec<f64> = rungs.iter().map(|r| f64::from(r.width) * f64::from(r.height)).collect();
    let total: f64 = pixels.iter().sum();
    pixels
        .iter()
        .map(|p| ((p / total) * cores * 2.0).round().max(1.0) as usize)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The progress of a 1080p30 encode whose lead is its 480p and 360p rungs (2 and 3).
    fn lead_progress(viewer_may_watch: bool) -> Progress {
        let rungs = plan(&LadderConfig::default(), 1920, 1080, 30.0).expect("plan");
        let progress = Progress::default();
        progress.start(600, &rungs);
        if viewer_may_watch {
            // The lead's rungs have closed their first segments: a viewer may start now.
            progress.set(2, 60, true);
            progress.set(3, 60, true);
        }
        progress
    }

    /// A split at 30 fps that needs the lead 6 s beyond a viewer, the lead being rung 2 on.
    fn split<'a>(
        lead: SyncSender<video::Picture>,
        larger: Option<SyncSender<video::Picture>>,
        start_spill: &'a dyn Fn(SyncSender<video::Picture>) -> Result<spill::Writer<'a>, MediaError>,
        progress: &'a Progress,
    ) -> Split<'a> {
        Split {
            lead,
            through: Vec::new(),
            larger,
            spill: None,
            start_spill,
            fps: 30.0,
            ahead: 6.0,
            viewers: (progress, 2),
        }
    }

    /// A 64×64 picture numbered `n`, marked a keyframe.
    fn picture(n: i64) -> Arc<frame::Video> {
        let mut picture = frame::Video::new(ffmpeg::format::Pixel::YUV420P, 64, 64);
        picture.set_pts(Some(n));
        picture.set_kind(picture::Type::I);
        Arc::new(picture)
    }

    #[test]
    fn the_larger_rungs_thread_and_the_threads_it_starts_take_the_lowest_priority_and_no_other_does() {
        let priority = || rustix::process::getpriority_process(None).expect("getpriority");
        let before = priority();
        let (own, started) = std::thread::spawn(move || {
            lowest_priority();
            (priority(), std::thread::spawn(priority).join().expect("joins"))
        })
        .join()
        .expect("joins");
        assert_eq!((own, started), (LOWEST_PRIORITY, LOWEST_PRIORITY));
        assert_eq!(priority(), before, "the thread that started it keeps its own");
        assert_eq!(std::thread::spawn(priority).join().expect("joins"), before);
    }

    #[test]
    fn the_lead_is_the_rungs_no_taller_than_the_limit_when_larger_ones_remain() {
        let rungs = plan(&LadderConfig::default(), 1920, 1080, 30.0).expect("plan");
        assert_eq!(lead_from(&rungs, 480), Some(2));
        assert_eq!(lead_from(&rungs, 720), Some(1));
        assert_eq!(lead_from(&rungs, 0), None);
        // Nothing larger would remain: no lead.
        assert_eq!(lead_from(&rungs, 1080), None);
        let small = plan(&LadderConfig::default(), 854, 480, 30.0).expect("plan");
        assert_eq!(lead_from(&small, 480), None);
        // Portrait: the short side decides.
        let portrait = plan(&LadderConfig::default(), 1080, 1920, 30.0).expect("plan");
        assert_eq!(lead_from(&portrait, 480), Some(2));
    }

    #[test]
    fn a_source_past_1080p60_gets_no_lead() {
        let rungs = plan(&LadderConfig::default(), 1920, 1080, 60.0).expect("plan");
        let fps = |num| Fps { num, den: 1 };
        assert_eq!(lead_for(&rungs, 480, (1920, 1080), fps(60)), Some(2));
        assert_eq!(lead_for(&rungs, 480, (1920, 1080), fps(30)), Some(2));
        assert_eq!(lead_for(&rungs, 480, (3840, 2160), fps(30)), None);
        assert_eq!(lead_for(&rungs, 480, (2560, 1440), fps(60)), None);
    }

    #[test]
    fn the_lead_buffer_is_a_queue_of_whole_pictures_at_every_larger_rungs_size_up_to_ten_seconds_and_memory_past_it() {
        let rungs = plan(&LadderConfig::default(), 1920, 1080, 30.0).expect("plan");
        // 1080p 4:2:0 is 3,110,400 bytes, 720p 1,382,400: 4,492,800 a picture with both.
        let (picture, mib) = (4_492_800u64, 1u64 << 20);
        // 1 GiB: 238 pictures (7.9 s at 30 fps), all in the queue, and 4,455,424 bytes left:
        // less than a picture.
        assert_eq!(lead_queue(1024, &rungs[..2], 30.0), (238, 1024 * mib - 238 * picture));
        // 11 GiB: a queue of 10 s, the rest for pictures waiting past it.
        assert_eq!(
            lead_queue(11 * 1024, &rungs[..2], 30.0),
            (300, 11 * 1024 * mib - 300 * picture)
        );
        assert_eq!(lead_queue(11 * 1024, &rungs[..2], 60.0).0, 600);
        // The top rung alone (the lead starts at 720p).
        assert_eq!(lead_queue(1024, &rungs[..1], 30.0).0, 300);
        assert_eq!(lead_queue(1024, &rungs[..1], 25.0).0, 250);
        // Less than a picture still queues one.
        assert_eq!(lead_queue(1, &rungs[..2], 30.0), (1, 0));
    }

    #[test]
    fn no_viewer_is_behind_the_lead_before_each_of_its_rungs_has_closed_a_segment() {
        let progress = lead_progress(false);
        let (lead, _lead_rx) = sync_channel(1);
        let no_spill = |_: SyncSender<video::Picture>| Err(MediaError::internal("no spill"));
        let split = split(lead, None, &no_spill, &progress);
        // However little the lead has been handed, no one can be watching yet: the larger
        // rungs keep the one decode.
        assert!(!split.behind(0));
        progress.set(2, 60, true);
        progress.set(0, 60, true);
        assert!(!split.behind(0), "360p has not closed a segment");
        progress.set(3, 60, true);
        // Now a viewer may have started: the lead needs 6 s beyond one who just did.
        assert!(split.behind(0));
        assert!(split.behind(30 * 5));
        assert!(!split.behind(30 * 7));
    }

    #[test]
    fn a_spill_that_cannot_write_gives_the_larger_rungs_a_decode_of_their_own_not_a_failure() {
        init().expect("ffmpeg");
        let progress = lead_progress(true);
        // The spill's folder is under a file: it cannot be made.
        let file = std::env::temp_dir().join(format!("vodsource-not-a-folder-{}", std::process::id()));
        std::fs::write(&file, b"").expect("writes");
        let under_a_file = file.join("out");
        let spill = spill::Spill::new(0, 1 << 30);
        let start_spill = |_: SyncSender<video::Picture>| -> Result<spill::Writer<'_>, MediaError> {
            Ok(spill::Writer::new(&spill, &under_a_file))
        };
        let (lead, lead_rx) = sync_channel(4);
        let (larger, larger_rx) = sync_channel(1);
        let mut split = split(lead, Some(larger), &start_spill, &progress);
        split
            .send(0, picture(0))
            .expect("the larger rungs' queue takes the first");
        // The queue is full and the lead behind: the spill fails to write, and the encode goes
        // on with the larger rungs' own decode from picture 1.
        split.send(1, picture(1)).expect("not a failure");
        assert!(split.larger.is_none() && split.spill.is_none());
        drop(split);
        assert_eq!(
            spill.relay(&sync_channel(1).0, (&AtomicBool::new(false), &AtomicBool::new(false))),
            Ok(Some(1))
        );
        assert_eq!((lead_rx.try_iter().count(), larger_rx.try_iter().count()), (2, 1));
        let _ = std::fs::remove_file(&file);
    }

    #[test]
    fn the_lead_scales_from_the_larger_rungs_last_size_and_they_take_those_sizes_with_the_picture_unless_it_waits_on_disk(
    ) {
        init().expect("ffmpeg");
        let progress = lead_progress(true);
        let dir = std::env::temp_dir().join(format!("vodsource-through-{}", std::process::id()));
        let spill = spill::Spill::new(0, 1 << 30);
        let start_spill = |_: SyncSender<video::Picture>| -> Result<spill::Writer<'_>, MediaError> {
            Ok(spill::Writer::new(&spill, &dir))
        };
        let (lead, lead_rx) = sync_channel(8);
        let (larger, larger_rx) = sync_channel(1);
        let mut split = split(lead, Some(larger.clone()), &start_spill, &progress);
        // A 64×64 top rung, then 48×48 and 32×32 larger rungs: the lead's first rung scales
        // from 32×32, as it would in the whole ladder's chain.
        split.through = vec![video::ScaleTo::new(48, 48), video::ScaleTo::new(32, 32)];
        let size = |p: &frame::Video| (p.width(), p.height(), p.pts(), p.kind());
        split.send(0, picture(0)).expect("queued");
        let queued = larger_rx.try_recv().expect("the larger rungs' queue took it");
        let for_lead = lead_rx.try_recv().expect("the lead took it");
        assert_eq!(size(&queued.frame), (64, 64, Some(0), picture::Type::I));
        assert_eq!(
            queued.smaller.iter().map(|p| size(p)).collect::<Vec<_>>(),
            [(48, 48, Some(0), picture::Type::I), (32, 32, Some(0), picture::Type::I)]
        );
        assert_eq!(size(&for_lead.frame), (32, 32, Some(0), picture::Type::I));
        assert!(for_lead.smaller.is_empty());
        assert!(
            Arc::ptr_eq(&for_lead.frame, &queued.smaller[1]),
            "the lead's picture is the one the larger rungs take, scaled once"
        );
        // The queue full and the lead behind: the picture waits on disk at the top rung's size
        // alone, and comes back without the smaller ones (the larger rungs scale them again).
        split.send(1, picture(1)).expect("queued");
        split.send(2, picture(2)).expect("spilled");
        drop(split);
        drop(larger);
        // The writer is done: the relay hands on what waits and ends.
        let (relay_to, relayed_rx) = sync_channel(4);
        let (cancel, halt) = (AtomicBool::new(false), AtomicBool::new(false));
        assert_eq!(spill.relay(&relay_to, (&cancel, &halt)), Ok(None));
        let back = relayed_rx
            .try_iter()
            .map(|p: video::Picture| (size(&p.frame), p.smaller.len()))
            .collect::<Vec<_>>();
        assert_eq!(back, [((64, 64, Some(2), picture::Type::I), 0)]);
        assert_eq!(lead_rx.try_iter().count(), 2, "the lead took 1 and 2 first");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn until_a_viewer_may_watch_the_larger_rungs_take_the_picture_alone_and_the_leads_sizes_are_written_again() {
        init().expect("ffmpeg");
        let progress = lead_progress(false);
        let no_spill = |_: SyncSender<video::Picture>| -> Result<spill::Writer<'_>, MediaError> {
            Err(MediaError::internal("no spill before a viewer"))
        };
        let (lead, lead_rx) = sync_channel(8);
        let (larger, larger_rx) = sync_channel(8);
        let mut split = split(lead, Some(larger), &no_spill, &progress);
        split.through = vec![video::ScaleTo::new(48, 48), video::ScaleTo::new(32, 32)];
        split.send(0, picture(0)).expect("queued");
        let queued = larger_rx.try_recv().expect("the larger rungs' queue took it");
        assert_eq!((queued.frame.width(), queued.frame.pts()), (64, Some(0)));
        assert!(queued.smaller.is_empty(), "the larger rungs scale it again");
        let first: video::Picture = lead_rx.try_recv().expect("the lead took it");
        assert_eq!((first.frame.width(), first.frame.pts()), (32, Some(0)));
        let memory = first.frame.data(0).as_ptr();
        // The lead done with picture 0: picture 1 is scaled into its memory.
        drop(first);
        split.send(1, picture(1)).expect("queued");
        let second = lead_rx.try_recv().expect("the lead took it");
        assert_eq!((second.frame.width(), second.frame.pts()), (32, Some(1)));
        assert_eq!(
            second.frame.data(0).as_ptr(),
            memory,
            "picture 0's memory, written again"
        );
        // Once a viewer may watch, the larger rungs take the sizes made for the lead.
        progress.set(2, 60, true);
        progress.set(3, 60, true);
        split.send(2, picture(2)).expect("queued");
        let queued = larger_rx.try_iter().last().expect("queued");
        assert_eq!(
            queued.smaller.iter().map(|p| (p.width(), p.pts())).collect::<Vec<_>>(),
            [(48, Some(2)), (32, Some(2))]
        );
    }

    #[test]
    fn a_picture_is_written_again_once_every_holder_dropped_it_and_a_burst_gives_its_memory_back() {
        init().expect("ffmpeg");
        let mut scale = video::ScaleTo::new(32, 32);
        let first = scale.run(&picture(0)).expect("scales");
        let memory = first.data(0).as_ptr();
        let held = Arc::clone(&first);
        drop(first);
        let second = scale.run(&picture(1)).expect("scales");
        assert_ne!(second.data(0).as_ptr(), memory, "picture 0 is still held");
        drop(held);
        let third = scale.run(&picture(2)).expect("scales");
        assert_eq!(third.data(0).as_ptr(), memory, "picture 0's memory, written again");
        assert_eq!(
            (third.width(), third.pts(), third.kind()),
            (32, Some(2), picture::Type::I)
        );
        drop((second, third));

        // Taken again, a picture no one holds is the one kept (its properties the last use's),
        // a held one is not.
        let mut buffers = video::Buffers::default();
        let mut marked = buffers.take(ffmpeg::format::Pixel::YUV420P, 16, 16);
        marked.set_pts(Some(42));
        let handed = buffers.hand_out(marked);
        assert_eq!(
            buffers.take(ffmpeg::format::Pixel::YUV420P, 16, 16).pts(),
            None,
            "held: a new one"
        );
        drop(handed);
        assert_eq!(
            buffers.take(ffmpeg::format::Pixel::YUV420P, 16, 16).pts(),
            Some(42),
            "the one kept"
        );

        let mut buffers = video::Buffers::default();
        let new = |buffers: &mut video::Buffers| {
            let picture = buffers.take(ffmpeg::format::Pixel::YUV420P, 16, 16);
            buffers.hand_out(picture)
        };
        let burst = (0..40).map(|_| new(&mut buffers)).collect::<Vec<_>>();
        assert_eq!(buffers.kept(), 40);
        drop(burst);
        for _ in 0..40 {
            drop(new(&mut buffers));
        }
        assert_eq!(
            buffers.kept(),
            video::SPARE_PICTURES + 1,
            "a take drops a spare past the spares kept"
        );
    }

    #[test]
    fn pictures_follow_the_spilled_ones_to_disk_while_the_lead_is_behind_and_wait_in_memory_once_it_can_wait() {
        init().expect("ffmpeg");
        // A viewer may be watching from now: the lead needs 6 s (180 pictures) beyond them.
        let progress = lead_progress(true);
        let dir = std::env::temp_dir().join(format!("vodsource-split-{}", std::process::id()));
        let spill = spill::Spill::new(0, 1 << 30);
        let start_spill = |_: SyncSender<video::Picture>| -> Result<spill::Writer<'_>, MediaError> {
            Ok(spill::Writer::new(&spill, &dir))
        };
        let (lead, lead_rx) = sync_channel(8);
        let (larger, larger_rx) = sync_channel(1);
        let (cancel, halt) = (AtomicBool::new(false), AtomicBool::new(false));
        let (relayed, taken) = std::thread::scope(|scope| {
            let relay_to = larger.clone();
            let spill = &spill;
            let (cancel, halt) = (&cancel, &halt);
            let relay = scope.spawn(move || spill.relay(&relay_to, (cancel, halt)));
            let mut split = split(lead, Some(larger), &start_spill, &progress);
            split.send(0, picture(0)).expect("queued");
            // The queue is full (nothing takes from it yet) and the lead behind: to disk.
            split.send(1, picture(1)).expect("spilled");
            // 1 is still on disk (the queue holds 0) and the lead is behind: this one follows
            // it there rather than wait.
            split.send(2, picture(2)).expect("spilled");
            assert!(spill.pending());
            let taker = scope.spawn(move || larger_rx.iter().map(|p| p.frame.pts()).collect::<Vec<_>>());
            // Far ahead of any viewer: the lead can wait for the relay to hand on 1 and 2,
            // and this one goes to the queue itself.
            split.send(1000, picture(1000)).expect("queued");
            drop(split);
            let relayed = relay.join().expect("relay joins");
            (relayed, taker.join().expect("taker joins"))
        });
        assert_eq!(relayed, Ok(None), "the spill never ran out of budget");
        assert_eq!(taken, [Some(0), Some(1), Some(2), Some(1000)], "in order");
        let spilled = spill.spilled().expect("something was spilled");
        assert_eq!((spilled.from, spilled.pictures), (1, 2), "1000 did not go to disk");
        assert_eq!(lead_rx.try_iter().count(), 4, "the lead took every picture first");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_lead_falls_behind_when_what_it_was_handed_is_less_than_the_slack_past_a_viewer() {
        // A viewer who started `elapsed` ago is there; 6 s are needed beyond that.
        assert!(!lead_falls_behind(11.5, 3.0, 6.0));
        assert!(lead_falls_behind(8.9, 3.0, 6.0));
        // The boundary, either side.
        assert!(!lead_falls_behind(9.0, 3.0, 6.0));
        assert!(lead_falls_behind(8.999, 3.0, 6.0));
        // The larger rungs slower than real time: 11.5 s ahead at first, gaining 0.1 s a second
        // on the viewer's clock, the lead falls behind after 55 s.
        let lead = |t: f64| 11.5 + 0.9 * t;
        assert!(!lead_falls_behind(lead(54.0), 54.0, 6.0));
        assert!(lead_falls_behind(lead(56.0), 56.0, 6.0));
    }
}
