//! How far a transcode is: each rung's encoded frames against the frames expected, and when
//! each rung's encoder began to give them out.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::ladder::RungPlan;

/// Called when a rung has closed a segment (from the rung's thread).
type OnSegment = Box<dyn Fn() + Send + Sync>;

/// How far the transcode is, shared with whoever reports progress.
#[derive(Default)]
pub struct Progress {
    state: Mutex<ProgressState>,
    /// Notified whenever a rung advances.
    advanced: Condvar,
    /// Told whenever a rung closes a segment.
    on_segment: Mutex<Option<OnSegment>>,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress")
            .field("state", &self.lock())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default, Clone)]
struct ProgressState {
    /// When the first picture went to the encoders.
    began: Option<Instant>,
    total_frames: u64,
    rungs: Vec<Rung>,
    packaging: bool,
}

#[derive(Debug, Clone)]
struct Rung {
    name: String,
    /// Frames encoded and written.
    frames: u64,
    /// When the encoder wrote its first frame: its pace from then on is its throughput,
    /// without the pictures it held back to look ahead before that.
    first_out: Option<Instant>,
    /// When it closed its first segment.
    first_closed: Option<Instant>,
}

/// What one rung's encoder has given out: how many frames since when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Output {
    /// Frames encoded and written.
    pub frames: u64,
    /// When the first of them was written.
    pub since: Instant,
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

/// `mutex` locked, whether or not a holder panicked (what it guards stays consistent).
fn locked<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Progress {
    fn lock(&self) -> std::sync::MutexGuard<'_, ProgressState> {
        locked(&self.state)
    }

    pub(super) fn start(&self, total_frames: u64, rungs: &[RungPlan]) {
        let mut state = self.lock();
        state.total_frames = total_frames.max(1);
        state.began = None;
        state.rungs = rungs
            .iter()
            .map(|r| Rung {
                name: r.name.clone(),
                frames: 0,
                first_out: None,
                first_closed: None,
            })
            .collect();
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

    /// Rung `rung` has written `frames` in all; `closed` when that closed a segment.
    pub(super) fn set(&self, rung: usize, frames: u64, closed: bool) {
        if let Some(slot) = self.lock().rungs.get_mut(rung) {
            slot.frames = frames;
            if frames > 0 {
                slot.first_out.get_or_insert_with(Instant::now);
            }
            if closed {
                slot.first_closed.get_or_insert_with(Instant::now);
            }
        }
        self.advanced.notify_all();
        if closed {
            if let Some(wake) = locked(&self.on_segment).as_ref() {
                wake();
            }
        }
    }

    /// Has `wake` called whenever a rung closes a segment (from the rung's thread: it must not
    /// block), in place of what was set before.
    pub fn on_segment(&self, wake: impl Fn() + Send + Sync + 'static) {
        *locked(&self.on_segment) = Some(Box::new(wake));
    }

    /// What the rung named `rung` has written, once it has written a frame.
    pub fn output(&self, rung: &str) -> Option<Output> {
        let state = self.lock();
        let slot = state.rungs.iter().find(|slot| slot.name == rung)?;
        slot.first_out.map(|since| Output {
            frames: slot.frames,
            since,
        })
    }

    /// The fewest frames any of the rungs `from..` has encoded.
    pub(super) fn frames_from(&self, from: usize) -> u64 {
        let state = self.lock();
        state.rungs.iter().skip(from).map(|rung| rung.frames).min().unwrap_or(0)
    }

    /// When the last of the rungs `from..` closed its first segment, once each has: no player
    /// can start on those rungs before.
    pub(super) fn first_segments_closed(&self, from: usize) -> Option<Instant> {
        let state = self.lock();
        let mut latest: Option<Instant> = None;
        for rung in state.rungs.iter().skip(from) {
            let at = rung.first_closed?;
            latest = Some(latest.map_or(at, |latest| latest.max(at)));
        }
        latest
    }

    /// Waits until a rung advances, or `at_most`.
    pub(super) fn wait(&self, at_most: Duration) {
        let state = self.lock();
        let _ = self.advanced.wait_timeout(state, at_most);
    }

    /// The current reading.
    pub fn snapshot(&self) -> ProgressSnapshot {
        let state = self.lock();
        let slowest = state.rungs.iter().min_by_key(|rung| rung.frames);
        ProgressSnapshot {
            frames: slowest.map_or(0, |rung| rung.frames),
            total_frames: state.total_frames,
            rendition: slowest.map(|rung| rung.name.clone()),
            packaging: state.packaging,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::ladder::{plan, LadderConfig};

    fn started() -> Progress {
        let progress = Progress::default();
        let rungs = plan(&LadderConfig::default(), 1280, 720, 30.0).expect("a ladder");
        progress.start(270, &rungs);
        progress
    }

    #[test]
    fn a_rung_has_an_output_from_its_first_frame_on_and_its_pace_counts_from_then() {
        let progress = started();
        progress.set(1, 0, false);
        assert_eq!(progress.output("480p"), None, "no frame out yet");
        progress.set(1, 1, false);
        let first = progress.output("480p").expect("out");
        assert_eq!(first.frames, 1);
        progress.set(1, 61, true);
        let later = progress.output("480p").expect("out");
        assert_eq!(
            (later.frames, later.since),
            (61, first.since),
            "the first frame's time stays"
        );
        assert_eq!(progress.output("720p"), None);
        assert_eq!(progress.output("1080p"), None, "not a rung of this encode");
    }

    #[test]
    fn the_rungs_from_one_on_have_closed_their_first_segments_when_the_last_of_them_has() {
        let progress = started();
        // 720p, 480p, 360p: the last two are the ones asked about.
        assert_eq!(progress.first_segments_closed(1), None);
        progress.set(1, 60, true);
        progress.set(0, 60, true);
        assert_eq!(progress.first_segments_closed(1), None, "360p has not closed one");
        progress.set(2, 59, false);
        assert_eq!(progress.first_segments_closed(1), None, "a frame is not a segment");
        progress.set(2, 60, true);
        let both = progress.first_segments_closed(1).expect("both closed one");
        assert_eq!(progress.first_segments_closed(2), Some(both), "360p was the last");
        assert_eq!(progress.first_segments_closed(0), Some(both), "the latest of the three");
        progress.set(1, 120, true);
        assert_eq!(
            progress.first_segments_closed(1),
            Some(both),
            "a later segment changes nothing"
        );
        assert_eq!(progress.first_segments_closed(3), None, "no rungs from there");
    }

    #[test]
    fn whoever_asked_is_told_of_each_closed_segment_and_only_of_those() {
        let progress = started();
        progress.set(0, 5, true);
        let told = Arc::new(AtomicUsize::new(0));
        let count = told.clone();
        progress.on_segment(move || {
            count.fetch_add(1, Ordering::Relaxed);
        });
        for frames in 1..=60 {
            progress.set(2, frames, false);
        }
        assert_eq!(told.load(Ordering::Relaxed), 0);
        progress.set(2, 61, true);
        progress.set(0, 61, true);
        assert_eq!(told.load(Ordering::Relaxed), 2);
    }
}
