//! Counters of the workers of one process, read as a [`StatsSnapshot`] by whoever serves
//! `/metrics`.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use crate::outcome::JobOutcome;

/// The steps whose time is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Fetching and probing the source.
    Probe,
    /// Decode, scale, encode, package, thumbnails.
    Transcode,
    /// Writing the outputs to the object store.
    Upload,
}

const STEPS: [(Step, &str); 3] = [
    (Step::Probe, "probe"),
    (Step::Transcode, "transcode"),
    (Step::Upload, "upload"),
];

/// The counters at one moment, for whoever serves `/metrics`.
#[derive(Debug, Clone, PartialEq)]
pub struct StatsSnapshot {
    /// Jobs by how they ended: `completed`, `failed_terminal`, `failed_retryable`,
    /// `abandoned`.
    pub jobs: [(&'static str, u64); 4],
    /// Workers encoding now.
    pub busy: i64,
    /// Seconds spent in each step: `probe`, `transcode`, `upload`.
    pub steps: [(&'static str, f64); 3],
    /// CPU seconds of encodes.
    pub cpu_seconds: f64,
    /// Seconds of media encoded.
    pub media_seconds: f64,
    /// Bytes of encoded media written.
    pub bytes_out: u64,
}

/// Job outcomes, times and volumes of this process's workers.
#[derive(Debug, Default)]
pub struct EncoderStats {
    completed: AtomicU64,
    failed_terminal: AtomicU64,
    failed_retryable: AtomicU64,
    abandoned: AtomicU64,
    busy: AtomicI64,
    step_us: [AtomicU64; 3],
    cpu_ms: AtomicU64,
    media_ms: AtomicU64,
    bytes_out: AtomicU64,
}

impl EncoderStats {
    pub(crate) fn started(&self) {
        self.busy.fetch_add(1, Ordering::Relaxed);
    }

    /// A job ended with `outcome`; `None` when the worker could not record one (a store
    /// failure), which ends like a retryable failure.
    pub(crate) fn ended(&self, outcome: Option<&JobOutcome>) {
        self.busy.fetch_sub(1, Ordering::Relaxed);
        let counter = match outcome {
            Some(JobOutcome::Completed { .. } | JobOutcome::ChunksWritten { .. }) => &self.completed,
            Some(JobOutcome::Failed { retryable: false, .. }) => &self.failed_terminal,
            Some(JobOutcome::Failed { retryable: true, .. }) | None => &self.failed_retryable,
            Some(JobOutcome::Abandoned { .. }) => &self.abandoned,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn step(&self, step: Step, elapsed: Duration) {
        if let Some(i) = STEPS.iter().position(|(s, _)| *s == step) {
            let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
            self.step_us[i].fetch_add(us, Ordering::Relaxed);
        }
    }

    pub(crate) fn produced(&self, cpu_seconds: f64, media_ms: u64, bytes_out: u64) {
        self.cpu_ms
            .fetch_add((cpu_seconds * 1000.0).max(0.0) as u64, Ordering::Relaxed);
        self.media_ms.fetch_add(media_ms, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes_out, Ordering::Relaxed);
    }

    /// Jobs that ended with `outcome` (`completed`, `failed_terminal`, `failed_retryable`,
    /// `abandoned`).
    pub fn jobs(&self, outcome: &str) -> u64 {
        match outcome {
            "completed" => self.completed.load(Ordering::Relaxed),
            "failed_terminal" => self.failed_terminal.load(Ordering::Relaxed),
            "failed_retryable" => self.failed_retryable.load(Ordering::Relaxed),
            "abandoned" => self.abandoned.load(Ordering::Relaxed),
            _ => 0,
        }
    }

    /// The counters as they are now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let seconds = |v: &AtomicU64| v.load(Ordering::Relaxed) as f64 / 1000.0;
        StatsSnapshot {
            jobs: ["completed", "failed_terminal", "failed_retryable", "abandoned"].map(|o| (o, self.jobs(o))),
            busy: self.busy.load(Ordering::Relaxed),
            steps: [0, 1, 2].map(|i| (STEPS[i].1, self.step_us[i].load(Ordering::Relaxed) as f64 / 1e6)),
            cpu_seconds: seconds(&self.cpu_ms),
            media_seconds: seconds(&self.media_ms),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
        }
    }
}
