//! Settings shared by the commands that run encoding: the supervisor's retry policy and the
//! workers' ladder, lease and scratch folder.

use std::path::PathBuf;

use anyhow::Context;
use vodsource_commands::process::SupervisorConfig;
use vodsource_encoder::{LadderConfig, WorkerConfig};

use crate::config::Config;

/// Retry policy of the encoding supervisor.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SupervisionArgs {
    /// Attempts per round before an encode fails for good [default: 3].
    #[arg(long, env = "VODSOURCE_ENCODE_ATTEMPTS")]
    pub encode_attempts: Option<u32>,
    /// Backoff before the second attempt, doubling after, in seconds [default: 10].
    #[arg(long, env = "VODSOURCE_ENCODE_BACKOFF_SECS")]
    pub encode_backoff_secs: Option<u32>,
}

impl SupervisionArgs {
    /// The supervisor configuration these flags give.
    pub fn config(&self) -> SupervisorConfig {
        let defaults = SupervisorConfig::default();
        SupervisorConfig {
            max_attempts: self.encode_attempts.unwrap_or(defaults.max_attempts).max(1),
            backoff_base_secs: self.encode_backoff_secs.unwrap_or(defaults.backoff_base_secs),
            ..defaults
        }
    }
}

/// How encoding workers run.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct WorkerArgs {
    /// A TOML file with the ladder: `preset`, `segment_seconds`, `audio_bitrate_kbps`, `max_fps`,
    /// `[[rungs]] name, height, bitrate_kbps` [default: 1080p/720p/480p/360p at 5000/2800/1400/800 kbit/s, veryfast].
    #[arg(long, env = "VODSOURCE_LADDER")]
    pub ladder: Option<PathBuf>,
    /// Lease of a claim, extended by every progress report, in seconds [default: 30].
    #[arg(long, env = "VODSOURCE_ENCODE_LEASE_SECS")]
    pub encode_lease_secs: Option<u32>,
    /// Scratch folder of encodes [default: <data dir>/work].
    #[arg(long, env = "VODSOURCE_WORK_DIR")]
    pub work_dir: Option<PathBuf>,
    /// Largest source picture, in pixels per frame [default: 33177600 (8K, 7680x4320)].
    #[arg(long, env = "VODSOURCE_MAX_SOURCE_PIXELS")]
    pub max_source_pixels: Option<u64>,
    /// Highest source frame rate, fps [default: 120].
    #[arg(long, env = "VODSOURCE_MAX_SOURCE_FPS")]
    pub max_source_fps: Option<f64>,
    /// Longest source, in seconds [default: 21600 (6 h)].
    #[arg(long, env = "VODSOURCE_MAX_SOURCE_DURATION_SECS")]
    pub max_source_duration_secs: Option<u64>,
    /// An attempt may run this many times the source's duration, plus the floor below
    /// [default: 8].
    #[arg(long, env = "VODSOURCE_ENCODE_TIME_FACTOR")]
    pub encode_time_factor: Option<f64>,
    /// ... plus this many seconds (the whole allowance before the probe) [default: 600].
    #[arg(long, env = "VODSOURCE_ENCODE_TIME_FLOOR_SECS")]
    pub encode_time_floor_secs: Option<u64>,
}

impl WorkerArgs {
    /// `count` worker configurations named after `owner`.
    ///
    /// # Errors
    /// An unreadable or invalid ladder file.
    pub fn configs(&self, config: &Config, owner: &str, count: usize) -> anyhow::Result<Vec<WorkerConfig>> {
        let ladder = match &self.ladder {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
                toml::from_str::<LadderConfig>(&text)
                    .with_context(|| format!("in the ladder file {}", path.display()))?
            }
            None => LadderConfig::default(),
        };
        vodsource_encoder::ladder::plan(&ladder, 1920, 1080, 30.0)
            .map_err(|e| anyhow::anyhow!("the ladder cannot encode a 1080p source: {e}"))?;
        let work_dir = self.work_dir.clone().unwrap_or_else(|| config.data_dir.join("work"));
        let limits = self.limits()?;
        Ok((0..count)
            .map(|i| {
                let mut worker = WorkerConfig::new(format!("{owner}-enc{i}"), work_dir.clone());
                worker.ladder = ladder.clone();
                worker.limits = limits.clone();
                if let Some(lease) = self.encode_lease_secs {
                    worker.lease_secs = lease.max(3);
                    worker.progress_every = worker
                        .progress_every
                        .min(std::time::Duration::from_secs(u64::from(lease.max(3)) / 3));
                }
                worker
            })
            .collect())
    }

    /// The source limits, defaults where unset.
    ///
    /// # Errors
    /// A limit of zero or a negative factor.
    pub fn limits(&self) -> anyhow::Result<vodsource_encoder::SourceLimits> {
        let mut limits = vodsource_encoder::SourceLimits::default();
        if let Some(pixels) = self.max_source_pixels {
            anyhow::ensure!(pixels > 0, "max_source_pixels must be at least 1");
            limits.max_pixels = pixels;
        }
        if let Some(fps) = self.max_source_fps {
            anyhow::ensure!(fps > 0.0 && fps.is_finite(), "max_source_fps must be more than 0");
            limits.max_frame_rate = fps;
        }
        if let Some(secs) = self.max_source_duration_secs {
            anyhow::ensure!(secs > 0, "max_source_duration_secs must be at least 1");
            limits.max_duration = std::time::Duration::from_secs(secs);
        }
        if let Some(factor) = self.encode_time_factor {
            anyhow::ensure!(
                factor >= 0.0 && factor.is_finite(),
                "encode_time_factor must be 0 or more"
            );
            limits.wall_time_factor = factor;
        }
        if let Some(secs) = self.encode_time_floor_secs {
            limits.wall_time_floor = std::time::Duration::from_secs(secs);
        }
        Ok(limits)
    }
}
