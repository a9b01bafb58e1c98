//! The embedded stream: a durable append-only log per topic and partition in a local folder,
//! with consumer-group offsets, for the embedded shape (Kafka and Kinesis play this part when
//! distributed).
//!
//! Layout: `<root>/<topic>/p<N>.log` holds framed records `[len u32][crc32c u32][offset u64]
//! [timestamp i64][key len u16][key][value]` (little-endian; the CRC covers everything after
//! it); `<root>/<topic>/groups/<group>.json` holds a group's next offsets, replaced atomically.
//! A publish is acknowledged after its partitions' files are synced; concurrent publishes
//! share one write and one sync per partition (group commit). On open, each partition
//! is scanned and a torn or corrupt tail (a crash mid-write) is cut off, so a reader never
//! sees half a record and offsets continue where the last acknowledged record ended.
//! `<root>/LOCK` keeps a second process out.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use crc::{Crc, CRC_32_ISCSI};
use tokio::sync::watch;
use vodsource_commands::ports::{Delivery, StreamConsumer, StreamError, StreamProducer, StreamRecord};

const CRC: Crc<u32> = Crc::<u32>::new(&CRC_32_ISCSI);
/// Bytes before the CRC'd part: length and CRC.
const FRAME: usize = 8;
/// Offset, timestamp and key length.
const FIXED: usize = 8 + 8 + 2;
/// The largest record accepted (key and value).
pub const MAX_RECORD_BYTES: usize = 4 * 1024 * 1024;

fn unavailable(what: &str, e: &std::io::Error) -> StreamError {
    StreamError::Unavailable(format!("{what}: {e}"))
}

/// One partition: its file, and where each record starts.
struct Partition {
    file: File,
    positions: Vec<u64>,
    end: u64,
}

/// One topic's partitions and the signal consumers wait on.
struct Topic {
    dir: PathBuf,
    partitions: Mutex<Vec<Partition>>,
    queue: Mutex<Queue>,
    appended: watch::Sender<u64>,
}

/// The embedded log over a folder. Cheap to clone; one per process per folder.
#[derive(Clone)]
pub struct EmbeddedLog {
    root: PathBuf,
    partitions: u32,
    topics: Arc<Mutex<HashMap<String, Arc<Topic>>>>,
    _lock: Arc<File>,
}

impl EmbeddedLog {
    /// Opens (creating) the log in `root` with `partitions` partitions per topic.
    ///
    /// # Errors
    /// `Unavailable` when the folder cannot be created or another process holds it.
    pub fn open(root: impl Into<PathBuf>, partitions: u32) -> Result<Self, StreamError> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(|e| unavailable(&root.display().to_string(), &e))?;
        let lock = File::create(root.join("LOCK")).map_err(|e| unavailable("LOCK", &e))?;
        lock.try_lock().map_err(|_| {
            StreamError::Unavailable(format!(
                "{} is in use by another vodsource process (the embedded stream belongs to one process)",
                root.display()
            ))
        })?;
        Ok(Self {
            root,
            partitions: partitions.max(1),
            topics: Arc::new(Mutex::new(HashMap::new())),
            _lock: Arc::new(lock),
        })
    }

    /// The partition `key` goes to (FNV-1a, stable across versions and processes).
    pub fn partition_of(&self, key: &str) -> u32 {
        let hash = key
            .bytes()
            .fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
        hash % self.partitions
    }

    fn topic(&self, name: &str) -> Result<Arc<Topic>, StreamError> {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err(StreamError::Invalid(format!("bad topic name {name:?}")));
        }
        let mut topics = self.topics.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(topic) = topics.get(name) {
            return Ok(topic.clone());
        }
        let dir = self.root.join(name);
        std::fs::create_dir_all(dir.join("groups")).map_err(|e| unavailable(name, &e))?;
        let partitions = (0..self.partitions)
            .map(|p| recover(&dir.join(format!("p{p}.log"))))
            .collect::<Result<Vec<_>, _>>()?;
        let (appended, _) = watch::channel(0);
        let topic = Arc::new(Topic {
            dir,
            partitions: Mutex::new(partitions),
            queue: Mutex::new(Queue::default()),
            appended,
        });
        topics.insert(name.to_owned(), topic.clone());
        Ok(topic)
    }

    /// A member of consumer group `group` on `topic`, reading every partition from the
    /// group's committed offsets.
    ///
    /// # Errors
    /// `Invalid` names, `Unavailable` or `Corrupt` offsets file.
    pub fn consumer(&self, topic: &str, group: &str) -> Result<EmbeddedConsumer, StreamError> {
        if group.is_empty() || !group.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(StreamError::Invalid(format!("bad group name {group:?}")));
        }
        let topic = self.topic(topic)?;
        let path = topic.dir.join("groups").join(format!("{group}.json"));
        let committed: Vec<u64> = match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| StreamError::Corrupt(format!("{}: {e}", path.display())))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(unavailable(&path.display().to_string(), &e)),
        };
        let mut next = committed;
        next.resize(self.partitions as usize, 0);
        let watch = topic.appended.subscribe();
        Ok(EmbeddedConsumer {
            topic,
            path,
            committed: next.clone(),
            next,
            watch,
            cursor: 0,
            files: HashMap::new(),
        })
    }
}

/// Scans a partition file, cutting off a torn or corrupt tail.
fn recover(path: &Path) -> Result<Partition, StreamError> {
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| unavailable(&path.display().to_string(), &e))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| unavailable(&path.display().to_string(), &e))?;
    let mut positions = Vec::new();
    let mut at = 0usize;
    while let Some((offset, _, _, _, next)) = decode(&bytes, at) {
        if offset != positions.len() as u64 {
            break;
        }
        positions.push(at as u64);
        at = next;
    }
    if at < bytes.len() {
        tracing::warn!(path = %path.display(), kept = at, dropped = bytes.len() - at, "cutting a torn tail off the stream");
        file.set_len(at as u64)
            .and_then(|()| file.sync_all())
            .map_err(|e| unavailable(&path.display().to_string(), &e))?;
    }
    Ok(Partition {
        file,
        positions,
        end: at as u64,
    })
}

/// The record at `at`: (offset, timestamp, key, value, where the next starts), if whole and sound.
fn decode(bytes: &[u8], at: usize) -> Option<(u64, i64, &str, &[u8], usize)> {
    let header = bytes.get(at..at + FRAME)?;
    let len = u32::from_le_bytes(header[0..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
    let body = bytes.get(at + FRAME..at + FRAME + len)?;
    if len < FIXED || CRC.checksum(body) != crc {
        return None;
    }
    let offset = u64::from_le_bytes(body[0..8].try_into().ok()?);
    let timestamp = i64::from_le_bytes(body[8..16].try_into().ok()?);
    let key_len = usize::from(u16::from_le_bytes(body[16..18].try_into().ok()?));
    let key = std::str::from_utf8(body.get(FIXED..FIXED + key_len)?).ok()?;
    let value = body.get(FIXED + key_len..)?;
    Some((offset, timestamp, key, value, at + FRAME + len))
}

fn encode(out: &mut Vec<u8>, offset: u64, timestamp: i64, record: &StreamRecord) {
    let mut body = Vec::with_capacity(FIXED + record.key.len() + record.value.len());
    body.extend_from_slice(&offset.to_le_bytes());
    body.extend_from_slice(&timestamp.to_le_bytes());
    body.extend_from_slice(&(record.key.len() as u16).to_le_bytes());
    body.extend_from_slice(record.key.as_bytes());
    body.extend_from_slice(&record.value);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&CRC.checksum(&body).to_le_bytes());
    out.extend_from_slice(&body);
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// One publish waiting for the group it will be written with.
struct Job {
    routes: Vec<u32>,
    records: Vec<StreamRecord>,
    done: tokio::sync::oneshot::Sender<Result<Vec<(u32, u64)>, StreamError>>,
}

/// Publishes waiting for a write, and whether a writer is running.
#[derive(Default)]
struct Queue {
    jobs: Vec<Job>,
    writing: bool,
}

/// Writes queued publishes in groups until none wait: each group is one write and one sync
/// per partition it touches, however many publishes it holds (group commit).
async fn drain(topic: Arc<Topic>) {
    loop {
        let jobs = {
            let mut queue = topic.queue.lock().unwrap_or_else(PoisonError::into_inner);
            if queue.jobs.is_empty() {
                queue.writing = false;
                return;
            }
            std::mem::take(&mut queue.jobs)
        };
        let writer = topic.clone();
        // A panic drops the jobs' senders: their publishers see the writer stop.
        let _ = tokio::task::spawn_blocking(move || write_group(&writer, jobs)).await;
        topic.appended.send_modify(|n| *n += 1);
    }
}

fn write_group(topic: &Topic, jobs: Vec<Job>) {
    let mut partitions = topic.partitions.lock().unwrap_or_else(PoisonError::into_inner);
    let timestamp = now_ms();
    let mut buffers: HashMap<u32, Vec<u8>> = HashMap::new();
    let mut next: HashMap<u32, u64> = HashMap::new();
    let mut positions: HashMap<u32, Vec<u64>> = HashMap::new();
    let mut acks = Vec::with_capacity(jobs.len());
    for job in &jobs {
        let mut out = Vec::with_capacity(job.records.len());
        for (record, &p) in job.records.iter().zip(&job.routes) {
            let partition = &partitions[p as usize];
            let offset = next.entry(p).or_insert(partition.positions.len() as u64);
            let buffer = buffers.entry(p).or_default();
            positions
                .entry(p)
                .or_default()
                .push(partition.end + buffer.len() as u64);
            encode(buffer, *offset, timestamp, record);
            out.push((p, *offset));
            *offset += 1;
        }
        acks.push(out);
    }
    for (p, buffer) in &buffers {
        let partition = &mut partitions[*p as usize];
        let written = partition
            .file
            .write_all(buffer)
            .and_then(|()| partition.file.sync_data());
        if let Err(e) = written {
            // Back to what was acknowledged; a torn write is cut on the next open. Partitions
            // already synced keep their records: a publisher that retries may duplicate them,
            // which consumers de-duplicate (at least once).
            let _ = partition.file.set_len(partition.end);
            let error = unavailable("writing the stream", &e);
            for job in jobs {
                let _ = job.done.send(Err(error.clone()));
            }
            return;
        }
        partition.end += buffer.len() as u64;
        partition.positions.extend(positions.remove(p).unwrap_or_default());
    }
    for (job, ack) in jobs.into_iter().zip(acks) {
        let _ = job.done.send(Ok(ack));
    }
}

#[async_trait]
impl StreamProducer for EmbeddedLog {
    async fn publish(&self, topic: &str, records: Vec<StreamRecord>) -> Result<Vec<(u32, Option<u64>)>, StreamError> {
        if let Some(bad) = records
            .iter()
            .find(|r| r.key.len() > usize::from(u16::MAX) || r.key.len() + r.value.len() > MAX_RECORD_BYTES)
        {
            return Err(StreamError::Invalid(format!(
                "a record of {} bytes (key {} bytes) is over the limit",
                bad.key.len() + bad.value.len(),
                bad.key.len()
            )));
        }
        let topic = self.topic(topic)?;
        let routes: Vec<u32> = records.iter().map(|r| self.partition_of(&r.key)).collect();
        let (done, acknowledged) = tokio::sync::oneshot::channel();
        let lead = {
            let mut queue = topic.queue.lock().unwrap_or_else(PoisonError::into_inner);
            queue.jobs.push(Job { routes, records, done });
            !std::mem::replace(&mut queue.writing, true)
        };
        if lead {
            // Its own task: a publisher that goes away must not strand the others' writes.
            tokio::spawn(drain(topic));
        }
        acknowledged
            .await
            .map_err(|_| StreamError::Unavailable("the stream writer stopped".into()))?
            .map(|acks| acks.into_iter().map(|(p, o)| (p, Some(o))).collect())
    }
}

/// A consumer-group member on the embedded log. It reads every partition (the embedded log
/// has one member per group).
pub struct EmbeddedConsumer {
    topic: Arc<Topic>,
    path: PathBuf,
    committed: Vec<u64>,
    next: Vec<u64>,
    watch: watch::Receiver<u64>,
    cursor: usize,
    /// Read handles of the partitions, opened on first read and kept.
    files: HashMap<u32, File>,
}

impl EmbeddedConsumer {
    /// The group's committed next offset of each partition.
    pub fn committed(&self) -> &[u64] {
        &self.committed
    }

    fn read(&mut self, max: usize) -> Result<Vec<Delivery>, StreamError> {
        // Where to read, taken under the lock; the reading itself is done outside it.
        let spans: Vec<(u32, u64, u64, u64)> = {
            let partitions = self.topic.partitions.lock().unwrap_or_else(PoisonError::into_inner);
            partitions
                .iter()
                .enumerate()
                .filter_map(|(p, partition)| {
                    let from = self.next[p];
                    let count = (partition.positions.len() as u64).saturating_sub(from);
                    let start = *partition.positions.get(usize::try_from(from).ok()?)?;
                    (count > 0).then_some((p as u32, from, start, partition.end))
                })
                .collect()
        };
        let mut out = Vec::new();
        let n = spans.len();
        for i in 0..n {
            // Round-robin across partitions so one busy partition does not starve the others.
            let (p, from, start, end) = spans[(self.cursor + i) % n];
            if out.len() >= max {
                break;
            }
            let path = self.topic.dir.join(format!("p{p}.log"));
            let file = match self.files.entry(p) {
                std::collections::hash_map::Entry::Occupied(open) => open.into_mut(),
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(File::open(&path).map_err(|e| unavailable(&path.display().to_string(), &e))?)
                }
            };
            let length = usize::try_from(end - start).unwrap_or(usize::MAX).min(16 * 1024 * 1024);
            let mut bytes = vec![0u8; length];
            file.seek(SeekFrom::Start(start))
                .and_then(|_| file.read_exact(&mut bytes))
                .map_err(|e| unavailable(&path.display().to_string(), &e))?;
            let mut at = 0;
            let mut expected = from;
            while out.len() < max {
                let Some((offset, timestamp_ms, key, value, next)) = decode(&bytes, at) else {
                    break;
                };
                if offset != expected {
                    return Err(StreamError::Corrupt(format!(
                        "{} has offset {offset} where {expected} belongs",
                        path.display()
                    )));
                }
                out.push(Delivery {
                    partition: p,
                    offset,
                    key: key.to_owned(),
                    value: value.to_vec(),
                    timestamp_ms,
                });
                expected += 1;
                at = next;
            }
            self.next[p as usize] = expected;
        }
        self.cursor = self.cursor.wrapping_add(1);
        Ok(out)
    }
}

#[async_trait]
impl StreamConsumer for EmbeddedConsumer {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>, StreamError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            self.watch.borrow_and_update();
            let batch = self.read(max.max(1))?;
            if !batch.is_empty() {
                return Ok(batch);
            }
            if tokio::time::timeout_at(deadline, self.watch.changed()).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    async fn commit(&mut self, offsets: &[(u32, u64)]) -> Result<(), StreamError> {
        let mut committed = self.committed.clone();
        for &(p, offset) in offsets {
            let Some(delivered) = self.next.get(p as usize) else {
                return Err(StreamError::Invalid(format!("no partition {p}")));
            };
            if offset >= *delivered {
                return Err(StreamError::Invalid(format!(
                    "offset {offset} of partition {p} was never delivered"
                )));
            }
            committed[p as usize] = committed[p as usize].max(offset + 1);
        }
        let path = self.path.clone();
        let body = serde_json::to_vec(&committed).map_err(|e| StreamError::Invalid(e.to_string()))?;
        tokio::task::spawn_blocking(move || {
            let temp = path.with_extension("json.tmp");
            let mut file = File::create(&temp)?;
            file.write_all(&body)?;
            file.sync_all()?;
            std::fs::rename(&temp, &path)?;
            if let Some(dir) = path.parent() {
                File::open(dir)?.sync_all()?;
            }
            Ok::<(), std::io::Error>(())
        })
        .await
        .map_err(|e| StreamError::Unavailable(format!("the offsets writer failed: {e}")))?
        .map_err(|e| unavailable("committing offsets", &e))?;
        self.committed = committed;
        Ok(())
    }
}
