//! The lake sink: a consumer group that turns a stream (`qoe-events`, `video-events`) into
//! Parquet files in the object store, exactly once.
//!
//! Per stream partition the sink keeps one open file per lake partition (UTC hour of event
//! time). When the partition's files reach the size limit, or the oldest record waits past the
//! age limit, the partition is *flushed*: its files are closed, then
//!
//! 1. a marker `lake/_sink/<group>/<stream>-<partition>.json` records the flush's offset range
//!    `first..=last`;
//! 2. each file is uploaded to `lake/<table>/event_date=…/event_hour=…/<stream>-<partition>-<first>-<last>.parquet`,
//!    named by the first and last offsets it holds;
//! 3. the offsets are committed up to `last`.
//!
//! A crash anywhere leaves the offsets at or before `first`. On restart the sink reads the
//! marker, and re-reads exactly `first..=last` before flushing again, whatever the limits say:
//! the same records make the same files under the same names, which replace whatever part of
//! them had been uploaded. Without the marker a restart would cut the range elsewhere (the age
//! limit is a clock, not a property of the records) and a file from before the crash would
//! overlap one written after it.
//!
//! Records are de-duplicated by event id, per stream partition, over a window of the last
//! [`SinkSettings::dedup_window`] ids: a player that resends a batch (its first answer was
//! lost) and a relay that redelivers put one row in the lake, not two. A resent event has
//! the same key (the session or video id), so it lands in the same partition. The window is
//! part of the flush's marker twice — as it stood before `first` and after `last` — so a
//! redone range drops exactly the rows it dropped the first time, and a restart after a
//! committed flush goes on with the window the flush ended with.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use vodsource_commands::ports::{Delivery, ObjectStore, PutError, StoreError, StreamConsumer, StreamError};

use crate::columnar::Row;
use crate::tables::{self, Table};
use crate::writer::{LakeFileError, LakeFileWriter};

/// The sink's consumer group.
pub const SINK_GROUP: &str = "qoe-sink";

/// When to flush, and where to write files before they are uploaded.
#[derive(Debug, Clone)]
pub struct SinkSettings {
    /// Flush a stream partition when its open files reach this many bytes (estimated).
    pub max_file_bytes: u64,
    /// Flush a stream partition when its oldest unflushed record was read this long ago.
    pub max_age: Duration,
    /// Local folder for files being written (one subfolder per stream; emptied on start).
    pub work_dir: PathBuf,
    /// Records per poll.
    pub poll_records: usize,
    /// Event ids remembered per stream partition to drop repeats (0: no de-duplication).
    pub dedup_window: usize,
}

impl SinkSettings {
    /// 128 MiB, 60 s, 10,000 records per poll, a window of 16,384 event ids.
    pub fn new(work_dir: PathBuf) -> Self {
        Self {
            max_file_bytes: 128 * 1024 * 1024,
            max_age: Duration::from_secs(60),
            work_dir,
            poll_records: 10_000,
            dedup_window: 16_384,
        }
    }
}

/// Why the sink stopped.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The stream failed.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// The object store failed.
    #[error("object store: {0}")]
    Store(#[from] StoreError),
    /// A local file failed.
    #[error(transparent)]
    File(#[from] LakeFileError),
    /// A local folder failed.
    #[error("sink work folder {path}: {source}")]
    WorkDir {
        /// The folder.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// A blocking task died.
    #[error("sink task: {0}")]
    Task(String),
}

impl From<PutError> for SinkError {
    fn from(e: PutError) -> Self {
        match e {
            PutError::Store(e) => Self::Store(e),
            other => Self::Store(StoreError::unavailable(other.to_string())),
        }
    }
}

/// What a flush is about to write: kept in the object store before the first upload, with
/// the de-duplication window as it stood before `first` and after `last` (markers of older
/// versions have neither: an empty window).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Marker {
    first: u64,
    last: u64,
    #[serde(default)]
    before: Window,
    #[serde(default)]
    after: Window,
}

/// The last event ids (folded to 64 bits) of a stream partition, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Window {
    order: std::collections::VecDeque<u64>,
    seen: std::collections::HashSet<u64>,
}

impl Window {
    /// Whether `key` is among the last `capacity`; remembers it if not.
    fn repeat(&mut self, key: u64, capacity: usize) -> bool {
        if capacity == 0 {
            return false;
        }
        if self.seen.contains(&key) {
            return true;
        }
        while self.order.len() >= capacity {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        self.order.push_back(key);
        self.seen.insert(key);
        false
    }
}

impl Serialize for Window {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use base64::Engine as _;
        let bytes: Vec<u8> = self.order.iter().flat_map(|k| k.to_le_bytes()).collect();
        serializer.serialize_str(&base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes))
    }
}

impl<'de> Deserialize<'de> for Window {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use base64::Engine as _;
        let text = String::deserialize(deserializer)?;
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(text)
            .map_err(serde::de::Error::custom)?;
        let order: std::collections::VecDeque<u64> = bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(<[u8; 8]>::try_from(c).unwrap_or_default()))
            .collect();
        let seen = order.iter().copied().collect();
        Ok(Self { order, seen })
    }
}

/// An open file of one lake partition.
struct HourFile {
    writer: LakeFileWriter,
    first: u64,
    last: u64,
}

/// What a stream partition has read and not yet flushed.
struct Partition {
    first: u64,
    last: u64,
    opened: Instant,
    files: BTreeMap<i64, HourFile>,
    /// The de-duplication window as it stood before `first`.
    window_before: Window,
}

/// A closed file waiting for its upload.
struct Ready {
    path: PathBuf,
    key: String,
    rows: u64,
    bytes: u64,
}

/// A flush that has closed its files and not yet committed.
struct Flush {
    partition: u32,
    marker: Marker,
    marked: bool,
    files: Vec<Ready>,
}

/// Counters for one sink.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SinkStats {
    /// Records read from the stream.
    pub records: u64,
    /// Records that were not the table's JSON (skipped, logged).
    pub skipped: u64,
    /// Files uploaded.
    pub files: u64,
    /// Rows in uploaded files.
    pub rows: u64,
    /// Bytes uploaded.
    pub bytes: u64,
    /// Commits of offsets.
    pub flushes: u64,
    /// Records dropped as repeats of an event id already in the window.
    pub duplicates: u64,
}

/// The state that moves onto a blocking thread to encode and back.
#[derive(Default)]
struct Open {
    partitions: BTreeMap<u32, Partition>,
    /// Per stream partition, the de-duplication window (restored from the marker when a
    /// partition is first read).
    windows: HashMap<u32, Window>,
    skipped: u64,
    duplicates: u64,
}

/// Follows one stream into its lake table.
pub struct LakeSink<C: StreamConsumer> {
    consumer: C,
    stream: String,
    table: &'static Table,
    /// Where files are written before their upload.
    dir: PathBuf,
    objects: Arc<dyn ObjectStore>,
    settings: SinkSettings,
    /// `None` only while a blocking task holds it (and for good if that task panicked).
    open: Option<Open>,
    /// Per partition, the offset range a crashed flush had planned (read once, on the
    /// partition's first record).
    planned: HashMap<u32, Option<Marker>>,
    flushes: Vec<Flush>,
    stats: SinkStats,
}

impl<C: StreamConsumer> LakeSink<C> {
    /// A sink of `stream` (whose records are `table`'s JSON) read through `consumer` (group
    /// [`SINK_GROUP`]). Empties its work folder: what a crashed run left there was never
    /// committed and will be read again.
    ///
    /// # Errors
    /// The work folder cannot be made.
    pub fn new(
        consumer: C,
        stream: &str,
        table: &'static Table,
        objects: Arc<dyn ObjectStore>,
        settings: SinkSettings,
    ) -> Result<Self, SinkError> {
        let dir = settings.work_dir.join(stream);
        let work = |source| SinkError::WorkDir {
            path: dir.clone(),
            source,
        };
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(work)?;
        }
        std::fs::create_dir_all(&dir).map_err(work)?;
        Ok(Self {
            consumer,
            stream: stream.to_owned(),
            table,
            dir,
            objects,
            open: Some(Open::default()),
            settings,
            planned: HashMap::new(),
            flushes: Vec::new(),
            stats: SinkStats::default(),
        })
    }

    /// Counters so far.
    pub fn stats(&self) -> SinkStats {
        SinkStats {
            skipped: self.open.as_ref().map_or(0, |o| o.skipped),
            duplicates: self.open.as_ref().map_or(0, |o| o.duplicates),
            ..self.stats
        }
    }

    /// One round: finish flushes a failure interrupted, poll, append, flush what is due.
    /// Returns the records read.
    ///
    /// # Errors
    /// A stream, store or file failure. Nothing is lost: a flush that failed is retried by
    /// the next call, and records not flushed are still uncommitted on the stream.
    pub async fn step(&mut self, wait: Duration) -> Result<usize, SinkError> {
        if let Err(e) = self.finish_flushes().await {
            // A commit the stream refuses may be one the group has moved past (a rebalance):
            // polling lets the member rejoin and learn what it lost, which drops the flush.
            if !matches!(e, SinkError::Stream(_)) {
                return Err(e);
            }
            tracing::warn!(stream = %self.stream, error = %e, "a flush could not be committed; polling on");
        }
        let batch = self.consumer.poll(self.settings.poll_records, wait).await?;
        let revoked = self.consumer.revoked();
        if !revoked.is_empty() {
            self.forget(&revoked);
        }
        let read = batch.len();
        self.stats.records += read as u64;
        let mut queue = batch;
        while !queue.is_empty() {
            for delivery in &queue {
                if !self.planned.contains_key(&delivery.partition) {
                    let local = self.dir.join(format!("marker-{}.json", delivery.partition));
                    let key = marker_key(&self.stream, delivery.partition);
                    let marker = read_marker(self.objects.clone(), key, local).await?;
                    // A marker behind the first record read is one whose flush committed.
                    let (pending, window) = match marker {
                        Some(m) if m.last >= delivery.offset && m.first <= delivery.offset => {
                            tracing::warn!(
                                stream = %self.stream,
                                partition = delivery.partition,
                                first = m.first,
                                last = m.last,
                                "redoing a flush that was interrupted before its commit"
                            );
                            let before = m.before.clone();
                            (Some(m), before)
                        }
                        Some(m) => (None, m.after),
                        None => (None, Window::default()),
                    };
                    if let Some(open) = self.open.as_mut() {
                        open.windows.insert(delivery.partition, window);
                    }
                    self.planned.insert(delivery.partition, pending);
                }
            }
            let (rest, due) = self.encode(queue).await?;
            for partition in due {
                self.seal(partition).await?;
            }
            self.finish_flushes().await?;
            queue = rest;
        }
        // The limits: size, or the age of the oldest unflushed record.
        let due: Vec<u32> = self.open.as_ref().map_or_else(Vec::new, |open| {
            open.partitions
                .iter()
                .filter(|(p, part)| {
                    // A planned range is flushed at its end only, to rebuild the same files.
                    self.planned.get(p).is_none_or(Option::is_none)
                        && (part.opened.elapsed() >= self.settings.max_age
                            || part.files.values().map(|f| f.writer.estimated_size()).sum::<u64>()
                                >= self.settings.max_file_bytes)
                })
                .map(|(p, _)| *p)
                .collect()
        });
        for partition in due {
            self.seal(partition).await?;
        }
        self.finish_flushes().await?;
        Ok(read)
    }

    /// Drops everything read and not committed of `partitions`, which the group gave to
    /// another member (or will deliver again): open files, planned ranges, and flushes not
    /// yet committed. A flush whose marker is written is redone by the partition's next
    /// holder, range for range, into the same objects.
    fn forget(&mut self, partitions: &[u32]) {
        let mut dropped = 0;
        if let Some(open) = self.open.as_mut() {
            for partition in partitions {
                // The next holder restores the window from the marker.
                open.windows.remove(partition);
                if let Some(part) = open.partitions.remove(partition) {
                    for file in part.files.into_values() {
                        dropped += file.writer.rows();
                        file.writer.discard();
                    }
                }
            }
        }
        self.flushes.retain(|flush| {
            let keep = !partitions.contains(&flush.partition);
            if !keep {
                for file in &flush.files {
                    dropped += file.rows;
                    let _ = std::fs::remove_file(&file.path);
                }
            }
            keep
        });
        for partition in partitions {
            self.planned.remove(partition);
        }
        tracing::info!(stream = %self.stream, ?partitions, dropped, "partitions revoked: dropped what was read and not committed");
    }

    /// Appends records on a blocking thread until a partition reaches the end of its planned
    /// range; returns the records not yet appended and the partitions due for a flush.
    async fn encode(&mut self, queue: Vec<Delivery>) -> Result<(Vec<Delivery>, Vec<u32>), SinkError> {
        let mut open = self
            .open
            .take()
            .ok_or_else(|| SinkError::Task("the sink lost its state".into()))?;
        // Where each partition's planned range ends, if it has one.
        let ends: HashMap<u32, u64> = self
            .planned
            .iter()
            .filter_map(|(p, m)| m.as_ref().map(|m| (*p, m.last)))
            .collect();
        let at = Target {
            table: self.table,
            dir: self.dir.clone(),
            stream: self.stream.clone(),
            window: self.settings.dedup_window,
        };
        let result = tokio::task::spawn_blocking(move || {
            let outcome = open.append(&at, queue, &ends);
            (open, outcome)
        })
        .await
        .map_err(|e| SinkError::Task(e.to_string()))?;
        self.open = Some(result.0);
        result.1
    }

    /// Closes a partition's files and queues their upload.
    async fn seal(&mut self, partition: u32) -> Result<(), SinkError> {
        let Some(part) = self.open.as_mut().and_then(|o| o.partitions.remove(&partition)) else {
            return Ok(());
        };
        let (table, stream) = (self.table, self.stream.clone());
        let after = self
            .open
            .as_ref()
            .and_then(|o| o.windows.get(&partition))
            .cloned()
            .unwrap_or_default();
        let marker = Marker {
            first: part.first,
            last: part.last,
            before: part.window_before,
            after,
        };
        let files = tokio::task::spawn_blocking(move || -> Result<Vec<Ready>, LakeFileError> {
            part.files
                .into_iter()
                .map(|(hour, file)| {
                    let rows = file.writer.rows();
                    let (path, bytes) = file.writer.close()?;
                    Ok(Ready {
                        path,
                        key: tables::file_key(table, hour, &stream, partition, file.first, file.last),
                        rows,
                        bytes,
                    })
                })
                .collect()
        })
        .await
        .map_err(|e| SinkError::Task(e.to_string()))??;
        // The planned range (if any) is done with; later ranges follow the limits.
        self.planned.insert(partition, None);
        self.flushes.push(Flush {
            partition,
            marker,
            marked: false,
            files,
        });
        Ok(())
    }

    /// Marks, uploads and commits every sealed flush, in order.
    async fn finish_flushes(&mut self) -> Result<(), SinkError> {
        while let Some(flush) = self.flushes.first_mut() {
            if !flush.marked {
                let body = serde_json::to_vec(&flush.marker).map_err(|e| SinkError::Task(e.to_string()))?;
                let key = marker_key(&self.stream, flush.partition);
                self.objects
                    .put(&key, Box::new(std::io::Cursor::new(body)), MAX_MARKER_BYTES)
                    .await?;
                flush.marked = true;
            }
            while let Some(file) = flush.files.last() {
                let body = tokio::fs::File::open(&file.path)
                    .await
                    .map_err(|source| SinkError::WorkDir {
                        path: file.path.clone(),
                        source,
                    })?;
                self.objects.put(&file.key, Box::new(body), u64::MAX).await?;
                self.stats.files += 1;
                self.stats.rows += file.rows;
                self.stats.bytes += file.bytes;
                tracing::debug!(key = %file.key, rows = file.rows, bytes = file.bytes, "lake file written");
                let _ = std::fs::remove_file(&file.path);
                flush.files.pop();
            }
            if failpoint_before_commit() {
                // Tests prove the redo path runs: the files are up, the offsets are not.
                tracing::error!(stream = %self.stream, "failpoint sink-before-commit: exiting before the commit");
                std::process::abort();
            }
            self.consumer.commit(&[(flush.partition, flush.marker.last)]).await?;
            self.stats.flushes += 1;
            self.flushes.remove(0);
        }
        Ok(())
    }

    /// Flushes everything read so far (at shutdown, so a restart starts from a clean commit).
    ///
    /// # Errors
    /// As [`LakeSink::step`].
    pub async fn flush_all(&mut self) -> Result<(), SinkError> {
        let partitions: Vec<u32> = self
            .open
            .as_ref()
            .map_or_else(Vec::new, |o| o.partitions.keys().copied().collect());
        for partition in partitions {
            if self.planned.get(&partition).is_none_or(Option::is_none) {
                self.seal(partition).await?;
            }
        }
        self.finish_flushes().await
    }

    /// Runs until `stop` resolves, flushing what it has read before returning. Failures are
    /// logged and retried with backoff.
    ///
    /// # Errors
    /// The flush at shutdown failed (the records will be read again by the next run).
    pub async fn run(mut self, stop: impl std::future::Future<Output = ()>) -> Result<(), SinkError> {
        tokio::pin!(stop);
        let mut backoff = Duration::from_millis(200);
        loop {
            tokio::select! {
                () = &mut stop => break,
                result = self.step(Duration::from_millis(500)) => match result {
                    Ok(_) => backoff = Duration::from_millis(200),
                    Err(e) => {
                        tracing::warn!(stream = %self.stream, error = %e, "the lake sink failed; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                    }
                },
            }
        }
        self.flush_all().await
    }
}

/// What the blocking thread needs to know to write files.
struct Target {
    table: &'static Table,
    dir: PathBuf,
    stream: String,
    /// Event ids remembered per partition.
    window: usize,
}

/// A marker holds two windows of at most a few hundred thousand ids.
const MAX_MARKER_BYTES: u64 = 16 * 1024 * 1024;

impl Open {
    fn append(
        &mut self,
        at: &Target,
        queue: Vec<Delivery>,
        ends: &HashMap<u32, u64>,
    ) -> Result<(Vec<Delivery>, Vec<u32>), SinkError> {
        let mut due = Vec::new();
        let mut rest = queue.into_iter();
        for delivery in rest.by_ref() {
            let partition = delivery.partition;
            let end = ends.get(&partition).copied();
            if due.contains(&partition) {
                // Past the end of a planned range: after that flush.
                let mut left = vec![delivery];
                left.extend(rest);
                return Ok((left, due));
            }
            let window = self.windows.entry(partition).or_default();
            let part = self.partitions.entry(partition).or_insert_with(|| Partition {
                first: delivery.offset,
                last: delivery.offset,
                opened: Instant::now(),
                files: BTreeMap::new(),
                window_before: window.clone(),
            });
            part.last = delivery.offset;
            match Row::parse(at.table, &delivery.value) {
                Ok(row) if row.dedup_key().is_some_and(|key| window.repeat(key, at.window)) => {
                    self.duplicates += 1;
                }
                Ok(row) => {
                    let hour = tables::hour_of(row.time());
                    let file = match part.files.entry(hour) {
                        std::collections::btree_map::Entry::Occupied(file) => file.into_mut(),
                        std::collections::btree_map::Entry::Vacant(slot) => {
                            let path = temp_path(&at.dir, &at.stream, partition, hour, delivery.offset);
                            slot.insert(HourFile {
                                writer: LakeFileWriter::create(&path, at.table)?,
                                first: delivery.offset,
                                last: delivery.offset,
                            })
                        }
                    };
                    file.writer.push(&row)?;
                    file.last = delivery.offset;
                }
                Err(e) => {
                    self.skipped += 1;
                    tracing::warn!(table = at.table.name, partition, offset = delivery.offset, error = %e, "skipping a record that is not a lake row");
                }
            }
            if end == Some(delivery.offset) {
                due.push(partition);
            }
        }
        Ok((Vec::new(), due))
    }
}

/// Whether `VODSOURCE_FAILPOINT=sink-before-commit` asks the process to die between a
/// flush's uploads and its commit (the crash the marker exists for), for tests.
fn failpoint_before_commit() -> bool {
    static SET: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SET.get_or_init(|| std::env::var("VODSOURCE_FAILPOINT").is_ok_and(|v| v == "sink-before-commit"))
}

/// Where a flush of `stream`'s `partition` records its range.
fn marker_key(stream: &str, partition: u32) -> String {
    format!("lake/_sink/{SINK_GROUP}/{stream}-{partition}.json")
}

async fn read_marker(objects: Arc<dyn ObjectStore>, key: String, local: PathBuf) -> Result<Option<Marker>, SinkError> {
    if objects.head(&key).await?.is_none() {
        return Ok(None);
    }
    objects.fetch(&key, &local, None).await?;
    let text = std::fs::read(&local).map_err(|source| SinkError::WorkDir {
        path: local.clone(),
        source,
    })?;
    let _ = std::fs::remove_file(&local);
    match serde_json::from_slice(&text) {
        Ok(marker) => Ok(Some(marker)),
        Err(e) => {
            tracing::warn!(key, error = %e, "ignoring an unreadable sink marker");
            Ok(None)
        }
    }
}

fn temp_path(dir: &Path, stream: &str, partition: u32, hour: i64, first: u64) -> PathBuf {
    dir.join(format!("{stream}-{partition}-{hour}-{first}.parquet.tmp"))
}
