//! What a worker agrees to encode: bounds on a source's picture size, frame rate and length,
//! and on an attempt's wall time. Uploads are untrusted: a tiny, highly compressible file can
//! declare 8K at 240 fps for ten hours and hold an encoder (inside the API process, embedded)
//! for days. Each bound is checked at probe time where the probe can tell, and enforced while
//! decoding where it cannot (a stream that lies about its length, a picture that grows); a
//! source past one fails for good with a reason that names the limit.

use std::time::Duration;

use vodsource_domain::SourceProbe;

use super::MediaError;

/// The bounds. Defaults are what a platform would choose: up to 8K (7680×4320), 120 fps,
/// 6 hours, and an attempt may run 8× the source's duration plus 10 minutes.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceLimits {
    /// Largest picture, in pixels (width × height, before scaling).
    pub max_pixels: u64,
    /// Highest frame rate, frames per second.
    pub max_frame_rate: f64,
    /// Longest source.
    pub max_duration: Duration,
    /// An attempt may run this many times the source's duration ...
    pub wall_time_factor: f64,
    /// ... plus this (which is also the whole allowance before the probe knows the duration).
    pub wall_time_floor: Duration,
}

impl Default for SourceLimits {
    fn default() -> Self {
        Self {
            max_pixels: 7680 * 4320,
            max_frame_rate: 120.0,
            max_duration: Duration::from_secs(6 * 3600),
            wall_time_factor: 8.0,
            wall_time_floor: Duration::from_secs(600),
        }
    }
}

fn hms(d: Duration) -> String {
    let secs = d.as_secs();
    match (secs / 3600, secs % 3600 / 60, secs % 60) {
        (0, 0, s) => format!("{s} s"),
        (0, m, 0) => format!("{m} min"),
        (0, m, s) => format!("{m} min {s} s"),
        (h, 0, 0) => format!("{h} h"),
        (h, m, _) => format!("{h} h {m} min"),
    }
}

impl SourceLimits {
    /// Refuses a probed source past a bound.
    ///
    /// # Errors
    /// A `Source` error naming the limit and the source's value.
    pub fn check_probe(&self, probe: &SourceProbe) -> Result<(), MediaError> {
        let pixels = u64::from(probe.width) * u64::from(probe.height);
        if pixels > self.max_pixels {
            return Err(MediaError::bad(format!(
                "the source's picture is {}x{} ({pixels} pixels), above the limit of {} pixels per frame (max_source_pixels)",
                probe.width, probe.height, self.max_pixels
            )));
        }
        if probe.frame_rate > self.max_frame_rate {
            return Err(MediaError::bad(format!(
                "the source runs at {:.3} fps, above the limit of {} fps (max_source_fps)",
                probe.frame_rate, self.max_frame_rate
            )));
        }
        let duration = Duration::from_millis(probe.duration_ms);
        if duration > self.max_duration {
            return Err(MediaError::bad(
                self.too_long(&format!("the source lasts {}", hms(duration))),
            ));
        }
        Ok(())
    }

    /// Refuses a decoded picture larger than the limit (a stream can change size mid-way).
    ///
    /// # Errors
    /// A `Source` error naming the limit.
    pub fn check_picture(&self, width: u32, height: u32) -> Result<(), MediaError> {
        let pixels = u64::from(width) * u64::from(height);
        if pixels > self.max_pixels {
            return Err(MediaError::bad(format!(
                "a picture of the source is {width}x{height} ({pixels} pixels), above the limit of {} pixels per frame (max_source_pixels)",
                self.max_pixels
            )));
        }
        Ok(())
    }

    /// The most output frames at `fps` the duration limit allows.
    pub fn max_frames(&self, fps: f64) -> u64 {
        (self.max_duration.as_secs_f64() * fps).ceil() as u64
    }

    /// The reason given when decoding runs past the duration limit.
    pub fn past_duration(&self) -> MediaError {
        MediaError::bad(self.too_long("the source's video runs longer than it declared, and"))
    }

    fn too_long(&self, what: &str) -> String {
        format!(
            "{what} past the limit of {} (max_source_duration_secs)",
            hms(self.max_duration)
        )
    }

    /// How long an attempt on a source of `duration` may run.
    pub fn wall_time(&self, duration: Duration) -> Duration {
        self.wall_time_floor + duration.mul_f64(self.wall_time_factor.max(0.0))
    }

    /// The reason given when an attempt runs past its wall time.
    pub fn past_wall_time(&self, allowed: Duration) -> String {
        format!(
            "the encode ran past its time limit of {} ({}x the source's duration plus {}; encode_time_factor)",
            hms(allowed),
            self.wall_time_factor,
            hms(self.wall_time_floor)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(width: u32, height: u32, fps: f64, secs: u64) -> SourceProbe {
        SourceProbe {
            duration_ms: secs * 1000,
            width,
            height,
            rotation: 0,
            frame_rate: fps,
            variable_frame_rate: false,
            video_codec: Some("h264".into()),
            audio_codec: None,
        }
    }

    #[test]
    fn a_source_past_a_limit_is_refused_naming_the_limit() {
        let limits = SourceLimits::default();
        assert!(limits.check_probe(&probe(7680, 4320, 120.0, 6 * 3600)).is_ok());
        let cases = [
            (probe(15360, 8640, 30.0, 60), "max_source_pixels"),
            (probe(1920, 1080, 240.0, 60), "max_source_fps"),
            (probe(3840, 2160, 60.0, 10 * 3600), "max_source_duration_secs"),
        ];
        for (source, limit) in cases {
            let error = limits.check_probe(&source).expect_err(limit);
            assert!(!error.retryable(), "a limit is for good");
            assert!(error.message.contains(limit), "{}", error.message);
        }
        assert!(limits
            .check_probe(&probe(3840, 2160, 60.0, 10 * 3600))
            .expect_err("long")
            .message
            .contains("lasts 10 h past the limit of 6 h"));
    }

    #[test]
    fn the_wall_time_grows_with_the_duration() {
        let limits = SourceLimits::default();
        assert_eq!(limits.wall_time(Duration::ZERO), Duration::from_secs(600));
        assert_eq!(
            limits.wall_time(Duration::from_secs(3600)),
            Duration::from_secs(600 + 8 * 3600)
        );
        assert_eq!(limits.max_frames(30.0), 6 * 3600 * 30);
        assert!(limits.past_wall_time(Duration::from_secs(900)).contains("15 min"));
    }
}
