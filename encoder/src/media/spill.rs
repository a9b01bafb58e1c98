//! The larger rungs' pictures past their queue, once a lead on the one decode
//! ([`super::SharedLead`]) would otherwise fall behind a viewer: the decode leaves them here
//! and goes on with the lead, and a relay thread hands them to the larger rungs in order as
//! they take them. They wait in memory as they are (with the smaller sizes the decode made of
//! them) up to a budget, then on disk, in a file beside the outputs, at the top rung's size
//! alone (the larger rungs scale the others again), up to a second budget; past both, the
//! larger rungs get a decode of their own after all, from the next picture on. A write and a
//! read of a picture cost a fraction of decoding it again (~2 ms against ~9 ms for 1080p),
//! holding it in memory nothing.
//!
//! The file is a row of picture-sized slots, each reused once the relay has read it back:
//! writing over pages the system already holds costs a quarter of writing new ones (measured:
//! ~0.8 ms against 1.5–3.7 ms of system time per 1080p picture written and read back), and the
//! file holds at most what waited at once. It is unlinked as soon as it is created: nothing is
//! left behind, whatever ends the process.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use ffmpeg::format::Pixel;
use ffmpeg::{color, frame, picture};
use ffmpeg_next as ffmpeg;

use super::video::{Buffers, Picture};
use super::MediaError;

/// How often a decode waiting for the spill to drain looks again at whether its lead is
/// falling behind.
const RECHECK: Duration = Duration::from_millis(20);

/// What a spill did, once over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spilled {
    /// The first picture that waited past the queue.
    pub from: u64,
    /// Pictures that waited past the queue (in memory or on disk) and were handed on.
    pub pictures: u64,
    /// Of those, the pictures written to disk.
    pub on_disk: u64,
    /// The most bytes waiting on disk at once.
    pub peak_bytes: u64,
    /// The most bytes of pictures waiting in memory at once.
    pub peak_held_bytes: u64,
}

/// The spill of one encode, shared by the decode (through a [`Writer`]) and the relay.
pub(super) struct Spill {
    /// Bytes of pictures that may wait in memory.
    held_budget: u64,
    /// Bytes that may wait on disk.
    budget: u64,
    state: Mutex<State>,
    /// Notified when a picture is written or handed on, and when the writer is done.
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// Left by the decode, not yet handed on, in order.
    waiting: VecDeque<Waiting>,
    /// Bytes written and not yet read back.
    bytes: u64,
    peak_bytes: u64,
    /// Bytes of the pictures waiting in memory.
    held_bytes: u64,
    peak_held_bytes: u64,
    first: Option<u64>,
    /// Left by the decode, in memory or on disk.
    written: u64,
    /// Of those, written to disk.
    on_disk: u64,
    /// Read back and handed to the larger rungs.
    handed: u64,
    /// The writer is done: no more pictures come.
    closed: bool,
    /// After the pictures waiting, the larger rungs need a decode of their own from this one.
    then_decode_from: Option<u64>,
    /// The relay has stopped (done, or failed: it says why when joined).
    relay_over: bool,
    /// Slots of the file read back, to be written again (the last freed first).
    free: Vec<u64>,
    /// Slots the file has.
    slots: u64,
}

/// A picture waiting past the queue.
enum Waiting {
    /// In memory, as it is, taking these bytes.
    Held(Picture, u64),
    /// On disk: its shape and properties stay in memory.
    OnDisk(OnDisk),
}

/// A picture on disk.
struct OnDisk {
    shape: Shape,
    file: Arc<File>,
    at: u64,
}

/// What the encoders read from a picture besides its pixels.
#[derive(Clone, Copy)]
struct Shape {
    format: Pixel,
    width: u32,
    height: u32,
    pts: Option<i64>,
    kind: picture::Type,
    range: color::Range,
    space: color::Space,
    primaries: color::Primaries,
    transfer: color::TransferCharacteristic,
}

impl Shape {
    fn of(picture: &frame::Video) -> Self {
        Self {
            format: picture.format(),
            width: picture.width(),
            height: picture.height(),
            pts: picture.pts(),
            kind: picture.kind(),
            range: picture.color_range(),
            space: picture.color_space(),
            primaries: picture.color_primaries(),
            transfer: picture.color_transfer_characteristic(),
        }
    }

    /// Bytes of each plane's rows (8-bit 4:2:0: a byte a sample), or `None` for a format
    /// the spill does not hold.
    fn planes(&self) -> Option<[(usize, usize); 3]> {
        if self.format != Pixel::YUV420P {
            return None;
        }
        let (w, h) = (self.width as usize, self.height as usize);
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        Some([(w, h), (cw, ch), (cw, ch)])
    }

    fn bytes(&self) -> Option<u64> {
        self.planes()
            .map(|planes| planes.iter().map(|(w, h)| (w * h) as u64).sum())
    }

    /// A picture of this shape from `buffers`, with its properties (its pixels are the last
    /// use's).
    fn picture(&self, buffers: &mut Buffers) -> frame::Video {
        let mut picture = buffers.take(self.format, self.width, self.height);
        picture.set_pts(self.pts);
        picture.set_kind(self.kind);
        picture.set_color_range(self.range);
        picture.set_color_space(self.space);
        picture.set_color_primaries(self.primaries);
        picture.set_color_transfer_characteristic(self.transfer);
        picture
    }
}

impl Spill {
    /// A spill that holds at most `held_budget` bytes of pictures in memory, then at most
    /// `budget` bytes on disk.
    pub(super) fn new(held_budget: u64, budget: u64) -> Self {
        Self {
            held_budget,
            budget,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether pictures written are still to be handed on: until they are, a picture after
    /// them must go through the spill too, or it would overtake them.
    pub(super) fn pending(&self) -> bool {
        let state = self.lock();
        state.handed < state.written
    }

    /// Waits until every picture written has been handed on (true), or `behind()` (false).
    /// Fails (as cancelled: the relay says why) when the relay stopped first.
    pub(super) fn drained_unless(&self, behind: impl Fn() -> bool) -> Result<bool, MediaError> {
        loop {
            {
                let state = self.lock();
                if state.handed == state.written {
                    return Ok(true);
                }
                if state.relay_over {
                    return Err(MediaError::cancelled("the larger rungs' relay stopped"));
                }
                drop(
                    self.changed
                        .wait_timeout(state, RECHECK)
                        .unwrap_or_else(std::sync::PoisonError::into_inner),
                );
            }
            if behind() {
                return Ok(false);
            }
        }
    }

    /// What the spill did, if it wrote anything.
    pub(super) fn spilled(&self) -> Option<Spilled> {
        let state = self.lock();
        state.first.map(|from| Spilled {
            from,
            pictures: state.handed,
            on_disk: state.on_disk,
            peak_bytes: state.peak_bytes,
            peak_held_bytes: state.peak_held_bytes,
        })
    }

    /// Hands every picture written to `out`, in order, as the larger rungs take them, until
    /// the writer is done; then returns the picture from which the larger rungs need a decode
    /// of their own, if the spill ran out of budget. Stops early when `cancel` or `halt` is
    /// set (the decode failed) or the larger rungs stopped.
    pub(super) fn relay(
        &self,
        out: &SyncSender<super::video::Picture>,
        stops: (&AtomicBool, &AtomicBool),
    ) -> Result<Option<u64>, MediaError> {
        let relayed = self.relay_until_closed(out, stops);
        self.lock().relay_over = true;
        self.changed.notify_all();
        relayed
    }

    fn relay_until_closed(
        &self,
        out: &SyncSender<super::video::Picture>,
        (cancel, halt): (&AtomicBool, &AtomicBool),
    ) -> Result<Option<u64>, MediaError> {
        let stopped = || cancel.load(Ordering::Relaxed) || halt.load(Ordering::Relaxed);
        let mut bytes = Vec::new();
        // The pictures read back, written again once the larger rungs are done with them.
        let mut buffers = Buffers::default();
        loop {
            let next = {
                let mut state = self.lock();
                loop {
                    if stopped() {
                        return Err(MediaError::cancelled("cancelled"));
                    }
                    if let Some(next) = state.waiting.pop_front() {
                        break next;
                    }
                    if state.closed {
                        return Ok(state.then_decode_from);
                    }
                    state = self
                        .changed
                        .wait_timeout(state, RECHECK)
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .0;
                }
            };
            let picture = match next {
                Waiting::Held(picture, len) => {
                    let mut state = self.lock();
                    state.held_bytes = state.held_bytes.saturating_sub(len);
                    picture
                }
                Waiting::OnDisk(next) => {
                    let picture = read(&next, &mut bytes, &mut buffers)?;
                    let len = next.shape.bytes().unwrap_or(0);
                    let mut state = self.lock();
                    state.bytes = state.bytes.saturating_sub(len);
                    state.free.push(next.at);
                    buffers.hand_out(picture).into()
                }
            };
            out.send(picture)
                .map_err(|_| MediaError::cancelled("the larger rungs stopped"))?;
            self.lock().handed += 1;
            self.changed.notify_all();
        }
    }
}

/// Reads `waiting`'s pixels back into a picture of its shape from `buffers`, through `bytes`.
fn read(waiting: &OnDisk, bytes: &mut Vec<u8>, buffers: &mut Buffers) -> Result<frame::Video, MediaError> {
    let shape = waiting.shape;
    let (Some(planes), Some(len)) = (shape.planes(), shape.bytes()) else {
        return Err(MediaError::internal(
            "a spilled picture of a format the spill does not hold",
        ));
    };
    let fail = |e: std::io::Error| MediaError::io(format!("read back a spilled picture: {e}"));
    let mut picture = shape.picture(buffers);
    let mut at = waiting.at;
    for (plane, (width, height)) in planes.into_iter().enumerate() {
        let stride = picture.stride(plane);
        let data = picture.data_mut(plane);
        if stride == width {
            // Rows without padding (1080p, 720p): straight into the picture.
            waiting
                .file
                .read_exact_at(&mut data[..width * height], at)
                .map_err(fail)?;
        } else {
            bytes.resize(width * height, 0);
            waiting.file.read_exact_at(bytes, at).map_err(fail)?;
            for (row, samples) in bytes.chunks_exact(width).enumerate() {
                data[row * stride..row * stride + width].copy_from_slice(samples);
            }
        }
        at += (width * height) as u64;
    }
    debug_assert_eq!(at - waiting.at, len);
    Ok(picture)
}

/// The decode's side of a [`Spill`]: writes pictures to a file in `dir`. Dropped, it tells the
/// relay that no more come.
pub(super) struct Writer<'a> {
    spill: &'a Spill,
    dir: &'a Path,
    /// The file, once a picture was written.
    file: Option<Arc<File>>,
    bytes: Vec<u8>,
}

impl<'a> Writer<'a> {
    pub(super) fn new(spill: &'a Spill, dir: &'a Path) -> Self {
        Self {
            spill,
            dir,
            file: None,
            bytes: Vec::new(),
        }
    }

    /// The spill this writes to.
    pub(super) fn spill(&self) -> &'a Spill {
        self.spill
    }

    /// Leaves picture `n` for the relay to hand on: in memory while the pictures there stay
    /// within its budget, else on disk. False, with nothing left, when it would take the disk
    /// past its budget too (or it is of a format the spill does not hold).
    pub(super) fn push(&mut self, n: u64, picture: Picture) -> Result<bool, MediaError> {
        let held = std::iter::once(&picture.frame)
            .chain(&picture.smaller)
            .map(|frame| Shape::of(frame).bytes().unwrap_or(u64::MAX))
            .fold(0u64, u64::saturating_add);
        {
            let mut state = self.spill.lock();
            if state.held_bytes.saturating_add(held) <= self.spill.held_budget {
                state.waiting.push_back(Waiting::Held(picture, held));
                state.held_bytes += held;
                state.peak_held_bytes = state.peak_held_bytes.max(state.held_bytes);
                state.written += 1;
                state.first.get_or_insert(n);
                drop(state);
                self.spill.changed.notify_all();
                return Ok(true);
            }
        }
        let picture = &picture.frame;
        let shape = Shape::of(picture);
        let (Some(planes), Some(len)) = (shape.planes(), shape.bytes()) else {
            return Ok(false);
        };
        // A slot read back (a picture being read still waits, its slot taken), else a new one.
        let at = {
            let mut state = self.spill.lock();
            if state.bytes.saturating_add(len) > self.spill.budget {
                return Ok(false);
            }
            match state.free.pop() {
                Some(at) => at,
                None => {
                    state.slots += 1;
                    (state.slots - 1) * len
                }
            }
        };
        let file = match self.file.as_ref() {
            Some(file) => Arc::clone(file),
            None => Arc::clone(self.file.insert(Arc::new(self.create()?))),
        };
        if let Err(e) = self.write(&file, picture, planes, at) {
            self.spill.lock().free.push(at);
            return Err(MediaError::io(format!("spill a picture for the larger rungs: {e}")));
        }
        let mut state = self.spill.lock();
        state.waiting.push_back(Waiting::OnDisk(OnDisk { shape, file, at }));
        state.bytes += len;
        state.peak_bytes = state.peak_bytes.max(state.bytes);
        state.written += 1;
        state.on_disk += 1;
        state.first.get_or_insert(n);
        drop(state);
        self.spill.changed.notify_all();
        Ok(true)
    }

    /// Writes `picture`'s `planes` to `file` at `at`, row after row without padding.
    fn write(
        &mut self,
        file: &File,
        picture: &frame::Video,
        planes: [(usize, usize); 3],
        mut at: u64,
    ) -> std::io::Result<()> {
        for (plane, (width, height)) in planes.into_iter().enumerate() {
            let (stride, data) = (picture.stride(plane), picture.data(plane));
            if stride == width {
                file.write_all_at(&data[..width * height], at)?;
            } else {
                self.bytes.clear();
                for row in 0..height {
                    self.bytes.extend_from_slice(&data[row * stride..row * stride + width]);
                }
                file.write_all_at(&self.bytes, at)?;
            }
            at += (width * height) as u64;
        }
        Ok(())
    }

    /// Tells the relay that, after the pictures written, the larger rungs need a decode of
    /// their own from picture `n` on.
    pub(super) fn then_decode_from(self, n: u64) {
        self.spill.lock().then_decode_from = Some(n);
        // Dropped: closed.
    }

    /// A new file in `dir`, unlinked at once: it lives as long as it is open.
    fn create(&self) -> Result<File, MediaError> {
        let fail = |e: std::io::Error| MediaError::io(format!("spill to {}: {e}", self.dir.display()));
        std::fs::create_dir_all(self.dir).map_err(fail)?;
        for attempt in 0..100 {
            let path = self.dir.join(format!(".spill-{}-{attempt}", std::process::id()));
            match OpenOptions::new().read(true).write(true).create_new(true).open(&path) {
                Ok(file) => {
                    std::fs::remove_file(&path).map_err(fail)?;
                    return Ok(file);
                }
                // Left by a process that died between creating and unlinking one.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(fail(e)),
            }
        }
        Err(MediaError::io(format!(
            "spill to {}: a hundred names are taken",
            self.dir.display()
        )))
    }
}

impl Drop for Writer<'_> {
    fn drop(&mut self) {
        self.spill.lock().closed = true;
        self.spill.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picture(n: u8, (width, height): (u32, u32)) -> frame::Video {
        let mut picture = frame::Video::new(Pixel::YUV420P, width, height);
        for plane in 0..3 {
            for (i, byte) in picture.data_mut(plane).iter_mut().enumerate() {
                *byte = n.wrapping_add(plane as u8 * 50).wrapping_add((i % 7) as u8);
            }
        }
        picture.set_pts(Some(i64::from(n)));
        picture.set_kind(if n.is_multiple_of(2) {
            picture::Type::I
        } else {
            picture::Type::None
        });
        picture.set_color_range(color::Range::MPEG);
        picture
    }

    /// `picture` as the decode leaves it.
    fn held(picture: &frame::Video) -> Picture {
        Arc::new(picture.clone()).into()
    }

    /// The visible samples of each plane, row by row.
    fn samples(picture: &frame::Video) -> Vec<Vec<u8>> {
        let planes = Shape::of(picture).planes().expect("4:2:0");
        planes
            .iter()
            .enumerate()
            .map(|(plane, &(width, height))| {
                let (stride, data) = (picture.stride(plane), picture.data(plane));
                (0..height)
                    .flat_map(|row| data[row * stride..row * stride + width].to_vec())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn spilled_pictures_come_back_in_order_with_their_pixels_and_properties() {
        crate::media::init().expect("ffmpeg");
        let dir = std::env::temp_dir().join(format!("vodsource-spill-{}", std::process::id()));
        // An odd size: the chroma planes round up. A budget of 5 pictures: the 100 share the
        // file's 5 slots at most, each written again once read back.
        let size = (321, 181);
        let sent: Vec<frame::Video> = (0..100).map(|n| picture(n, size)).collect();
        let bytes = Shape::of(&sent[0]).bytes().expect("4:2:0");
        let spill = Spill::new(0, 5 * bytes);
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let got = std::thread::scope(|scope| {
            let spill = &spill;
            // The relay's queue closes as it ends.
            let relay = scope.spawn(move || spill.relay(&tx, (&AtomicBool::new(false), &AtomicBool::new(false))));
            let reader = scope.spawn(move || {
                rx.iter()
                    .map(|p: super::super::video::Picture| {
                        // Kept by the relay too (to read a later one into once the larger
                        // rungs have dropped it), unless the relay has ended since.
                        let kept = Arc::strong_count(&p.frame) == 2;
                        (p.frame, kept)
                    })
                    .collect::<Vec<_>>()
            });
            let mut writer = Writer::new(spill, &dir);
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            for (n, picture) in sent.iter().enumerate() {
                // Refused while 5 wait: the relay frees a slot as the reader takes one.
                while !writer.push(n as u64 + 7, held(picture)).expect("writes") {
                    assert!(std::time::Instant::now() < deadline, "the relay did not free a slot");
                    std::thread::yield_now();
                }
            }
            writer.then_decode_from(107);
            assert_eq!(relay.join().expect("relay").expect("relays"), Some(107));
            reader.join().expect("reader")
        });
        // The relay ends once it has handed on the last: at most the one queued and the one
        // being looked at may have been let go by then.
        let kept = got.iter().filter(|(_, kept)| *kept).count();
        assert!(kept >= got.len() - 2, "{kept} of {} kept by the relay", got.len());
        let got: Vec<_> = got.into_iter().map(|(picture, _)| picture).collect();
        let order: Vec<Option<i64>> = got.iter().map(|p| p.pts()).collect();
        assert_eq!(order, (0..100).map(Some).collect::<Vec<_>>(), "in the order written");
        for (n, (sent, got)) in sent.iter().zip(&got).enumerate() {
            assert!(samples(got) == samples(sent), "picture {n}'s pixels differ");
            assert_eq!(
                (got.kind(), got.color_range()),
                (sent.kind(), sent.color_range()),
                "picture {n}"
            );
        }
        let spilled = spill.spilled().expect("spilled");
        assert_eq!((spilled.from, spilled.pictures), (7, 100));
        assert_eq!(bytes, 321 * 181 + 2 * 161 * 91);
        assert!(
            spilled.peak_bytes >= bytes && spilled.peak_bytes <= 5 * bytes,
            "{spilled:?}"
        );
        let slots = spill.lock().slots;
        assert!((1..=5).contains(&slots), "{slots} slots");
        // Every file was unlinked when it was made.
        let left = std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
        let _ = std::fs::remove_dir(&dir);
        assert_eq!(left, 0);
    }

    #[test]
    fn a_picture_past_the_budget_is_refused_and_nothing_is_written() {
        crate::media::init().expect("ffmpeg");
        let dir = std::env::temp_dir().join(format!("vodsource-spill-budget-{}", std::process::id()));
        let one = picture(1, (64, 64));
        let bytes = Shape::of(&one).bytes().expect("4:2:0");
        assert_eq!(bytes, 64 * 64 * 3 / 2);
        // Room for two pictures waiting, not three.
        let spill = Spill::new(0, 2 * bytes + bytes / 2);
        let mut writer = Writer::new(&spill, &dir);
        assert!(writer.push(0, held(&one)).expect("writes"));
        assert!(writer.push(1, held(&one)).expect("writes"));
        assert!(!writer.push(2, held(&one)).expect("refuses"));
        assert!(spill.pending());
        assert_eq!(spill.lock().written, 2);
        // A budget of nothing holds nothing.
        let none = Spill::new(0, 0);
        assert!(!Writer::new(&none, &dir).push(0, held(&one)).expect("refuses"));
        assert_eq!(none.spilled(), None);
        let _ = std::fs::remove_dir(&dir);
    }
    #[test]
    fn pictures_wait_in_memory_as_they_are_up_to_its_budget_then_on_disk_and_come_back_in_order() {
        crate::media::init().expect("ffmpeg");
        let dir = std::env::temp_dir().join(format!("vodsource-spill-held-{}", std::process::id()));
        // A 64×64 picture with its 32×32: memory for two of them, disk for one 64×64.
        let (top, bytes) = (picture(0, (64, 64)), 64 * 64 * 3 / 2);
        let small = Arc::new(picture(0, (32, 32)));
        let with_small = |n: u8| Picture {
            frame: Arc::new(picture(n, (64, 64))),
            smaller: vec![Arc::clone(&small)],
        };
        let pair = bytes + 32 * 32 * 3 / 2;
        let spill = Spill::new(2 * pair, bytes);
        let mut writer = Writer::new(&spill, &dir);
        let first = with_small(0);
        let first_frame = Arc::clone(&first.frame);
        assert!(writer.push(10, first).expect("held"));
        assert!(writer.push(11, with_small(1)).expect("held"));
        assert!(writer.push(12, with_small(2)).expect("on disk"));
        assert!(!writer.push(13, held(&top)).expect("refused: both budgets are taken"));
        let waiting = |spill: &Spill| {
            let state = spill.lock();
            (state.held_bytes, state.bytes)
        };
        assert_eq!(waiting(&spill), (2 * pair, bytes));
        // The relay hands on the first: its memory is free again, and the next picture waits
        // there, behind the one on disk.
        let (tx, rx) = std::sync::mpsc::sync_channel(8);
        std::thread::scope(|scope| {
            let spill = &spill;
            let relay = scope.spawn(move || spill.relay(&tx, (&AtomicBool::new(false), &AtomicBool::new(false))));
            let got = rx.recv().expect("the first");
            assert!(Arc::ptr_eq(&got.frame, &first_frame), "handed on as it was, not copied");
            assert_eq!(got.smaller.len(), 1, "with the smaller size the decode made");
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while spill.lock().held_bytes > pair {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the relay did not hand on the first"
                );
                std::thread::yield_now();
            }
            assert!(writer.push(13, with_small(3)).expect("held"));
            drop(writer);
            assert_eq!(relay.join().expect("relay"), Ok(None));
            let rest: Vec<(Option<i64>, usize)> = rx.iter().map(|p| (p.frame.pts(), p.smaller.len())).collect();
            // In the order left; the one from disk without its smaller size.
            assert_eq!(rest, [(Some(1), 1), (Some(2), 0), (Some(3), 1)]);
        });
        assert_eq!(
            spill.spilled(),
            Some(Spilled {
                from: 10,
                pictures: 4,
                on_disk: 1,
                peak_bytes: bytes,
                peak_held_bytes: 2 * pair,
            })
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
