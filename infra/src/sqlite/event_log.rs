use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::watch;
use uuid::Uuid;
use vodsource_commands::ports::{AppendRequest, Appended, EventLog, EventMetadata, RecordedEvent, StoreError};

use super::connect::{from_micros, signed, to_micros, SqliteSettings};
use super::db::{map_err, Db};
use crate::append::group::{BatchWriter, GroupCommit, Outcomes};
use crate::append::plan::{plan, Existing};

const SCHEMA: &str = r"
CREATE TABLE IF NOT EXISTS events (
    position       INTEGER PRIMARY KEY,
    stream_id      TEXT    NOT NULL,
    stream_type    TEXT    NOT NULL,
    version        INTEGER NOT NULL,
    event_id       BLOB    NOT NULL UNIQUE,
    event_type     TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    occurred_at_us INTEGER NOT NULL,
    metadata       TEXT    NOT NULL,
    payload        TEXT    NOT NULL,
    prev_position  INTEGER
);
CREATE TABLE IF NOT EXISTS streams (
    stream_id     TEXT    PRIMARY KEY,
    stream_type   TEXT    NOT NULL,
    version       INTEGER NOT NULL,
    last_position INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS stream_marks (
    stream_id TEXT    NOT NULL,
    version   INTEGER NOT NULL,
    position  INTEGER NOT NULL,
    PRIMARY KEY (stream_id, version)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS stream_marks_by_position ON stream_marks (stream_id, position);
";

/// Every this many versions a stream's event is also recorded in `stream_marks`, so a read
/// anywhere in a long stream walks at most this many links past what it returns.
const MARK_EVERY: u64 = 64;

const COLUMNS: &str =
    "position, stream_id, stream_type, version, event_id, event_type, schema_version, occurred_at_us, metadata, payload";

/// The embedded event store: one SQLite file in WAL mode.
///
/// Appends from every task of the process go to one writer connection, which commits them
/// in groups; a group runs in a single blocking call (no per-statement hand-off), with cached
/// prepared statements. Reads run on a small pool of read connections.
///
/// Streams are chains, not an index: each event row holds the position of its stream's
/// previous event and `streams` holds the last one. An index on (stream, version) would
/// dirty one scattered leaf page per active stream in every commit — and SQLite's WAL writes
/// whole pages — which cost two thirds of the append throughput with 64 busy streams. The
/// chain keeps every write sequential; reading a stream is a walk of rowid lookups. Every
/// 64th event of a stream is also a *mark* (`stream_marks`): a read of `limit` events after
/// version v starts its walk at the first mark at or past v + limit, so it costs O(limit + 64)
/// lookups however long the stream is (a mark dirties one page per 64 events of a stream).
/// Version uniqueness is checked against `streams` under the write lock.
#[derive(Clone)]
pub struct SqliteEventLog {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    writer: GroupCommit,
    head: watch::Receiver<u64>,
    /// Event rows visited by stream reads (walks), for tests and metrics.
    rows_read: Arc<AtomicU64>,
}

impl SqliteEventLog {
    /// Opens (creating if needed) the event store at `path`.
    ///
    /// # Errors
    /// `Unavailable` naming the file when it cannot be created, opened or is locked.
    pub async fn open(path: impl AsRef<Path>, settings: &SqliteSettings) -> Result<Self, StoreError> {
        let db = Db::open(path.as_ref(), settings, SCHEMA).await?;
        let writer_db = db.clone();
        let (conn, head) = tokio::task::spawn_blocking(move || {
            let conn = writer_db.connect()?;
            let head = read_head(&conn).map_err(|e| writer_db.error(e))?;
            backfill_marks(&conn).map_err(|e| writer_db.error(e))?;
            Ok::<_, StoreError>((conn, head))
        })
        .await
        .map_err(|e| StoreError::unexpected(format!("SQLite worker failed: {e}")))??;
        let (head_tx, head_rx) = watch::channel(head);
        let writer = GroupCommit::spawn(
            Writer {
                conn: Arc::new(Mutex::new(conn)),
                path: db.path().to_path_buf(),
            },
            head_tx,
        );
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                writer,
                head: head_rx,
                rows_read: Arc::new(AtomicU64::new(0)),
            }),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        self.inner.db.path()
    }

    /// Event rows stream reads have visited so far: what a read costs, counted.
    pub fn rows_read(&self) -> u64 {
        self.inner.rows_read.load(Ordering::Relaxed)
    }
}

fn read_head(conn: &Connection) -> rusqlite::Result<u64> {
    let head: i64 = conn.query_row("SELECT COALESCE(MAX(position), 0) FROM events", [], |r| r.get(0))?;
    Ok(u64::try_from(head).unwrap_or(0))
}

struct Writer {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl BatchWriter for Writer {
    async fn write(&mut self, batch: Vec<AppendRequest>) -> Result<(Outcomes, u64), StoreError> {
        let conn = self.conn.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
            let refs: Vec<&AppendRequest> = batch.iter().collect();
            let result = write_batch(&mut conn, &refs).map_err(|e| map_err(&path, e));
            if !conn.is_autocommit() {
                // A failed commit left the transaction open: roll it back before the next group.
                let _ = conn.execute_batch("ROLLBACK");
            }
            result
        })
        .await
        .map_err(|e| StoreError::unexpected(format!("SQLite writer failed: {e}")))?
    }
}

fn write_batch(conn: &mut Connection, batch: &[&AppendRequest]) -> rusqlite::Result<(Outcomes, u64)> {
    // IMMEDIATE: take the write lock first, so what we read cannot change before we write.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let head = read_head(&tx)?;
    let mut versions: HashMap<String, u64> = HashMap::new();
    let mut last_positions: HashMap<String, i64> = HashMap::new();
    {
        let mut select = tx.prepare_cached("SELECT version, last_position FROM streams WHERE stream_id = ?1")?;
        for request in batch {
            if versions.contains_key(&request.stream_id) {
                continue;
            }
            let found: Option<(i64, i64)> = select
                .query_row([&request.stream_id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            if let Some((version, last)) = found {
                versions.insert(request.stream_id.clone(), u64::try_from(version).unwrap_or(0));
                last_positions.insert(request.stream_id.clone(), last);
            }
        }
    }
    let mut existing: HashMap<Uuid, Existing> = HashMap::new();
    {
        let mut select = tx.prepare_cached("SELECT stream_id, version, position FROM events WHERE event_id = ?1")?;
        for event in batch.iter().flat_map(|r| r.events.iter()) {
            let found = select
                .query_row([event.event_id], |r| {
                    let version: i64 = r.get(1)?;
                    let position: i64 = r.get(2)?;
                    Ok(Existing {
                        stream_id: r.get(0)?,
                        version: u64::try_from(version).unwrap_or(0),
                        position: u64::try_from(position).unwrap_or(0),
                    })
                })
                .optional()?;
            if let Some(found) = found {
                existing.insert(event.event_id, found);
            }
        }
    }
    let (outcomes, rows) = plan(batch, &versions, &existing, head);
    let new_head = rows.last().map_or(head, |r| r.position);
    {
        let mut insert = tx.prepare_cached(&format!(
            "INSERT INTO events ({COLUMNS}, prev_position) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
        ))?;
        let mut last: HashMap<&str, (&str, u64, i64)> = HashMap::new();
        for row in &rows {
            let prev = last
                .get(row.stream_id)
                .map(|(_, _, position)| *position)
                .or_else(|| last_positions.get(row.stream_id).copied());
            let metadata = serde_json::to_string(&row.event.metadata).unwrap_or_else(|_| "{}".into());
            insert.execute(params![
                signed(row.position),
                row.stream_id,
                row.stream_type,
                signed(row.version),
                row.event.event_id,
                row.event.event_type,
                i64::from(row.event.schema_version),
                to_micros(row.event.occurred_at),
                metadata,
                row.event.payload,
                prev,
            ])?;
            last.insert(row.stream_id, (row.stream_type, row.version, signed(row.position)));
            if row.version % MARK_EVERY == 0 {
                tx.prepare_cached("INSERT INTO stream_marks (stream_id, version, position) VALUES (?1, ?2, ?3)")?
                    .execute(params![row.stream_id, signed(row.version), signed(row.position)])?;
            }
        }
        let mut upsert = tx.prepare_cached(
            "INSERT INTO streams (stream_id, stream_type, version, last_position) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version, last_position = excluded.last_position",
        )?;
        for (stream, (kind, version, position)) in last {
            upsert.execute(params![stream, kind, signed(version), position])?;
        }
    }
    tx.commit()?;
    Ok((outcomes, new_head))
}

fn decode(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<RecordedEvent, StoreError>> {
    let position: i64 = row.get(0)?;
    let Ok(position) = u64::try_from(position) else {
        return Ok(Err(StoreError::Corrupt {
            position: 0,
            reason: format!("negative position {position}"),
        }));
    };
    let corrupt = |reason: String| StoreError::Corrupt { position, reason };
    let version: i64 = row.get(3)?;
    let schema_version: i64 = row.get(6)?;
    let metadata: String = row.get(8)?;
    let metadata: EventMetadata = match serde_json::from_str(&metadata) {
        Ok(m) => m,
        Err(e) => return Ok(Err(corrupt(format!("metadata: {e}")))),
    };
    let (Ok(version), Ok(schema_version)) = (u64::try_from(version), u32::try_from(schema_version)) else {
        return Ok(Err(corrupt(format!(
            "version {version} or schema version {schema_version} out of range"
        ))));
    };
    Ok(Ok(RecordedEvent {
        position,
        stream_id: row.get(1)?,
        stream_type: row.get(2)?,
        version,
        event_id: row.get(4)?,
        event_type: row.get(5)?,
        schema_version,
        occurred_at: from_micros(row.get(7)?),
        metadata,
        payload: row.get(9)?,
    }))
}

fn query_events(
    conn: &Connection,
    sql: &str,
    args: &[&dyn rusqlite::ToSql],
) -> rusqlite::Result<Result<Vec<RecordedEvent>, StoreError>> {
    let mut statement = conn.prepare_cached(sql)?;
    let rows = statement.query_map(args, decode)?;
    let mut out = Vec::new();
    for row in rows {
        match row? {
            Ok(event) => out.push(event),
            Err(e) => return Ok(Err(e)),
        }
    }
    Ok(Ok(out))
}

/// Where a backward walk of `stream_id` starts: the position of its first mark matching
/// `mark_sql`'s condition on `bound`, else its last event.
fn walk_start(conn: &Connection, stream_id: &str, mark_sql: &str, bound: i64) -> rusqlite::Result<Option<i64>> {
    let mark: Option<i64> = conn
        .prepare_cached(mark_sql)?
        .query_row(params![stream_id, bound], |r| r.get(0))
        .optional()?;
    if mark.is_some() {
        return Ok(mark);
    }
    conn.prepare_cached("SELECT last_position FROM streams WHERE stream_id = ?1")?
        .query_row([stream_id], |r| r.get(0))
        .optional()
}

/// The first `max` events after `after_version`: a walk back along the chain from the first
/// mark at or past `after_version + max` (or the last event), oldest first.
fn walk_stream(
    conn: &Connection,
    stream_id: &str,
    after_version: u64,
    max: usize,
    visited: &AtomicU64,
) -> rusqlite::Result<Result<Vec<RecordedEvent>, StoreError>> {
    let target = signed(after_version.saturating_add(max as u64));
    let mut next = walk_start(
        conn,
        stream_id,
        "SELECT position FROM stream_marks WHERE stream_id = ?1 AND version >= ?2 ORDER BY version LIMIT 1",
        target,
    )?;
    let mut step = conn.prepare_cached(&format!(
        "SELECT {COLUMNS}, prev_position FROM events WHERE position = ?1"
    ))?;
    let mut newest_first = Vec::new();
    while let Some(position) = next {
        visited.fetch_add(1, Ordering::Relaxed);
        let (event, prev) = step.query_row([position], |row| Ok((decode(row)?, row.get::<_, Option<i64>>(10)?)))?;
        let event = match event {
            Ok(event) => event,
            Err(e) => return Ok(Err(e)),
        };
        if event.version <= after_version {
            break;
        }
        newest_first.push(event);
        next = prev;
    }
    newest_first.reverse();
    newest_first.truncate(max);
    Ok(Ok(newest_first))
}

/// The version of `stream_id`'s last event at or before `position`: a walk back from the
/// first mark after it (or the last event), at most [`MARK_EVERY`] links.
fn version_at(conn: &Connection, stream_id: &str, position: u64, visited: &AtomicU64) -> rusqlite::Result<u64> {
    let mut next = walk_start(
        conn,
        stream_id,
        "SELECT position FROM stream_marks WHERE stream_id = ?1 AND position > ?2 ORDER BY position LIMIT 1",
        signed(position),
    )?;
    let mut step = conn.prepare_cached("SELECT version, position, prev_position FROM events WHERE position = ?1")?;
    while let Some(at) = next {
        visited.fetch_add(1, Ordering::Relaxed);
        let (version, found, prev): (i64, i64, Option<i64>) =
            step.query_row([at], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        if u64::try_from(found).unwrap_or(0) <= position {
            return Ok(u64::try_from(version).unwrap_or(0));
        }
        next = prev;
    }
    Ok(0)
}

/// Marks the streams of a store written before marks existed (one pass, at open).
fn backfill_marks(conn: &Connection) -> rusqlite::Result<()> {
    let marked: bool = conn.query_row("SELECT EXISTS (SELECT 1 FROM stream_marks)", [], |r| r.get(0))?;
    let written: bool = conn.query_row("SELECT EXISTS (SELECT 1 FROM events)", [], |r| r.get(0))?;
    if !marked && written {
        conn.execute(
            &format!("INSERT OR IGNORE INTO stream_marks SELECT stream_id, version, position FROM events WHERE version % {MARK_EVERY} = 0"),
            [],
        )?;
    }
    Ok(())
}

fn limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

#[async_trait]
impl EventLog for SqliteEventLog {
    async fn append(&self, request: AppendRequest) -> Result<Appended, StoreError> {
        self.inner.writer.submit_one(request).await
    }

    async fn append_many(&self, requests: Vec<AppendRequest>) -> Result<Vec<Result<Appended, StoreError>>, StoreError> {
        self.inner.writer.submit(requests).await
    }

    async fn read_stream(
        &self,
        stream_id: &str,
        after_version: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let stream_id = stream_id.to_owned();
        let visited = self.inner.rows_read.clone();
        self.inner
            .db
            .run(move |conn| walk_stream(conn, &stream_id, after_version, max, &visited))
            .await?
    }

    async fn stream_version_at(&self, stream_id: &str, position: u64) -> Result<u64, StoreError> {
        let stream_id = stream_id.to_owned();
        let visited = self.inner.rows_read.clone();
        self.inner
            .db
            .run(move |conn| version_at(conn, &stream_id, position, &visited))
            .await
    }

    async fn read_all(&self, after: u64, max: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner
            .db
            .run(move |conn| {
                query_events(
                    conn,
                    &format!("SELECT {COLUMNS} FROM events WHERE position > ?1 ORDER BY position LIMIT ?2"),
                    &[&signed(after), &limit(max)],
                )
            })
            .await?
    }

    async fn head(&self) -> Result<u64, StoreError> {
        self.inner.db.run(|conn| read_head(conn)).await
    }

    fn watch_head(&self) -> watch::Receiver<u64> {
        self.inner.head.clone()
    }

    fn describe(&self) -> String {
        format!("sqlite://{}", self.inner.db.path().display())
    }
}
