//! Video: decoding to upright constant-rate pictures at the top rung's size, and one rung's
//! scale → encode (x264) → package (HLS fMP4) thread.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;

use ffmpeg::codec::threading::{Config as Threading, Type as ThreadingType};
use ffmpeg::format::Pixel;
use ffmpeg::software::scaling::{Context as Scaler, Flags as ScaleFlags};
use ffmpeg::{codec, encoder, filter, frame, Dictionary, Packet, Rational};
use ffmpeg_next as ffmpeg;

use super::probe::Probed;
use super::{track, MediaError};
use crate::ladder::{Fps, RungPlan};
use crate::media::limits::SourceLimits;

/// Decoder plus the filter graph that makes the top rung's pictures: constant frame rate,
/// rotation applied, scaled to the top rung, 8-bit 4:2:0.
pub(super) struct Decode {
    decoder: ffmpeg::decoder::Video,
    graph: filter::Graph,
    errors: u64,
    decoded: u64,
    /// The last decoded frame's time and duration (stream time base): the stream ends at
    /// their sum, so the rate conversion keeps the last frame.
    last: Option<(i64, i64)>,
    limits: SourceLimits,
}

impl Decode {
    pub(super) fn new(
        input: &ffmpeg::format::context::Input,
        index: usize,
        probed: &Probed,
        top: &RungPlan,
        fps: Fps,
        limits: &SourceLimits,
    ) -> Result<Self, MediaError> {
        let stream = input
            .stream(index)
            .ok_or_else(|| MediaError::bad("the source has no video stream"))?;
        let time_base = stream.time_base();
        let mut context = codec::context::Context::from_parameters(stream.parameters())
            .map_err(|e| MediaError::bad(format!("the video stream cannot be decoded: {e}")))?;
        context.set_threading(Threading {
            kind: ThreadingType::Frame,
            count: 0,
            ..Threading::default()
        });
        let decoder = context
            .decoder()
            .video()
            .map_err(|e| MediaError::bad(format!("the video stream cannot be decoded: {e}")))?;
        let mut graph = filter::Graph::new();
        let sar = decoder.aspect_ratio();
        let sar = if sar.numerator() > 0 && sar.denominator() > 0 {
            sar
        } else {
            Rational(1, 1)
        };
        let args = format!(
            "video_size={}x{}:pix_fmt={}:time_base={}/{}:pixel_aspect={}/{}",
            decoder.width(),
            decoder.height(),
            ffmpeg::ffi::AVPixelFormat::from(decoder.format()) as i32,
            time_base.numerator(),
            time_base.denominator().max(1),
            sar.numerator(),
            sar.denominator(),
        );
        let internal = |e: ffmpeg::Error| MediaError::internal(format!("video filter graph: {e}"));
        let buffer = filter::find("buffer").ok_or_else(|| MediaError::internal("no buffer filter"))?;
        let sink = filter::find("buffersink").ok_or_else(|| MediaError::internal("no buffersink filter"))?;
        graph.add(&buffer, "in", &args).map_err(internal)?;
        graph.add(&sink, "out", "").map_err(internal)?;
        graph
            .get("out")
            .ok_or_else(|| MediaError::internal("no sink"))?
            .set_pixel_format(Pixel::YUV420P);
        let turn = match probed.probe.rotation {
            90 => "transpose=clock,",
            180 => "hflip,vflip,",
            270 => "transpose=cclock,",
            _ => "",
        };
        let spec = format!(
            "fps=fps={}/{}:round=near,{turn}scale={}:{}:flags=bicubic,format=yuv420p,setsar=1",
            fps.num, fps.den, top.width, top.height
        );
        graph
            .output("in", 0)
            .and_then(|p| p.input("out", 0))
            .and_then(|p| p.parse(&spec))
            .map_err(internal)?;
        graph.validate().map_err(internal)?;
        Ok(Self {
            decoder,
            graph,
            errors: 0,
            decoded: 0,
            last: None,
            limits: limits.clone(),
        })
    }

    pub(super) fn packet(
        &mut self,
        packet: &Packet,
        emit: &mut impl FnMut(frame::Video) -> Result<(), MediaError>,
    ) -> Result<(), MediaError> {
        match self.decoder.send_packet(packet) {
            Ok(()) => {}
            // A damaged packet: skip it like a player would, unless nothing decodes at all.
            Err(ffmpeg::Error::InvalidData) => {
                self.errors += 1;
                if self.errors > 100 && self.decoded == 0 {
                    return Err(MediaError::bad("the video stream is damaged: no frame decodes"));
                }
                return Ok(());
            }
            Err(e) => return Err(MediaError::bad(format!("the video stream cannot be decoded: {e}"))),
        }
        self.drain(emit)
    }

    pub(super) fn finish(
        &mut self,
        emit: &mut impl FnMut(frame::Video) -> Result<(), MediaError>,
    ) -> Result<(), MediaError> {
        let _ = self.decoder.send_eof();
        self.drain(emit)?;
        if let Some(mut source) = self.graph.get("in") {
            let end = self
                .last
                .map_or(0, |(pts, duration)| pts.saturating_add(duration.max(1)));
            source
                .source()
                .close(end)
                .map_err(|e| MediaError::internal(format!("video filter flush: {e}")))?;
        }
        self.pull(emit)
    }

    fn drain(&mut self, emit: &mut impl FnMut(frame::Video) -> Result<(), MediaError>) -> Result<(), MediaError> {
        let mut decoded = frame::Video::empty();
        while self.decoder.receive_frame(&mut decoded).is_ok() {
            self.decoded += 1;
            self.limits.check_picture(decoded.width(), decoded.height())?;
            let timestamp = decoded.timestamp();
            decoded.set_pts(timestamp);
            if let Some(pts) = timestamp {
                let duration = match (decoded.packet().duration, self.last) {
                    (d, _) if d > 0 => d,
                    (_, Some((before, _))) if pts > before => pts - before,
                    (_, last) => last.map_or(0, |l| l.1),
                };
                self.last = Some((pts, duration));
            }
            let mut source = self.graph.get("in").ok_or_else(|| MediaError::internal("no source"))?;
            source
                .source()
                .add(&decoded)
                .map_err(|e| MediaError::bad(format!("a video frame cannot be converted: {e}")))?;
            self.pull(emit)?;
        }
        Ok(())
    }

    fn pull(&mut self, emit: &mut impl FnMut(frame::Video) -> Result<(), MediaError>) -> Result<(), MediaError> {
        let mut sink = self.graph.get("out").ok_or_else(|| MediaError::internal("no sink"))?;
        loop {
            let mut picture = frame::Video::empty();
            if sink.sink().frame(&mut picture).is_err() {
                return Ok(());
            }
            emit(picture)?;
        }
    }
}

/// Seconds at which stream `index` of `input` starts (0 when the container does not say).
pub(super) fn stream_start(input: &ffmpeg::format::context::Input, index: usize) -> f64 {
    match input.stream(index) {
        Some(stream) if stream.start_time() != ffmpeg::ffi::AV_NOPTS_VALUE => {
            stream.start_time() as f64 * f64::from(stream.time_base())
        }
        _ => 0.0,
    }
}

/// A picture on its way down a chain of rungs (largest first): the picture at the size of the
/// rung that takes it or larger, and the same picture already scaled to the sizes of rungs
/// further down, largest first, where the decode made them on the way (the pictures it hands a
/// lead are scaled through the larger rungs' sizes, as the whole ladder scales them; the
/// larger rungs get those with the top rung's and scale nothing twice).
pub(super) struct Picture {
    pub(super) frame: Arc<frame::Video>,
    pub(super) smaller: Vec<Arc<frame::Video>>,
}

impl From<Arc<frame::Video>> for Picture {
    fn from(frame: Arc<frame::Video>) -> Self {
        Self {
            frame,
            smaller: Vec::new(),
        }
    }
}

/// Scales pictures to one size (bicubic, 8-bit 4:2:0), as every rung of a chain scales from the
/// next larger one; a picture already that size is passed on as it is.
pub(super) struct ScaleTo {
    width: u32,
    height: u32,
    scaler: Option<Scaler>,
    buffers: Buffers,
}

impl ScaleTo {
    pub(super) fn new(width: u32, height: u32) -> Self {
        Self {
            width,
            height,
            scaler: None,
            buffers: Buffers::default(),
        }
    }

    /// Whether `picture` is already this size.
    pub(super) fn fits(&self, picture: &frame::Video) -> bool {
        picture.width() == self.width && picture.height() == self.height
    }

    /// `source` at this size, with its time and picture type.
    pub(super) fn run(&mut self, source: &Arc<frame::Video>) -> Result<Arc<frame::Video>, ffmpeg::Error> {
        if self.fits(source) {
            return Ok(Arc::clone(source));
        }
        let scaler = match self.scaler.as_mut() {
            Some(scaler) => scaler,
            None => self.scaler.insert(Scaler::get(
                source.format(),
                source.width(),
                source.height(),
                Pixel::YUV420P,
                self.width,
                self.height,
                ScaleFlags::BICUBIC,
            )?),
        };
        let mut scaled = self.buffers.take(Pixel::YUV420P, self.width, self.height);
        scaler.run(source, &mut scaled)?;
        scaled.set_pts(source.pts());
        scaled.set_kind(source.kind());
        Ok(self.buffers.hand_out(scaled))
    }
}

/// The pictures one thread makes at one size, each written again once every stage it was
/// handed to has dropped it. Memory the process has touched costs nothing to write again; a
/// new picture costs a page fault and the zeroing of each of its pages at the first touch
/// (more on a virtual machine whose host has to back the pages first), and the allocator
/// hands freed pictures back to the system as it likes.
#[derive(Default)]
pub(super) struct Buffers {
    /// Every picture handed out and kept, the oldest first.
    made: VecDeque<Arc<frame::Video>>,
}

/// Pictures no one holds that a [`Buffers`] keeps for a burst to come; past them it drops one
/// a take, so a backlog's memory goes back as the backlog drains.
pub(super) const SPARE_PICTURES: usize = 8;

impl Buffers {
    /// A picture of this format and size no one else holds: the oldest one made before that
    /// every stage has dropped, else a new one. Its pixels and properties are the last use's.
    pub(super) fn take(&mut self, format: Pixel, width: u32, height: u32) -> frame::Video {
        // Held by this alone, a picture cannot be taken by anyone else in the meantime.
        let free = self.made.iter().position(|made| Arc::strong_count(made) == 1);
        match free.and_then(|at| self.made.remove(at)).map(Arc::try_unwrap) {
            Some(Ok(picture))
                if picture.format() == format && picture.width() == width && picture.height() == height =>
            {
                let spare = self
                    .made
                    .iter()
                    .take(SPARE_PICTURES + 1)
                    .filter(|made| Arc::strong_count(made) == 1)
                    .count();
                if spare > SPARE_PICTURES {
                    self.made.pop_front();
                }
                picture
            }
            // Held after all: kept for later.
            Some(Err(held)) => {
                self.made.push_back(held);
                frame::Video::new(format, width, height)
            }
            // None free, or one of another size (dropped).
            _ => frame::Video::new(format, width, height),
        }
    }

    /// Hands `picture` out, keeping it to be taken again once every holder has dropped it.
    pub(super) fn hand_out(&mut self, picture: frame::Video) -> Arc<frame::Video> {
        let picture = Arc::new(picture);
        self.made.push_back(Arc::clone(&picture));
        picture
    }

    /// Pictures kept, held or not.
    #[cfg(test)]
    pub(super) fn kept(&self) -> usize {
        self.made.len()
    }
}

/// One rung's thread.
pub(super) struct RungEncode {
    pub(super) plan: RungPlan,
    pub(super) dir: PathBuf,
    pub(super) fps: Fps,
    pub(super) keyint: u64,
    /// The number of the first segment written (1 for a whole encode).
    pub(super) first_segment: u64,
    /// Pictures before this one are encoded (warming up the rate control) but not written.
    pub(super) keep_from: u64,
    pub(super) threads: usize,
}

/// What a rung thread leaves behind.
#[derive(Debug)]
pub(super) struct RungDone {
    /// The fMP4 track's timescale.
    pub(super) timescale: u32,
}

impl RungEncode {
    /// Takes pictures from the larger rung, scales them, passes them on to the smaller rung,
    /// and encodes and packages them.
    pub(super) fn run(
        self,
        input: Receiver<Picture>,
        next: Option<SyncSender<Picture>>,
        mut progress: impl FnMut(u64, bool),
    ) -> Result<RungDone, MediaError> {
        let name = self.plan.name.clone();
        let fail = |what: &str, e: ffmpeg::Error| MediaError::internal(format!("{name}: {what}: {e}"));
        let (mut output, mut encoder) = self.open()?;
        let encoder_tb = self.time_base();
        let stream_tb = track::start(
            &mut output,
            &self.dir,
            // Cut at every keyframe: the decode thread marks exactly the segment starts.
            (1, self.first_segment),
            &name,
            encoder_tb,
        )?;
        let mut scale = ScaleTo::new(self.plan.width, self.plan.height);
        let mut frames = 0u64;
        let keep_from = i64::try_from(self.keep_from).unwrap_or(i64::MAX);
        // Frames written, and whether one of them closed a segment: keyframes fall only on
        // segment starts, so each one after the first closes the segment before it.
        let write = |encoder: &mut encoder::Video, output: &mut ffmpeg::format::context::Output, before: u64| {
            let mut packet = Packet::empty();
            let (mut written, mut closed) = (0, false);
            while encoder.receive_packet(&mut packet).is_ok() {
                if packet.pts().is_some_and(|pts| pts < keep_from) {
                    continue;
                }
                // (Read before the write: the muxer takes the packet's contents.)
                closed |= packet.is_key() && before + written > 0;
                packet.set_stream(0);
                packet.set_duration(1);
                packet.rescale_ts(encoder_tb, stream_tb);
                packet.write_interleaved(output).map_err(|e| fail("write packet", e))?;
                written += 1;
            }
            Ok::<(u64, bool), MediaError>((written, closed))
        };
        for mut source in input {
            // The picture at this rung's size: the one handed down if it has it (a lead made
            // it on the way), else scaled from the larger one.
            let picture = match source.smaller.first() {
                Some(made) if scale.fits(made) => source.smaller.remove(0),
                _ => scale.run(&source.frame).map_err(|e| fail("scale", e))?,
            };
            if let Some(next) = next.as_ref() {
                // The smaller rung stopped; it reports why when joined.
                let down = Picture {
                    frame: Arc::clone(&picture),
                    smaller: source.smaller,
                };
                if next.send(down).is_err() {
                    return Err(MediaError::cancelled(format!("{name}: the next rung stopped")));
                }
            }
            encoder.send_frame(&picture).map_err(|e| fail("encode", e))?;
            let (written, closed) = write(&mut encoder, &mut output, frames)?;
            frames += written;
            progress(frames, closed);
        }
        drop(next);
        encoder.send_eof().map_err(|e| fail("flush", e))?;
        frames += write(&mut encoder, &mut output, frames)?.0;
        output.write_trailer().map_err(|e| fail("write trailer", e))?;
        progress(frames, true);
        Ok(RungDone {
            timescale: u32::try_from(stream_tb.denominator()).unwrap_or(90_000),
        })
    }

    /// One tick per picture at the output rate.
    fn time_base(&self) -> Rational {
        Rational(
            i32::try_from(self.fps.den).unwrap_or(1),
            i32::try_from(self.fps.num).unwrap_or(30),
        )
    }

    fn open(&self) -> Result<(ffmpeg::format::context::Output, encoder::Video), MediaError> {
        let name = &self.plan.name;
        let fail = |what: &str, e: ffmpeg::Error| MediaError::internal(format!("{name}: {what}: {e}"));
        let codec =
            encoder::find_by_name("libx264").ok_or_else(|| MediaError::internal("FFmpeg was built without libx264"))?;
        let mut output = track::open(&self.dir, name)?;
        let global_header = track::wants_global_header(&output);
        let mut context = codec::context::Context::new_with_codec(codec)
            .encoder()
            .video()
            .map_err(|e| fail("encoder", e))?;
        let time_base = self.time_base();
        context.set_width(self.plan.width);
        context.set_height(self.plan.height);
        context.set_format(Pixel::YUV420P);
        context.set_time_base(time_base);
        context.set_frame_rate(Some(Rational(time_base.denominator(), time_base.numerator())));
        context.set_aspect_ratio(Rational(1, 1));
        context.set_bit_rate(usize::try_from(self.plan.bitrate_bps).unwrap_or(usize::MAX));
        context.set_max_bit_rate(usize::try_from(self.plan.maxrate_bps).unwrap_or(usize::MAX));
        if global_header {
            context.set_flags(codec::Flags::GLOBAL_HEADER);
        }
        let mut options = Dictionary::new();
        options.set("preset", &self.plan.preset);
        options.set("profile", "high");
        options.set("level", &self.plan.level_name());
        options.set("bufsize", &self.plan.bufsize_bits.to_string());
        options.set("threads", &self.threads.to_string());
        options.set("forced-idr", "1");
        // Keyframes only where the decode thread marks segment starts: every rung alike.
        options.set(
            "x264-params",
            &format!("keyint={0}:min-keyint={0}:scenecut=0:open-gop=0", self.keyint),
        );
        let encoder = context.open_with(options).map_err(|e| fail("open x264", e))?;
        let mut stream = output.add_stream(codec).map_err(|e| fail("add stream", e))?;
        stream.set_parameters(&encoder);
        stream.set_time_base(time_base);
        Ok((output, encoder))
    }
}
