//! How far a transcode is: each rung's encoded frames against the frames expected.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::ladder::RungPlan;

/// How far the transcode is, shared with whoever reports progress.
#[derive(Debug, Default)]
pub struct Progress {
    state: Mutex<ProgressState>,
    /// Notified whenever a rung advances.
    advanced: Condvar,
}

#[derive(Debug, Default, Clone)]
struct ProgressState {
    /// When the first picture went to the encoders.
    began: Option<Instant>,
    total_frames: u64,
    rungs: Vec<(String, u64)>,
    packaging: bool,
}

/// A reading of [`Progress`].
#[derive(Debug, Clone, PartialEq)]
pub struct ProgressSnapshot {
    /// Frames every rung has encoded (the slowest rung's count).
    pub frames: u64,
    /// Frames expected from the source's duration.
    pub total_frames: u64,
    /// The slowest rung, if encoding has started.
    pub rendition: Option<String>,
    /// Every rung is encoded; manifests and thumbnails are being written.
    pub packaging: bool,
}

impl ProgressSnapshot {
    /// 0 to 100.
    pub fn percent(&self) -> f64 {
        if self.total_frames == 0 {
            return 0.0;
        }
        (self.frames as f64 * 100.0 / self.total_frames as f64).clamp(0.0, 100.0)
    }
}

impl Progress {
    fn lock(&self) -> std::sync::MutexGuard<'_, ProgressState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn start(&self, total_frames: u64, rungs: &[RungPlan]) {
        let mut state = self.lock();
        state.total_frames = total_frames.max(1);
        state.began = None;
        state.rungs = rungs.iter().map(|r| (r.name.clone(), 0)).collect();
    }

    /// Marks the moment encoding begins (the inputs are open, pictures about to flow); the
    /// first mark of a transcode counts.
    pub(super) fn begin(&self) {
        self.lock().began.get_or_insert_with(Instant::now);
    }

    /// When the encoding began, once it has: rates measured from then leave out opening the
    /// source and the encoders.
    pub fn began(&self) -> Option<Instant> {
        self.lock().began
    }

    pub(super) fn packaging(&self) {
        self.lock().packaging = true;
    }

    pub(super) fn set(&self, rung: usize, frames: u64) {
        if let Some(slot) = self.lock().rungs.get_mut(rung) {
            slot.1 = frames;
        }
        self.advanced.notify_all();
    }

    /// The fewest frames any of the rungs `from..` has encoded.
    pub(super) fn frames_from(&self, from: usize) -> u64 {
        let state = self.lock();
        state
            .rungs
            .iter()
            .skip(from)
            .map(|(_, frames)| *frames)
            .min()
            .unwrap_or(0)
    }

    /// Waits until a rung advances, or `at_most`.
    pub(super) fn wait(&self, at_most: Duration) {
        let state = self.lock();
        let _ = self.advanced.wait_timeout(state, at_most);
    }

    /// The current reading.
    pub fn snapshot(&self) -> ProgressSnapshot {
        let state = self.lock();
        let slowest = state.rungs.iter().min_by_key(|(_, frames)| *frames);
        ProgressSnapshot {
            frames: slowest.map_or(0, |(_, f)| *f),
            total_frames: state.total_frames,
            rendition: slowest.map(|(name, _)| name.clone()),
            packaging: state.packaging,
        }
    }
}
