//! Audio: decode on the demux thread, then on a thread of its own resample to 48 kHz stereo,
//! encode AAC-LC and package as an HLS fMP4 track on the same segment grid as the video.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender};

use ffmpeg::format::Sample;
use ffmpeg::{codec, encoder, filter, frame, ChannelLayout, Dictionary, Packet, Rational};
use ffmpeg_next as ffmpeg;

use super::{track, MediaError};

/// Output sample rate.
pub(crate) const SAMPLE_RATE: u32 = 48_000;

/// The audio decoder; its frames go to the audio thread with times aligned to the video.
pub(super) struct Decode {
    decoder: ffmpeg::decoder::Audio,
    time_base: Rational,
    /// Ticks (in `time_base`) of the video's start, subtracted from every audio time.
    offset: i64,
}

impl Decode {
    pub(super) fn new(
        input: &ffmpeg::format::context::Input,
        index: usize,
        video_start: f64,
    ) -> Result<Self, MediaError> {
        let stream = input
            .stream(index)
            .ok_or_else(|| MediaError::internal("the audio stream went away"))?;
        let time_base = stream.time_base();
        let decoder = codec::context::Context::from_parameters(stream.parameters())
            .and_then(|c| c.decoder().audio())
            .map_err(|e| MediaError::bad(format!("the audio stream cannot be decoded: {e}")))?;
        let offset = (video_start / f64::from(time_base)).round() as i64;
        Ok(Self {
            decoder,
            time_base,
            offset,
        })
    }

    pub(super) fn packet(&mut self, packet: &Packet, out: &SyncSender<frame::Audio>) -> Result<(), MediaError> {
        match self.decoder.send_packet(packet) {
            Ok(()) | Err(ffmpeg::Error::InvalidData) => self.drain(out),
            Err(e) => Err(MediaError::bad(format!("the audio stream cannot be decoded: {e}"))),
        }
    }

    pub(super) fn finish(&mut self, out: &SyncSender<frame::Audio>) -> Result<(), MediaError> {
        let _ = self.decoder.send_eof();
        self.drain(out)
    }

    fn drain(&mut self, out: &SyncSender<frame::Audio>) -> Result<(), MediaError> {
        loop {
            let mut decoded = frame::Audio::empty();
            if self.decoder.receive_frame(&mut decoded).is_err() {
                return Ok(());
            }
            let Some(pts) = decoded.timestamp() else { continue };
            let pts = pts - self.offset;
            // Audio before the first picture has nothing to play against.
            if pts < 0 {
                continue;
            }
            decoded.set_pts(Some(pts));
            if decoded.channel_layout().is_empty() {
                decoded.set_channel_layout(ChannelLayout::default(i32::from(decoded.channels())));
            }
            out.send(decoded)
                .map_err(|_| MediaError::internal("the audio encoder stopped"))?;
        }
    }

    /// The time base of the frames sent.
    pub(super) fn time_base(&self) -> Rational {
        self.time_base
    }
}

/// The audio thread.
pub(super) struct AudioEncode {
    pub(super) dir: PathBuf,
    pub(super) bitrate: u64,
    pub(super) segment_seconds: u32,
    pub(super) time_base: Rational,
}

/// What the audio thread leaves behind.
#[derive(Debug)]
pub(super) struct AudioDone {
    /// The fMP4 track's timescale.
    pub(super) timescale: u32,
}

impl AudioEncode {
    pub(super) fn run(self, input: Receiver<frame::Audio>) -> Result<AudioDone, MediaError> {
        let fail = |what: &str, e: ffmpeg::Error| MediaError::internal(format!("audio: {what}: {e}"));
        let codec = encoder::find(codec::Id::AAC).ok_or_else(|| MediaError::internal("no AAC encoder"))?;
        let mut output = track::open(&self.dir, "audio")?;
        let mut context = codec::context::Context::new_with_codec(codec)
            .encoder()
            .audio()
            .map_err(|e| fail("encoder", e))?;
        let encoder_tb = Rational(1, SAMPLE_RATE as i32);
        context.set_rate(SAMPLE_RATE as i32);
        context.set_channel_layout(ChannelLayout::STEREO);
        context.set_format(Sample::F32(ffmpeg::format::sample::Type::Planar));
        context.set_bit_rate(usize::try_from(self.bitrate).unwrap_or(128_000));
        context.set_time_base(encoder_tb);
        if track::wants_global_header(&output) {
            context.set_flags(codec::Flags::GLOBAL_HEADER);
        }
        let mut encoder = context.open_with(Dictionary::new()).map_err(|e| fail("open AAC", e))?;
        {
            let mut stream = output.add_stream(codec).map_err(|e| fail("add stream", e))?;
            stream.set_parameters(&encoder);
            stream.set_time_base(encoder_tb);
        }
        let stream_tb = track::start(&mut output, &self.dir, (self.segment_seconds, 1), "audio", encoder_tb)?;

        let mut graph: Option<filter::Graph> = None;
        let write = |encoder: &mut encoder::Audio, output: &mut ffmpeg::format::context::Output| {
            let mut packet = Packet::empty();
            while encoder.receive_packet(&mut packet).is_ok() {
                packet.set_stream(0);
                packet.rescale_ts(encoder_tb, stream_tb);
                packet.write_interleaved(output).map_err(|e| fail("write packet", e))?;
            }
            Ok::<(), MediaError>(())
        };
        let pull =
            |graph: &mut filter::Graph, encoder: &mut encoder::Audio, output: &mut ffmpeg::format::context::Output| {
                let mut sink = graph.get("out").ok_or_else(|| MediaError::internal("no audio sink"))?;
                let mut resampled = frame::Audio::empty();
                while sink.sink().frame(&mut resampled).is_ok() {
                    encoder.send_frame(&resampled).map_err(|e| fail("encode", e))?;
                    write(encoder, output)?;
                }
                Ok::<(), MediaError>(())
            };
        for decoded in input {
            let graph = match graph.as_mut() {
                Some(g) => g,
                None => graph.insert(self.graph(&decoded, encoder.frame_size())?),
            };
            let mut source = graph.get("in").ok_or_else(|| MediaError::internal("no audio source"))?;
            source.source().add(&decoded).map_err(|e| fail("resample", e))?;
            pull(graph, &mut encoder, &mut output)?;
        }
        if let Some(graph) = graph.as_mut() {
            if let Some(mut source) = graph.get("in") {
                let _ = source.source().flush();
            }
            pull(graph, &mut encoder, &mut output)?;
        }
        encoder.send_eof().map_err(|e| fail("flush", e))?;
        write(&mut encoder, &mut output)?;
        output.write_trailer().map_err(|e| fail("write trailer", e))?;
        Ok(AudioDone {
            timescale: u32::try_from(stream_tb.denominator()).unwrap_or(SAMPLE_RATE),
        })
    }

    /// abuffer → aresample → abuffersink(fltp, stereo, 48 kHz, frames of the encoder's size).
    fn graph(&self, first: &frame::Audio, frame_size: u32) -> Result<filter::Graph, MediaError> {
        let internal = |e: ffmpeg::Error| MediaError::internal(format!("audio filter graph: {e}"));
        let mut graph = filter::Graph::new();
        let args = format!(
            "time_base={}/{}:sample_rate={}:sample_fmt={}:channel_layout=0x{:x}",
            self.time_base.numerator(),
            self.time_base.denominator().max(1),
            first.rate(),
            first.format().name(),
            first.channel_layout().bits()
        );
        let abuffer = filter::find("abuffer").ok_or_else(|| MediaError::internal("no abuffer filter"))?;
        let sink = filter::find("abuffersink").ok_or_else(|| MediaError::internal("no abuffersink filter"))?;
        graph.add(&abuffer, "in", &args).map_err(internal)?;
        graph.add(&sink, "out", "").map_err(internal)?;
        {
            let mut out = graph.get("out").ok_or_else(|| MediaError::internal("no audio sink"))?;
            out.set_sample_format(Sample::F32(ffmpeg::format::sample::Type::Planar));
            out.set_channel_layout(ChannelLayout::STEREO);
            out.set_sample_rate(SAMPLE_RATE);
        }
        graph
            .output("in", 0)
            .and_then(|p| p.input("out", 0))
            .and_then(|p| p.parse(&format!("aresample={SAMPLE_RATE}:async=1000")))
            .map_err(internal)?;
        graph.validate().map_err(internal)?;
        if let Some(mut out) = graph.get("out") {
            out.sink().set_frame_size(frame_size);
        }
        Ok(graph)
    }
}
