//! The poster JPEG and the scrubbing thumbnails: tiles in JPEG sprites of 10×10, indexed by a
//! WebVTT file whose cues point at `sprite.jpg#xywh=x,y,w,h`.

use std::fmt::Write as _;
use std::path::Path;

use ffmpeg::format::Pixel;
use ffmpeg::software::scaling::{Context as Scaler, Flags as ScaleFlags};
use ffmpeg::{codec, encoder, frame, Dictionary, Packet, Rational};
use ffmpeg_next as ffmpeg;

use super::MediaError;
use crate::ladder::{Fps, RungPlan};

const TILE_WIDTH: u32 = 160;
const COLUMNS: usize = 10;
const ROWS: usize = 10;
const POSTER_MAX_WIDTH: u32 = 1280;

/// Collects the frames it needs as the decode goes by.
pub(super) struct Thumbnailer {
    fps: f64,
    poster_at: u64,
    every: u64,
    tile: (u32, u32),
    poster_size: (u32, u32),
    poster: Option<frame::Video>,
    tiles: Vec<frame::Video>,
    /// The number of the first tile taken (tiles are numbered over the whole source).
    first_tile: Option<u64>,
    tile_scaler: Option<Scaler>,
    poster_scaler: Option<Scaler>,
    failed: bool,
}

fn even(v: f64) -> u32 {
    ((v / 2.0).round().max(1.0) as u32) * 2
}

impl Thumbnailer {
    pub(super) fn new(top: &RungPlan, fps: Fps, duration_s: f64) -> Self {
        let aspect = f64::from(top.height) / f64::from(top.width);
        let tile = (TILE_WIDTH, even(f64::from(TILE_WIDTH) * aspect));
        let poster_width = top.width.min(POSTER_MAX_WIDTH);
        let poster_size = (poster_width, even(f64::from(poster_width) * aspect));
        // A tile every 2 s for short videos, fewer for long ones: at most ~200 tiles.
        let every_s = (duration_s / 200.0).ceil().max(2.0);
        let fps = fps.as_f64();
        Self {
            fps,
            poster_at: ((duration_s * 0.1).min(5.0) * fps).round() as u64,
            every: (every_s * fps).round().max(1.0) as u64,
            tile,
            poster_size,
            poster: None,
            tiles: Vec::new(),
            first_tile: None,
            tile_scaler: None,
            poster_scaler: None,
            failed: false,
        }
    }

    /// Looks at picture `n` (yuv420p at the top rung's size).
    pub(super) fn offer(&mut self, n: u64, picture: &frame::Video) {
        if self.failed {
            return;
        }
        if n.is_multiple_of(self.every) {
            match scale(&mut self.tile_scaler, picture, self.tile) {
                Ok(tile) => {
                    self.first_tile.get_or_insert(n / self.every);
                    self.tiles.push(tile);
                }
                Err(_) => self.failed = true,
            }
        }
        // The first picture stands in until the poster's moment comes (short videos).
        if n == 0 || n == self.poster_at {
            match scale(&mut self.poster_scaler, picture, self.poster_size) {
                Ok(poster) => self.poster = Some(poster),
                Err(_) => self.failed = true,
            }
        }
    }

    /// The tiles' size and the seconds between two tiles.
    pub(super) fn geometry(&self) -> Geometry {
        Geometry {
            tile: self.tile,
            step: self.every as f64 / self.fps,
        }
    }

    /// Writes `poster.jpg`, `thumbs/sprite_NNN.jpg` and `thumbs/thumbnails.vtt`; returns their
    /// relative names.
    pub(super) fn finish(self, dir: &Path) -> Result<(Option<String>, Option<String>), MediaError> {
        let geometry = self.geometry();
        let (poster, sheets) = self.write(dir, |s, _| format!("thumbs/sprite_{:03}.jpg", s + 1))?;
        if sheets.is_empty() {
            return Ok((None, None));
        }
        let name = "thumbs/thumbnails.vtt";
        std::fs::write(dir.join(name), thumbnails_vtt(&sheets, geometry)).map_err(|e| MediaError::io(e.to_string()))?;
        Ok((poster, Some(name.to_owned())))
    }

    /// Writes the poster, when this share of a chunked encode holds it, and the share's tiles in
    /// sprites named by their first tile's number; the WebVTT index over every share is
    /// written once all are done ([`thumbnails_vtt`]).
    pub(super) fn finish_part(self, dir: &Path) -> Result<(Option<String>, Vec<Sheet>), MediaError> {
        self.write(dir, |_, first| format!("thumbs/sprite_t{first:06}.jpg"))
    }

    fn write(
        mut self,
        dir: &Path,
        name: impl Fn(usize, u64) -> String,
    ) -> Result<(Option<String>, Vec<Sheet>), MediaError> {
        if self.failed || self.tiles.is_empty() {
            return Ok((None, Vec::new()));
        }
        let poster_name = match self.poster.take() {
            Some(p) => {
                write_jpeg(&p, &dir.join("poster.jpg"))?;
                Some("poster.jpg".to_owned())
            }
            None => None,
        };
        let thumbs = dir.join("thumbs");
        std::fs::create_dir_all(&thumbs).map_err(|e| MediaError::io(format!("{}: {e}", thumbs.display())))?;
        let (tw, th) = self.tile;
        let per_sprite = COLUMNS * ROWS;
        let first_tile = self.first_tile.unwrap_or(0);
        let mut sheets = Vec::new();
        for (s, chunk) in self.tiles.chunks(per_sprite).enumerate() {
            let first = first_tile + (s * per_sprite) as u64;
            let name = name(s, first);
            let columns = chunk.len().min(COLUMNS);
            let rows = chunk.len().div_ceil(COLUMNS);
            let mut sprite = frame::Video::new(Pixel::YUVJ420P, tw * columns as u32, th * rows as u32);
            fill_black(&mut sprite);
            for (i, tile) in chunk.iter().enumerate() {
                let (x, y) = ((i % COLUMNS) as u32 * tw, (i / COLUMNS) as u32 * th);
                blit(tile, &mut sprite, x, y);
            }
            write_jpeg(&sprite, &dir.join(&name))?;
            sheets.push((name, first, chunk.len()));
        }
        Ok((poster_name, sheets))
    }
}

/// A sprite: its name, the number of its first tile, how many tiles it holds.
pub type Sheet = (String, u64, usize);

/// The tiles' size and spacing in time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Geometry {
    /// Width and height of a tile.
    pub tile: (u32, u32),
    /// Seconds between two tiles.
    pub step: f64,
}

/// The WebVTT index of `sheets` (names relative to the output folder; cues point at them from
/// `thumbs/`): tile `k` covers `k·step` to `(k+1)·step`, laid out ten to a row.
pub fn thumbnails_vtt(sheets: &[Sheet], geometry: Geometry) -> String {
    let (tw, th) = geometry.tile;
    let mut vtt = String::from("WEBVTT\n\n");
    for (name, first, count) in sheets {
        let name = name.strip_prefix("thumbs/").unwrap_or(name);
        for i in 0..*count {
            let (x, y) = ((i % COLUMNS) as u32 * tw, (i / COLUMNS) as u32 * th);
            let k = first + i as u64;
            let _ = writeln!(
                vtt,
                "{} --> {}\n{name}#xywh={x},{y},{tw},{th}\n",
                timestamp(k as f64 * geometry.step),
                timestamp((k + 1) as f64 * geometry.step)
            );
        }
    }
    vtt
}

fn scale(
    scaler: &mut Option<Scaler>,
    picture: &frame::Video,
    (w, h): (u32, u32),
) -> Result<frame::Video, ffmpeg::Error> {
    let scaler = match scaler.as_mut() {
        Some(s) => s,
        None => scaler.insert(Scaler::get(
            picture.format(),
            picture.width(),
            picture.height(),
            Pixel::YUVJ420P,
            w,
            h,
            ScaleFlags::BICUBIC,
        )?),
    };
    let mut out = frame::Video::empty();
    scaler.run(picture, &mut out)?;
    Ok(out)
}

fn fill_black(frame: &mut frame::Video) {
    for (plane, value) in [(0, 0u8), (1, 128), (2, 128)] {
        frame.data_mut(plane).fill(value);
    }
}

/// Copies `tile` into `sprite` at (x, y); both 4:2:0 with even sizes and offsets.
fn blit(tile: &frame::Video, sprite: &mut frame::Video, x: u32, y: u32) {
    for plane in 0..3 {
        let shift = u32::from(plane > 0);
        let (w, h) = ((tile.width() >> shift) as usize, (tile.height() >> shift) as usize);
        let (x, y) = ((x >> shift) as usize, (y >> shift) as usize);
        let (src_stride, dst_stride) = (tile.stride(plane), sprite.stride(plane));
        let src = tile.data(plane);
        let dst = sprite.data_mut(plane);
        for row in 0..h {
            let from = row * src_stride;
            let to = (y + row) * dst_stride + x;
            if let (Some(s), Some(d)) = (src.get(from..from + w), dst.get_mut(to..to + w)) {
                d.copy_from_slice(s);
            }
        }
    }
}

fn write_jpeg(picture: &frame::Video, path: &Path) -> Result<(), MediaError> {
    let fail = |e: ffmpeg::Error| MediaError::internal(format!("JPEG {}: {e}", path.display()));
    let codec = encoder::find(codec::Id::MJPEG).ok_or_else(|| MediaError::internal("no MJPEG encoder"))?;
    let mut context = codec::context::Context::new_with_codec(codec)
        .encoder()
        .video()
        .map_err(fail)?;
    context.set_width(picture.width());
    context.set_height(picture.height());
    context.set_format(Pixel::YUVJ420P);
    context.set_time_base(Rational(1, 25));
    context.set_flags(codec::Flags::QSCALE);
    // Fixed quantiser 4 (frames carry no quality, so the clamp sets it): clean pictures at a
    // few tens of KB per sprite.
    context.set_qmin(4);
    context.set_qmax(4);
    let mut encoder = context.open_with(Dictionary::new()).map_err(fail)?;
    let mut picture = picture.clone();
    picture.set_pts(Some(0));
    encoder.send_frame(&picture).map_err(fail)?;
    encoder.send_eof().map_err(fail)?;
    let mut packet = Packet::empty();
    encoder.receive_packet(&mut packet).map_err(fail)?;
    let data = packet
        .data()
        .ok_or_else(|| MediaError::internal("the JPEG encoder wrote nothing"))?;
    std::fs::write(path, data).map_err(|e| MediaError::io(format!("{}: {e}", path.display())))
}

/// `HH:MM:SS.mmm`.
fn timestamp(seconds: f64) -> String {
    let ms = (seconds * 1000.0).round() as u64;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}
