//! What a source is: container, streams, size, rotation, frame rate and whether it varies.

use std::path::Path;

use ffmpeg::codec::packet::side_data::Type as SideDataType;
use ffmpeg::media::Type as MediaType;
use ffmpeg_next as ffmpeg;
use vodsource_domain::SourceProbe;

use super::MediaError;
use crate::ladder::display_size;

/// How many video packets are read to measure the frame rate's regularity.
const RATE_SAMPLE_PACKETS: usize = 300;

/// A probed source.
#[derive(Debug, Clone)]
pub struct Probed {
    /// What the `SourceProbed` event reports.
    pub probe: SourceProbe,
    /// Display width after sample aspect ratio and rotation.
    pub display_width: u32,
    /// Display height after sample aspect ratio and rotation.
    pub display_height: u32,
    /// Whether there is an audio stream to encode.
    pub has_audio: bool,
}

/// Opens `path` and describes it.
///
/// # Errors
/// A [`MediaError`] whose message says, in words a person understands, why the file is not a
/// video that can be encoded: empty, not media, truncated, no video stream.
pub fn probe(path: &Path) -> Result<Probed, MediaError> {
    let size = std::fs::metadata(path)
        .map_err(|e| MediaError::io(format!("cannot read the source: {e}")))?
        .len();
    if size == 0 {
        return Err(MediaError::bad("the source file is empty (0 bytes)"));
    }
    super::init()?;
    let mut input = open(path)?;
    let (index, codec_name, width, height, sar, rotation, declared_rate, avg_rate, time_base) = {
        let stream = input.streams().best(MediaType::Video).ok_or_else(|| {
            let audio = input.streams().best(MediaType::Audio).is_some();
            MediaError::bad(if audio {
                "the source has only audio; a video stream is required"
            } else {
                "the source has no video stream"
            })
        })?;
        let parameters = stream.parameters();
        let decoder = ffmpeg::codec::context::Context::from_parameters(parameters)
            .and_then(|c| c.decoder().video())
            .map_err(|e| MediaError::bad(format!("the video stream cannot be decoded: {e}")))?;
        let codec_name = decoder.codec().map(|c| c.name().to_owned());
        let aspect = decoder.aspect_ratio();
        (
            stream.index(),
            codec_name,
            decoder.width(),
            decoder.height(),
            (aspect.numerator(), aspect.denominator()),
            rotation_of(&stream),
            rational(stream.rate()),
            rational(stream.avg_frame_rate()),
            stream.time_base(),
        )
    };
    if width == 0 || height == 0 {
        return Err(MediaError::bad(
            "the video stream has no picture size; the file may be damaged",
        ));
    }
    let audio_codec = input
        .streams()
        .best(MediaType::Audio)
        .and_then(|s| ffmpeg::codec::context::Context::from_parameters(s.parameters()).ok())
        .and_then(|c| c.decoder().audio().ok())
        .and_then(|d| d.codec().map(|c| c.name().to_owned()));
    let has_audio = audio_codec.is_some();
    let duration_us = input.duration();
    let (measured_rate, variable) = measure_rate(&mut input, index, time_base);
    if duration_us <= 0 && measured_rate.is_none() {
        return Err(MediaError::bad("the source has no readable video frames"));
    }
    let frame_rate = avg_rate.or(measured_rate).or(declared_rate).unwrap_or(30.0);
    let (display_width, display_height) = display_size(width, height, sar, rotation);
    Ok(Probed {
        probe: SourceProbe {
            duration_ms: u64::try_from(duration_us.max(0) / 1000).unwrap_or(0),
            width,
            height,
            rotation,
            frame_rate: (frame_rate * 1000.0).round() / 1000.0,
            variable_frame_rate: variable,
            video_codec: codec_name,
            audio_codec,
        },
        display_width,
        display_height,
        has_audio,
    })
}

/// The containers a source may be in. Uploads are untrusted: playlist and list formats (HLS,
/// DASH, concat, image sequences) would make FFmpeg open other files or URLs named inside the
/// upload, a known way to read a server's local files into a video. Only self-contained media
/// containers are probed, and only through the `file` protocol.
const CONTAINERS: &str = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,flv,mpegts,mpeg,mxf,asf,ogg,\
nut,m4v,h264,hevc,mjpeg,gif,mp3,aac,wav,flac,ivf,obu,yuv4mpegpipe";

/// Opens a source, turning FFmpeg's terse errors into reasons.
pub(super) fn open(path: &Path) -> Result<ffmpeg::format::context::Input, MediaError> {
    let mut options = ffmpeg::Dictionary::new();
    options.set("format_whitelist", CONTAINERS);
    options.set("protocol_whitelist", "file");
    ffmpeg::format::input_with_dictionary(&path, options).map_err(|e| match e {
        // EINVAL: the content looks like a format that is not on the list above.
        ffmpeg::Error::InvalidData | ffmpeg::Error::Other { errno: ffmpeg::error::EINVAL } => MediaError::bad(
            "the source is not a media file FFmpeg can read (or its index, such as an MP4's moov box, is missing because the upload was cut short)",
        ),
        ffmpeg::Error::Eof => MediaError::bad("the source ends before its first frame; it looks truncated"),
        other => MediaError::bad(format!("the source cannot be opened: {other}")),
    })
}

fn rational(r: ffmpeg::Rational) -> Option<f64> {
    (r.numerator() > 0 && r.denominator() > 0).then(|| f64::from(r.numerator()) / f64::from(r.denominator()))
}

/// Display rotation in degrees clockwise (0, 90, 180, 270), from the stream's display matrix.
fn rotation_of(stream: &ffmpeg::format::stream::Stream) -> i32 {
    for side in stream.side_data() {
        if side.kind() != SideDataType::DisplayMatrix {
            continue;
        }
        let data = side.data();
        if data.len() < 36 {
            continue;
        }
        let at = |i: usize| {
            let bytes = [data[i * 4], data[i * 4 + 1], data[i * 4 + 2], data[i * 4 + 3]];
            f64::from(i32::from_ne_bytes(bytes)) / 65536.0
        };
        let (a, b, c, d) = (at(0), at(1), at(3), at(4));
        let (sx, sy) = (a.hypot(c), b.hypot(d));
        if sx == 0.0 || sy == 0.0 {
            continue;
        }
        // av_display_rotation_get is counter-clockwise; players turn the picture clockwise by this.
        let ccw = -(b / sy).atan2(a / sx).to_degrees();
        let clockwise = (-ccw).round() as i32;
        return (clockwise.rem_euclid(360) + 45) / 90 * 90 % 360;
    }
    0
}

/// Reads the first packets of the video stream: the frame rate from their spacing, and
/// whether the spacing varies by more than 5% (variable frame rate).
fn measure_rate(
    input: &mut ffmpeg::format::context::Input,
    index: usize,
    time_base: ffmpeg::Rational,
) -> (Option<f64>, bool) {
    let mut pts: Vec<i64> = Vec::with_capacity(RATE_SAMPLE_PACKETS);
    for (stream, packet) in input.packets() {
        if stream.index() != index {
            continue;
        }
        if let Some(p) = packet.pts().or(packet.dts()) {
            pts.push(p);
        }
        if pts.len() >= RATE_SAMPLE_PACKETS {
            break;
        }
    }
    pts.sort_unstable();
    pts.dedup();
    let deltas: Vec<i64> = pts.windows(2).map(|w| w[1] - w[0]).filter(|d| *d > 0).collect();
    if deltas.is_empty() {
        return (None, false);
    }
    let seconds = f64::from(time_base.numerator()) / f64::from(time_base.denominator().max(1));
    let mean = deltas.iter().sum::<i64>() as f64 / deltas.len() as f64;
    let (min, max) = deltas
        .iter()
        .fold((i64::MAX, i64::MIN), |(lo, hi), d| (lo.min(*d), hi.max(*d)));
    let variable = (max - min) as f64 > mean * 0.05 && max - min > 1;
    (Some(1.0 / (mean * seconds)), variable)
}
