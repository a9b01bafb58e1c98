//! The bitrate ladder: which rungs a source gets, at which size, bitrate and H.264 level, and
//! where the segment boundaries (forced keyframes) fall. Pure arithmetic, no FFmpeg.

use serde::{Deserialize, Serialize};

/// One rung as configured: its short side and target bitrate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RungSpec {
    /// Name used for folders and events, such as `720p`.
    pub name: String,
    /// Height of a landscape picture (the short side; a portrait source gets this width).
    pub height: u32,
    /// Average video bitrate in kbit/s.
    pub bitrate_kbps: u32,
}

/// How sources are encoded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LadderConfig {
    /// The rungs, any order; rungs taller than the source are skipped, never upscaled.
    pub rungs: Vec<RungSpec>,
    /// x264 preset (`ultrafast` … `placebo`, [`X264_PRESETS`]).
    pub preset: String,
    /// The x264 preset of the rungs whose short side is at most `lead_max_height` (the lead's,
    /// which a viewer starts on), whether or not they run ahead of the others: unset,
    /// `preset`. With a slow `preset` the lead's rungs may encode slower than real time on a
    /// few cores, and a video published as it encodes is then playable only once enough is
    /// stored for a viewer never to catch up (some share of its length); a fast preset here
    /// keeps it playable in seconds while the larger rungs keep the slow preset's quality.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lead_preset: Option<String>,
    /// Segment duration in seconds; also the keyframe interval of every rung.
    pub segment_seconds: u32,
    /// The first segment's duration when shorter than `segment_seconds` (the first full
    /// segment is cut in two; the grid after it stays): a video being published can start
    /// once this much is stored. 0 or `segment_seconds`: every segment alike.
    pub first_segment_seconds: u32,
    /// AAC bitrate in kbit/s (stereo, 48 kHz).
    pub audio_bitrate_kbps: u32,
    /// Peak bitrate allowed by the VBV, as a multiple of the average (HLS BANDWIDTH follows).
    pub maxrate_factor: f64,
    /// VBV buffer, in seconds of the average bitrate.
    pub bufsize_seconds: f64,
    /// Frame rates above this are halved until they fit (120 → 60).
    pub max_fps: f64,
    /// Sources whose short side is smaller than this are refused.
    pub min_short_side: u32,
    /// x264 threads per rung; unset shares the cores among rungs by pixel count.
    pub x264_threads: Option<u32>,
    /// While a video is published as it encodes, the rungs whose short side is at most this
    /// (and the audio) are encoded ahead of the larger rungs, so that a player can start on
    /// them seconds after the upload; the larger rungs join the master playlist when they
    /// keep ahead too. 0 turns it off.
    pub lead_max_height: u32,
    /// The memory, in MiB, that decoded pictures waiting for the larger rungs may take while
    /// the lead runs ahead of them on the one decode that feeds them all: their queue (10 s of
    /// pictures, or less if this is less: 1024 holds ~8 s of 1080p30 with its 720p) and, when
    /// the lead must go on to stay ahead of a viewer (the larger rungs encode slower than real
    /// time), the pictures past it. Unset: half the memory available when the encode starts,
    /// shared among the process's encoders ([`auto_lead_buffer_mib`]). Past it, the pictures
    /// wait on disk (`lead_spill_mib`). 0: the lead has a decode of its own from the start
    /// (about 13 % more CPU for a 1080p ladder).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lead_buffer_mib: Option<u32>,
    /// How many MiB of the larger rungs' pictures may wait on disk (beside the outputs, in a
    /// file unlinked as it is made) when their queue in memory is full and the lead must go
    /// on to stay ahead of a viewer (16384: 5524 pictures of 1080p, 184 s at 30 fps). Past
    /// it, or with 0, the larger rungs get a decode of their own from then on (a write and a
    /// read of a picture cost a fraction of decoding it again).
    pub lead_spill_mib: u32,
}

impl Default for LadderConfig {
    fn default() -> Self {
        let rung = |name: &str, height, bitrate_kbps| RungSpec {
            name: name.into(),
            height,
            bitrate_kbps,
        };
        Self {
            rungs: vec![
                rung("1080p", 1080, 5000),
                rung("720p", 720, 2800),
                rung("480p", 480, 1400),
                rung("360p", 360, 800),
            ],
            preset: "veryfast".into(),
            lead_preset: None,
            segment_seconds: 4,
            first_segment_seconds: 2,
            audio_bitrate_kbps: 128,
            maxrate_factor: 1.5,
            bufsize_seconds: 2.0,
            max_fps: 60.0,
            min_short_side: 16,
            x264_threads: None,
            lead_max_height: 480,
            lead_buffer_mib: None,
            lead_spill_mib: 16384,
        }
    }
}

/// The presets x264 knows, fastest first.
pub const X264_PRESETS: [&str; 10] = [
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
];

/// The least [`auto_lead_buffer_mib`] gives: a few pictures of 1080p, so that a lead on a
/// machine short of memory still shares the one decode for a while before it spills.
pub const LEAD_BUFFER_MIN_MIB: u32 = 64;

/// The most [`auto_lead_buffer_mib`] gives: ~2 minutes of 1080p30 with its 720p, what a
/// 2-core machine's larger rungs fall behind in a 20-minute video; past it the spill's disk is
/// the cheaper place.
pub const LEAD_BUFFER_MAX_MIB: u32 = 16384;

/// The lead's buffer when `lead_buffer_mib` is unset: half the memory `available` (bytes) when
/// an encode starts, shared among the `encodes` the process may run at once, within
/// [`LEAD_BUFFER_MIN_MIB`]..=[`LEAD_BUFFER_MAX_MIB`]; 1024 MiB when the system does not say
/// what is available. Half, because the larger rungs' pictures are not all the encode holds
/// (x264's look-ahead and reference pictures, the outputs' page cache) and the machine may
/// serve as well as encode.
pub fn auto_lead_buffer_mib(available: Option<u64>, encodes: usize) -> u32 {
    let Some(bytes) = available else {
        return 1024;
    };
    let share = bytes / 2 / (encodes.max(1) as u64);
    u32::try_from(share >> 20)
        .unwrap_or(u32::MAX)
        .clamp(LEAD_BUFFER_MIN_MIB, LEAD_BUFFER_MAX_MIB)
}

/// Why a ladder cannot be planned for a source.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    /// The picture is too small to be worth encoding.
    #[error("the video is {width}×{height} pixels; the smallest accepted short side is {min} pixels")]
    TooSmall {
        /// Display width.
        width: u32,
        /// Display height.
        height: u32,
        /// The configured minimum.
        min: u32,
    },
    /// The configuration has no rungs or a zero size or bitrate.
    #[error("invalid ladder configuration: {0}")]
    Config(String),
}

/// One rung as it will be encoded for a given source.
#[derive(Debug, Clone, PartialEq)]
pub struct RungPlan {
    /// Folder and rendition name.
    pub name: String,
    /// Output width, even.
    pub width: u32,
    /// Output height, even.
    pub height: u32,
    /// Average bitrate in bit/s.
    pub bitrate_bps: u64,
    /// VBV peak in bit/s.
    pub maxrate_bps: u64,
    /// VBV buffer in bits.
    pub bufsize_bits: u64,
    /// H.264 `level_idc` (40 for level 4.0).
    pub level_idc: u8,
    /// The x264 preset: the ladder's, or its `lead_preset` for a rung of the lead's size.
    pub preset: String,
}

impl RungPlan {
    /// The RFC 6381 codecs string of this rung's video (High profile).
    pub fn video_codecs(&self) -> String {
        format!("avc1.6400{:02x}", self.level_idc)
    }

    /// The level as x264 takes it, such as `4.0`.
    pub fn level_name(&self) -> String {
        format!("{}.{}", self.level_idc / 10, self.level_idc % 10)
    }
}

/// The picture as a viewer sees it: sample aspect ratio and rotation applied.
pub fn display_size(width: u32, height: u32, sar: (i32, i32), rotation: i32) -> (u32, u32) {
    let (num, den) = sar;
    let width = if num > 0 && den > 0 && num != den {
        let scaled = (f64::from(width) * f64::from(num) / f64::from(den)).round();
        // Saturating float-to-int: a corrupt SAR cannot overflow.
        scaled.clamp(1.0, 65_536.0) as u32
    } else {
        width
    };
    if rotation.rem_euclid(180) == 90 {
        (height, width)
    } else {
        (width, height)
    }
}

/// Rounds to the nearest even number, at least 2.
fn even(value: f64) -> u32 {
    let half = (value / 2.0).round().clamp(1.0, 32_768.0) as u32;
    half * 2
}

/// The rungs for a source shown at `width`×`height` pixels and `fps` frames per second,
/// largest first. Rungs taller than the source are skipped; a source smaller than every rung
/// gets one rung at its own size, with the smallest rung's bitrate scaled by area.
///
/// # Errors
/// `TooSmall` below `min_short_side`; `Config` for an empty or zero ladder or a preset x264
/// does not know.
pub fn plan(config: &LadderConfig, width: u32, height: u32, fps: f64) -> Result<Vec<RungPlan>, PlanError> {
    if config.rungs.is_empty() {
        return Err(PlanError::Config("no rungs".into()));
    }
    let mut presets = std::iter::once(("preset", &config.preset))
        .chain(config.lead_preset.as_ref().map(|preset| ("lead_preset", preset)));
    if let Some((key, bad)) = presets.find(|(_, preset)| !X264_PRESETS.contains(&preset.as_str())) {
        return Err(PlanError::Config(format!(
            "{key} {bad:?} is not an x264 preset: one of {}",
            X264_PRESETS.join(", ")
        )));
    }
    if let Some(bad) = config.rungs.iter().find(|r| r.height < 2 || r.bitrate_kbps == 0) {
        return Err(PlanError::Config(format!(
            "rung {} needs a height ≥ 2 and a bitrate",
            bad.name
        )));
    }
    let short = width.min(height);
    if short < config.min_short_side.max(2) {
        return Err(PlanError::TooSmall {
            width,
            height,
            min: config.min_short_side.max(2),
        });
    }
    let mut specs: Vec<&RungSpec> = config.rungs.iter().collect();
    specs.sort_by_key(|spec| std::cmp::Reverse(spec.height));
    let size = |target_short: u32| {
        let factor = f64::from(target_short) / f64::from(short);
        (even(f64::from(width) * factor), even(f64::from(height) * factor))
    };
    let mut rungs: Vec<RungPlan> = specs
        .iter()
        .filter(|spec| spec.height <= short)
        .map(|spec| {
            let (w, h) = size(spec.height);
            rung(
                config,
                spec.name.clone(),
                w,
                h,
                u64::from(spec.bitrate_kbps) * 1000,
                fps,
            )
        })
        .collect();
    if rungs.is_empty() {
        let smallest = specs[specs.len() - 1];
        let (w, h) = size(short);
        let area = f64::from(w) * f64::from(h) / (f64::from(smallest.height) * f64::from(smallest.height) * 16.0 / 9.0);
        let bitrate = (f64::from(smallest.bitrate_kbps) * 1000.0 * area).max(100_000.0) as u64;
        rungs.push(rung(config, format!("{}p", w.min(h)), w, h, bitrate, fps));
    }
    Ok(rungs)
}

/// Whether a rung of `width`×`height` is of the lead's size: its short side at most
/// `lead_max_height` (0: there is no lead).
pub fn of_lead_size(width: u32, height: u32, lead_max_height: u32) -> bool {
    lead_max_height > 0 && width.min(height) <= lead_max_height
}

fn rung(config: &LadderConfig, name: String, width: u32, height: u32, bitrate_bps: u64, fps: f64) -> RungPlan {
    let maxrate_bps = (bitrate_bps as f64 * config.maxrate_factor.max(1.0)) as u64;
    let preset = match &config.lead_preset {
        Some(preset) if of_lead_size(width, height, config.lead_max_height) => preset,
        _ => &config.preset,
    };
    RungPlan {
        name,
        width,
        height,
        bitrate_bps,
        maxrate_bps,
        bufsize_bits: (bitrate_bps as f64 * config.bufsize_seconds.max(0.5)) as u64,
        level_idc: h264_level(width, height, fps, maxrate_bps),
        preset: preset.clone(),
    }
}

/// The lowest H.264 level (ITU-T H.264 Table A-1, High profile bitrates) that holds the frame
/// size, macroblock rate and peak bitrate; at least 3.0 so reference-frame limits never bind.
pub fn h264_level(width: u32, height: u32, fps: f64, maxrate_bps: u64) -> u8 {
    // (level_idc, max macroblocks/s, max frame size in macroblocks, max bitrate kbit/s for Baseline/Main)
    const LEVELS: [(u8, f64, u64, u64); 10] = [
        (30, 40_500.0, 1_620, 10_000),
        (31, 108_000.0, 3_600, 14_000),
        (32, 216_000.0, 5_120, 20_000),
        (40, 245_760.0, 8_192, 20_000),
        (41, 245_760.0, 8_192, 50_000),
        (42, 522_240.0, 8_704, 50_000),
        (50, 589_824.0, 22_080, 135_000),
        (51, 983_040.0, 36_864, 240_000),
        (52, 2_073_600.0, 36_864, 240_000),
        (62, 16_711_680.0, 139_264, 800_000),
    ];
    let mbs = u64::from(width.div_ceil(16)) * u64::from(height.div_ceil(16));
    let rate = mbs as f64 * fps;
    LEVELS
        .iter()
        .find(|(_, max_rate, max_fs, max_kbps)| mbs <= *max_fs && rate <= *max_rate && maxrate_bps <= max_kbps * 1250)
        .map_or(62, |l| l.0)
}

/// A frame rate as an exact fraction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fps {
    /// Numerator.
    pub num: u32,
    /// Denominator.
    pub den: u32,
}

impl Fps {
    /// As a float.
    pub fn as_f64(self) -> f64 {
        f64::from(self.num) / f64::from(self.den)
    }

    /// The output rate for a source measured at `fps`: snapped to the broadcast rate it is
    /// within 0.1% of, halved while above `max`, 30 when unknown.
    pub fn choose(fps: f64, max: f64) -> Fps {
        let mut fps = if fps.is_finite() && fps >= 1.0 { fps } else { 30.0 };
        while fps > max.max(1.0) + 0.01 {
            fps /= 2.0;
        }
        const STANDARD: [(u32, u32); 10] = [
            (24000, 1001),
            (24, 1),
            (25, 1),
            (30000, 1001),
            (30, 1),
            (48, 1),
            (50, 1),
            (60000, 1001),
            (60, 1),
            (15, 1),
        ];
        STANDARD
            .iter()
            .map(|&(num, den)| Fps { num, den })
            .filter(|s| (s.as_f64() - fps).abs() / fps < 0.001)
            .min_by(|a, b| (a.as_f64() - fps).abs().total_cmp(&(b.as_f64() - fps).abs()))
            .unwrap_or(Fps {
                num: (fps * 1000.0).round() as u32,
                den: 1000,
            })
    }
}

/// Where segments start: frame `n` (counted from 0 at the output rate) opens a segment when
/// it is the first frame at or after a multiple of the segment duration, or, with a short
/// first segment, at or after its end. Every rung forces an IDR on exactly these frames, so
/// segments align across the ladder.
#[derive(Debug, Clone, Copy)]
pub struct Segmenter {
    /// Frames per segment, as the fraction `seconds * num / den`.
    num: u64,
    den: u64,
    /// The end of a short first segment (a frame inside the first full one), if any.
    first: Option<u64>,
}

impl Segmenter {
    /// Boundaries every `seconds` at `fps`.
    pub fn new(seconds: u32, fps: Fps) -> Self {
        Self {
            num: u64::from(seconds.max(1)) * u64::from(fps.num),
            den: u64::from(fps.den.max(1)),
            first: None,
        }
    }

    /// The segments `config` asks for at `fps`: its first segment short when
    /// `first_segment_seconds` is shorter than `segment_seconds` (a player can start on it
    /// sooner), the rest every `segment_seconds` as if the first were whole.
    pub fn of(config: &LadderConfig, fps: Fps) -> Self {
        let mut segmenter = Self::new(config.segment_seconds, fps);
        let first = (u64::from(config.first_segment_seconds) * u64::from(fps.num)).div_ceil(u64::from(fps.den.max(1)));
        if first > 0 && first < segmenter.uniform_start(1) {
            segmenter.first = Some(first);
        }
        segmenter
    }

    /// The first frame of segment `k` of the uniform grid: ceil(k · seconds · fps).
    fn uniform_start(&self, k: u64) -> u64 {
        (k * self.num).div_ceil(self.den)
    }

    /// The segment of the uniform grid frame `n` starts, if it starts one.
    fn uniform_index(&self, n: u64) -> Option<u64> {
        if n == 0 {
            return Some(0);
        }
        // The segment that would start at n is the first k with k·num/den > n − 1.
        let k = (n - 1) * self.den / self.num + 1;
        (self.uniform_start(k) == n).then_some(k)
    }

    /// The first frame of segment `k`.
    pub fn start_of(&self, k: u64) -> u64 {
        match self.first {
            Some(_) if k == 0 => 0,
            Some(first) if k == 1 => first,
            Some(_) => self.uniform_start(k - 1),
            None => self.uniform_start(k),
        }
    }

    /// Whether frame `n` starts a segment.
    pub fn is_boundary(&self, n: u64) -> bool {
        self.index_of(n).is_some()
    }

    /// The segment that frame `n` starts, if it starts one.
    pub fn index_of(&self, n: u64) -> Option<u64> {
        match self.first {
            Some(first) if n == first => Some(1),
            Some(_) => self.uniform_index(n).map(|k| if k == 0 { 0 } else { k + 1 }),
            None => self.uniform_index(n),
        }
    }

    /// The most frames a segment holds (the x264 keyint).
    pub fn max_frames(&self) -> u64 {
        self.num.div_ceil(self.den)
    }

    /// Seconds of the segment that starts `available` seconds in (whole segments from the
    /// start, as a muxer lists them); a full segment's when that is not a boundary.
    pub fn next_seconds(&self, available: f64, fps: Fps) -> f64 {
        let frame = (available * fps.as_f64()).round().max(0.0) as u64;
        // Not a boundary: a full segment's, as any past the first.
        let k = self.index_of(frame).unwrap_or(self.first.map_or(1, |_| 2));
        (self.start_of(k + 1) - self.start_of(k)) as f64 / fps.as_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lead_buffer_left_unset_is_half_the_memory_available_shared_among_the_encoders_within_bounds() {
        const GIB: u64 = 1 << 30;
        assert_eq!(auto_lead_buffer_mib(Some(22 * GIB), 1), 11 * 1024);
        assert_eq!(auto_lead_buffer_mib(Some(22 * GIB), 2), 5632);
        // No encoders counted is one.
        assert_eq!(auto_lead_buffer_mib(Some(22 * GIB), 0), 11 * 1024);
        assert_eq!(auto_lead_buffer_mib(Some(100 << 20), 1), LEAD_BUFFER_MIN_MIB);
        assert_eq!(auto_lead_buffer_mib(Some(0), 1), LEAD_BUFFER_MIN_MIB);
        assert_eq!(auto_lead_buffer_mib(Some(256 * GIB), 1), LEAD_BUFFER_MAX_MIB);
        assert_eq!(auto_lead_buffer_mib(Some(u64::MAX), 1), LEAD_BUFFER_MAX_MIB);
        // Never 0 (a decode of the lead's own): that is only ever asked for.
        assert_eq!(auto_lead_buffer_mib(None, 1), 1024);
    }

    fn names(rungs: &[RungPlan]) -> Vec<(String, u32, u32)> {
        rungs.iter().map(|r| (r.name.clone(), r.width, r.height)).collect()
    }

    #[test]
    fn a_1080p_source_gets_the_whole_ladder_largest_first() {
        let rungs = plan(&LadderConfig::default(), 1920, 1080, 30.0).expect("plan");
        assert_eq!(
            names(&rungs),
            vec![
                ("1080p".into(), 1920, 1080),
                ("720p".into(), 1280, 720),
                ("480p".into(), 854, 480),
                ("360p".into(), 640, 360),
            ]
        );
        assert_eq!(rungs[0].bitrate_bps, 5_000_000);
        assert_eq!(rungs[0].maxrate_bps, 7_500_000);
        assert_eq!(rungs[0].video_codecs(), "avc1.640028");
        assert_eq!(rungs[1].video_codecs(), "avc1.64001f");
    }

    #[test]
    fn the_leads_rungs_take_the_lead_preset_and_the_larger_rungs_the_ladders() {
        let presets = |config: &LadderConfig| {
            plan(config, 1920, 1080, 30.0)
                .expect("plan")
                .into_iter()
                .map(|r| (r.name, r.preset))
                .collect::<Vec<_>>()
        };
        let slow = LadderConfig {
            preset: "slow".into(),
            ..LadderConfig::default()
        };
        let all = |preset: &str| {
            ["1080p", "720p", "480p", "360p"]
                .map(|name| (name.to_owned(), preset.to_owned()))
                .to_vec()
        };
        // Unset: every rung the ladder's.
        assert_eq!(presets(&slow), all("slow"));
        let fast_lead = LadderConfig {
            lead_preset: Some("veryfast".into()),
            ..slow.clone()
        };
        assert_eq!(
            presets(&fast_lead),
            vec![
                ("1080p".to_owned(), "slow".to_owned()),
                ("720p".to_owned(), "slow".to_owned()),
                ("480p".to_owned(), "veryfast".to_owned()),
                ("360p".to_owned(), "veryfast".to_owned()),
            ]
        );
        // No lead, no rung of its size.
        let no_lead = LadderConfig {
            lead_max_height: 0,
            ..fast_lead.clone()
        };
        assert_eq!(presets(&no_lead), all("slow"));
        // A portrait source: the short side decides, as for the lead.
        let portrait = plan(&fast_lead, 1080, 1920, 30.0).expect("plan");
        assert_eq!((portrait[2].width, portrait[2].preset.as_str()), (480, "veryfast"));
    }

    #[test]
    fn a_preset_x264_does_not_know_is_refused_by_name() {
        let wrong = LadderConfig {
            preset: "turbo".into(),
            ..LadderConfig::default()
        };
        let err = plan(&wrong, 1920, 1080, 30.0).expect_err("refused");
        assert_eq!(
            err.to_string(),
            "invalid ladder configuration: preset \"turbo\" is not an x264 preset: one of ultrafast, superfast, veryfast, faster, fast, medium, slow, slower, veryslow, placebo"
        );
        let wrong_lead = LadderConfig {
            lead_preset: Some("Fast".into()),
            ..LadderConfig::default()
        };
        let err = plan(&wrong_lead, 1920, 1080, 30.0).expect_err("refused");
        assert!(
            err.to_string().contains("lead_preset \"Fast\" is not an x264 preset"),
            "{err}"
        );
        for preset in X264_PRESETS {
            let config = LadderConfig {
                preset: preset.into(),
                lead_preset: Some(preset.into()),
                ..LadderConfig::default()
            };
            assert!(plan(&config, 1920, 1080, 30.0).is_ok(), "{preset}");
        }
    }

    #[test]
    fn rungs_above_the_source_are_skipped_never_upscaled() {
        let rungs = plan(&LadderConfig::default(), 1280, 720, 25.0).expect("plan");
        assert_eq!(rungs.len(), 3);
        assert_eq!(rungs[0].height, 720);
    }

    #[test]
    fn a_portrait_source_scales_by_its_short_side() {
        let (w, h) = display_size(1920, 1080, (1, 1), 90);
        assert_eq!((w, h), (1080, 1920));
        let rungs = plan(&LadderConfig::default(), w, h, 30.0).expect("plan");
        assert_eq!(names(&rungs)[1], ("720p".into(), 720, 1280));
    }

    #[test]
    fn anamorphic_pixels_are_squared_before_planning() {
        assert_eq!(display_size(720, 480, (32, 27), 0), (853, 480));
        let rungs = plan(&LadderConfig::default(), 853, 480, 30.0).expect("plan");
        assert_eq!((rungs[0].width, rungs[0].height), (854, 480));
    }

    #[test]
    fn a_source_below_every_rung_keeps_its_own_size() {
        let rungs = plan(&LadderConfig::default(), 320, 239, 30.0).expect("plan");
        assert_eq!(names(&rungs), vec![("240p".into(), 320, 240)]);
        assert!(rungs[0].bitrate_bps < 800_000 && rungs[0].bitrate_bps >= 100_000);
    }

    #[test]
    fn a_tiny_source_is_refused_with_its_size() {
        let err = plan(&LadderConfig::default(), 2, 2, 30.0).expect_err("too small");
        assert_eq!(
            err.to_string(),
            "the video is 2×2 pixels; the smallest accepted short side is 16 pixels"
        );
    }

    #[test]
    fn levels_follow_frame_size_rate_and_bitrate() {
        assert_eq!(h264_level(1920, 1080, 30.0, 7_500_000), 40);
        assert_eq!(h264_level(1920, 1080, 60.0, 7_500_000), 42);
        assert_eq!(h264_level(1280, 720, 60.0, 4_200_000), 32);
        assert_eq!(h264_level(640, 360, 30.0, 1_200_000), 30);
        assert_eq!(h264_level(1920, 1080, 30.0, 30_000_000), 41);
    }

    #[test]
    fn frame_rates_snap_to_broadcast_rates_and_halve_above_the_cap() {
        assert_eq!(Fps::choose(29.97, 60.0), Fps { num: 30000, den: 1001 });
        assert_eq!(Fps::choose(30.0, 60.0), Fps { num: 30, den: 1 });
        assert_eq!(Fps::choose(120.0, 60.0), Fps { num: 60, den: 1 });
        assert_eq!(Fps::choose(f64::NAN, 60.0), Fps { num: 30, den: 1 });
        assert_eq!(Fps::choose(12.5, 60.0), Fps { num: 12500, den: 1000 });
    }

    #[test]
    fn a_short_first_segment_cuts_the_first_full_one_in_two_and_leaves_the_grid() {
        let fps = Fps { num: 30, den: 1 };
        let s = Segmenter::of(&LadderConfig::default(), fps);
        let starts: Vec<u64> = (0..1000).filter(|&n| s.is_boundary(n)).take(5).collect();
        assert_eq!(starts, vec![0, 60, 120, 240, 360]);
        assert_eq!((0..5).map(|k| s.start_of(k)).collect::<Vec<_>>(), starts);
        assert_eq!(s.index_of(60), Some(1));
        assert_eq!(s.index_of(240), Some(3));
        assert_eq!(s.index_of(61), None);
        assert_eq!(s.max_frames(), 120);
        // The segment after what is stored: 2 s, then 2 s, then 4 s.
        assert!((s.next_seconds(0.0, fps) - 2.0).abs() < 1e-9);
        assert!((s.next_seconds(2.0, fps) - 2.0).abs() < 1e-9);
        assert!((s.next_seconds(4.0, fps) - 4.0).abs() < 1e-9);
        assert!((s.next_seconds(8.0, fps) - 4.0).abs() < 1e-9);
        // 29.97 fps: the first ends at frame 60 (2.002 s), the grid stays 120, 240, …, 1079.
        let ntsc = Fps { num: 30000, den: 1001 };
        let s = Segmenter::of(&LadderConfig::default(), ntsc);
        assert_eq!(s.start_of(1), 60);
        assert_eq!(s.start_of(10), 1079);
        assert!(s.is_boundary(1079) && s.is_boundary(120));
        // Off, or as long as the rest: the uniform grid.
        for first in [0, 4, 6] {
            let config = LadderConfig {
                first_segment_seconds: first,
                ..LadderConfig::default()
            };
            let s = Segmenter::of(&config, fps);
            assert_eq!((0..3).map(|k| s.start_of(k)).collect::<Vec<_>>(), [0, 120, 240]);
            assert!(!s.is_boundary(60));
        }
    }

    #[test]
    fn segment_boundaries_fall_on_the_first_frame_at_each_multiple() {
        let s = Segmenter::new(4, Fps { num: 30, den: 1 });
        assert!(s.is_boundary(0) && s.is_boundary(120) && s.is_boundary(240));
        assert!(!s.is_boundary(1) && !s.is_boundary(119) && !s.is_boundary(121));
        assert_eq!(s.max_frames(), 120);
        // 29.97 fps: 4 s is 119.88 frames, so boundaries are 120, 240, 360, 480, 600, ...
        let s = Segmenter::new(4, Fps { num: 30000, den: 1001 });
        let starts: Vec<u64> = (0..2000).filter(|&n| s.is_boundary(n)).take(5).collect();
        assert_eq!(starts, vec![0, 120, 240, 360, 480]);
        assert_eq!(
            (1..=200).map(|k| s.start_of(k)).filter(|&n| !s.is_boundary(n)).count(),
            0
        );
        assert_eq!(s.start_of(9), 1079);
    }
}
