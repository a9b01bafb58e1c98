//! The transcode: one decode of the source feeds every rung. The decode thread demuxes,
//! decodes, turns the picture upright, converts to a constant frame rate and scales once to
//! the top rung; each rung runs on its own thread, scales from the next larger rung (not
//! from the source), hands its picture down the ladder, and encodes and packages itself.
//! Audio is resampled and encoded on a thread of its own.

mod audio;
mod error;
pub mod limits;
pub mod package;
pub mod probe;
mod progress;
mod thumbs;
mod track;
mod video;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;

use ffmpeg::media::Type as MediaType;
use ffmpeg::{frame, picture};
use ffmpeg_next as ffmpeg;

pub use error::{MediaError, MediaErrorKind};
pub use probe::{probe, Probed};
pub use progress::{Progress, ProgressSnapshot};

use crate::ladder::{plan, Fps, LadderConfig, RungPlan, Segmenter};
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

/// Decodes the source once and writes the whole ladder, packaged, into `job.out_dir`.
///
/// # Errors
/// `Source` for media that cannot make a ladder (with the reason), `Io`/`Internal` for
/// failures another attempt may not meet, `Cancelled` when `job.cancel` was set.
pub fn transcode(job: &Job<'_>) -> Result<Packaged, MediaError> {
    init()?;
    job.limits.check_probe(&job.probed.probe)?;
    let config = job.config;
    let fps = Fps::choose(job.probed.probe.frame_rate, config.max_fps);
    let rungs = plan(
        config,
        job.probed.display_width,
        job.probed.display_height,
        fps.as_f64(),
    )?;
    let segmenter = Segmenter::new(config.segment_seconds, fps);
    let duration_s = job.probed.probe.duration_ms as f64 / 1000.0;
    let expected_frames = (duration_s * fps.as_f64()).round() as u64;
    job.progress.start(expected_frames, &rungs);

    let mut input = probe::open(job.source)?;
    let video_index = input
        .streams()
        .best(MediaType::Video)
        .map(|s| s.index())
        .ok_or_else(|| MediaError::bad("the source has no video stream"))?;
    let audio_index = job
        .probed
        .has_audio
        .then(|| input.streams().best(MediaType::Audio).map(|s| s.index()))
        .flatten();
    let mut decode = video::Decode::new(&input, video_index, job.probed, &rungs[0], fps, job.limits)?;
    let mut audio_decode = match audio_index {
        Some(index) => audio::Decode::new(&input, index, decode.start_seconds()).ok(),
        None => None,
    };
    let mut thumbnails = thumbs::Thumbnailer::new(&rungs[0], fps, duration_s);

    let threads = x264_threads(&rungs, config);
    std::thread::scope(|scope| -> Result<Packaged, MediaError> {
        // The chain: decode → rung 0 → rung 1 → … ; each rung forwards its picture down.
        let mut handles = Vec::new();
        let (first_tx, mut rx) = sync_channel::<Arc<frame::Video>>(QUEUE);
        for (i, rung) in rungs.iter().enumerate() {
            let (next_tx, next_rx) = sync_channel::<Arc<frame::Video>>(QUEUE);
            let next = (i + 1 < rungs.len()).then_some(next_tx);
            let encode = video::RungEncode {
                plan: rung.clone(),
                dir: job.out_dir.join(&rung.name),
                fps,
                keyint: segmenter.max_frames(),
                segment_seconds: config.segment_seconds,
                preset: config.preset.clone(),
                threads: threads[i],
            };
            let progress = job.progress;
            let input_rx = std::mem::replace(&mut rx, next_rx);
            handles.push(scope.spawn(move || encode.run(input_rx, next, |frames| progress.set(i, frames))));
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

        let fed = feed(
            &mut input,
            &mut decode,
            audio_decode.as_mut().zip(audio_tx.as_ref()),
            audio_index,
            video_index,
            &segmenter,
            &mut thumbnails,
            &first_tx,
            job.cancel,
            (job.limits.max_frames(fps.as_f64()), job.limits),
        );
        drop(first_tx);
        drop(audio_tx);
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
        if job.cancel.load(Ordering::Relaxed) {
            return Err(MediaError::cancelled("cancelled"));
        }
        // A stage that failed is the cause; the feed then only saw its channel close.
        if let Some(error) = first_error(&outcomes) {
            return Err(error);
        }
        let frames = fed?;
        let done: Vec<video::RungDone> = outcomes.drain(..).filter_map(Result::ok).collect();
        if frames == 0 {
            return Err(MediaError::bad("no video frame of the source could be decoded"));
        }
        let encoded_s = frames as f64 / fps.as_f64();
        if duration_s > 2.0 && encoded_s < duration_s * 0.75 {
            return Err(MediaError::bad(format!(
                "the source's video ends at {encoded_s:.1} s of a declared {duration_s:.1} s; the file looks truncated or damaged"
            )));
        }
        let audio = match audio_done {
            Some(Ok(done)) => Some(done),
            Some(Err(e)) => return Err(e),
            None => None,
        };
        job.progress.packaging();
        package::package(
            job.out_dir,
            &rungs,
            &done,
            audio.as_ref(),
            fps,
            config.segment_seconds,
            thumbnails,
            encoded_s,
        )
    })
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

/// Reads every packet, decodes, and hands pictures and audio on. Returns the number of
/// pictures produced at the output rate.
#[allow(clippy::too_many_arguments)]
fn feed(
    input: &mut ffmpeg::format::context::Input,
    decode: &mut video::Decode,
    mut audio: Option<(&mut audio::Decode, &SyncSender<frame::Audio>)>,
    audio_index: Option<usize>,
    video_index: usize,
    segmenter: &Segmenter,
    thumbnails: &mut thumbs::Thumbnailer,
    out: &SyncSender<Arc<frame::Video>>,
    cancel: &AtomicBool,
    (max_frames, limits): (u64, &SourceLimits),
) -> Result<u64, MediaError> {
    let mut produced = 0u64;
    let mut emit = |mut picture: frame::Video| -> Result<(), MediaError> {
        // The probe's duration can lie (or be absent): the limit holds on what decodes.
        if produced >= max_frames {
            return Err(limits.past_duration());
        }
        picture.set_pts(Some(i64::try_from(produced).unwrap_or(i64::MAX)));
        picture.set_kind(if segmenter.is_boundary(produced) {
            picture::Type::I
        } else {
            picture::Type::None
        });
        thumbnails.offer(produced, &picture);
        produced += 1;
        // A rung that stopped reports why when joined.
        out.send(Arc::new(picture))
            .map_err(|_| MediaError::cancelled("cancelled"))
    };
    for (stream, packet) in input.packets() {
        if cancel.load(Ordering::Relaxed) {
            return Err(MediaError::cancelled("cancelled"));
        }
        if stream.index() == video_index {
            decode.packet(&packet, &mut emit)?;
        } else if Some(stream.index()) == audio_index {
            if let Some((decoder, tx)) = audio.as_mut() {
                // Broken audio must not sink the video: the audio track then ends early.
                if decoder.packet(&packet, tx).is_err() {
                    audio = None;
                }
            }
        }
    }
    decode.finish(&mut emit)?;
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
