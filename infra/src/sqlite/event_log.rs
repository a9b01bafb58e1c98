use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnection, SqlitePool, SqlitePoolOptions, SqliteRow};
use sqlx::{Connection, QueryBuilder, Row as _, Sqlite};
use tokio::sync::watch;
use uuid::Uuid;
use vodsource_commands::ports::{AppendRequest, Appended, EventLog, EventMetadata, RecordedEvent, StoreError};

use super::connect::{from_micros, map_err, prepare, signed, to_micros, unsigned, SqliteSettings};
use crate::group::{BatchWriter, GroupCommit, Outcomes};
use crate::plan::{plan, Existing, Row};

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
    UNIQUE (stream_id, version)
);
";

const COLUMNS: &str =
    "position, stream_id, stream_type, version, event_id, event_type, schema_version, occurred_at_us, metadata, payload";

/// The embedded event store: one SQLite file in WAL mode. Appends from every task of the
/// process go through one writer that commits them in groups; reads use a pool.
#[derive(Clone)]
pub struct SqliteEventLog {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    readers: SqlitePool,
    writer: GroupCommit,
    head: watch::Receiver<u64>,
}

impl SqliteEventLog {
    /// Opens (creating if needed) the event store at `path`.
    ///
    /// # Errors
    /// `Unavailable` naming the file when it cannot be created, opened or is locked.
    pub async fn open(path: impl AsRef<Path>, settings: &SqliteSettings) -> Result<Self, StoreError> {
        let path = prepare(path.as_ref())?;
        let options = settings.options(&path);
        let mut conn = SqliteConnection::connect_with(&options)
            .await
            .map_err(|e| map_err(&path, e))?;
        sqlx::raw_sql(SCHEMA)
            .execute(&mut conn)
            .await
            .map_err(|e| map_err(&path, e))?;
        let head = read_head(&mut conn).await.map_err(|e| map_err(&path, e))?;
        let readers = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|e| map_err(&path, e))?;
        let (head_tx, head_rx) = watch::channel(head);
        let writer = GroupCommit::spawn(
            Writer {
                conn,
                path: path.clone(),
            },
            head_tx,
        );
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                readers,
                writer,
                head: head_rx,
            }),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn err(&self, e: sqlx::Error) -> StoreError {
        map_err(&self.inner.path, e)
    }
}

async fn read_head(conn: &mut SqliteConnection) -> Result<u64, sqlx::Error> {
    let head: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM events")
        .fetch_one(conn)
        .await?;
    Ok(u64::try_from(head).unwrap_or(0))
}

struct Writer {
    conn: SqliteConnection,
    path: PathBuf,
}

impl BatchWriter for Writer {
    async fn write<'a>(&'a mut self, batch: &'a [&'a AppendRequest]) -> Result<(Outcomes, u64), StoreError> {
        let path = self.path.clone();
        write_batch(&mut self.conn, batch).await.map_err(|e| map_err(&path, e))
    }
}

async fn write_batch(conn: &mut SqliteConnection, batch: &[&AppendRequest]) -> Result<(Outcomes, u64), sqlx::Error> {
    // IMMEDIATE: take the write lock first, so what we read cannot change before we write.
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    let head = read_head(&mut tx).await?;

    let mut streams: Vec<&str> = batch.iter().map(|r| r.stream_id.as_str()).collect();
    streams.sort_unstable();
    streams.dedup();
    let mut versions: HashMap<String, u64> = HashMap::new();
    for chunk in streams.chunks(500) {
        let mut query = QueryBuilder::<Sqlite>::new("SELECT stream_id, MAX(version) FROM events WHERE stream_id IN (");
        let mut list = query.separated(", ");
        for stream in chunk {
            list.push_bind(*stream);
        }
        query.push(") GROUP BY stream_id");
        for row in query.build().fetch_all(&mut *tx).await? {
            let version: i64 = row.try_get(1)?;
            versions.insert(row.try_get(0)?, u64::try_from(version).unwrap_or(0));
        }
    }

    let ids: Vec<Uuid> = batch.iter().flat_map(|r| r.events.iter().map(|e| e.event_id)).collect();
    let mut existing: HashMap<Uuid, Existing> = HashMap::new();
    for chunk in ids.chunks(500) {
        let mut query = QueryBuilder::<Sqlite>::new(
            "SELECT event_id, stream_id, version, position FROM events WHERE event_id IN (",
        );
        let mut list = query.separated(", ");
        for id in chunk {
            list.push_bind(*id);
        }
        query.push(")");
        for row in query.build().fetch_all(&mut *tx).await? {
            let version: i64 = row.try_get(2)?;
            let position: i64 = row.try_get(3)?;
            existing.insert(
                row.try_get(0)?,
                Existing {
                    stream_id: row.try_get(1)?,
                    version: u64::try_from(version).unwrap_or(0),
                    position: u64::try_from(position).unwrap_or(0),
                },
            );
        }
    }

    let (outcomes, rows) = plan(batch, &versions, &existing, head);
    let new_head = rows.last().map_or(head, |r| r.position);
    for chunk in rows.chunks(90) {
        insert(&mut tx, chunk).await?;
    }
    tx.commit().await?;
    Ok((outcomes, new_head))
}

async fn insert(conn: &mut SqliteConnection, rows: &[Row<'_>]) -> Result<(), sqlx::Error> {
    let mut query = QueryBuilder::<Sqlite>::new(format!("INSERT INTO events ({COLUMNS}) "));
    query.push_values(rows, |mut b, row| {
        b.push_bind(signed(row.position))
            .push_bind(row.stream_id)
            .push_bind(row.stream_type)
            .push_bind(signed(row.version))
            .push_bind(row.event.event_id)
            .push_bind(row.event.event_type.as_str())
            .push_bind(i64::from(row.event.schema_version))
            .push_bind(to_micros(row.event.occurred_at))
            .push_bind(serde_json::to_string(&row.event.metadata).unwrap_or_else(|_| "{}".into()))
            .push_bind(row.event.payload.as_str());
    });
    query.build().execute(conn).await?;
    Ok(())
}

fn decode(row: &SqliteRow) -> Result<RecordedEvent, StoreError> {
    let corrupt = |position: u64, e: &dyn std::fmt::Display| StoreError::Corrupt {
        position,
        reason: e.to_string(),
    };
    let position: i64 = row.try_get(0).map_err(|e| corrupt(0, &e))?;
    let position = unsigned(position, "position", 0)?;
    let get_err = |e: sqlx::Error| corrupt(position, &e);
    let version: i64 = row.try_get(3).map_err(get_err)?;
    let schema_version: i64 = row.try_get(6).map_err(get_err)?;
    let metadata: &str = row.try_get(8).map_err(get_err)?;
    let metadata: EventMetadata = serde_json::from_str(metadata).map_err(|e| corrupt(position, &e))?;
    Ok(RecordedEvent {
        position,
        stream_id: row.try_get(1).map_err(get_err)?,
        stream_type: row.try_get(2).map_err(get_err)?,
        version: unsigned(version, "version", position)?,
        event_id: row.try_get(4).map_err(get_err)?,
        event_type: row.try_get(5).map_err(get_err)?,
        schema_version: u32::try_from(schema_version).map_err(|e| corrupt(position, &e))?,
        occurred_at: from_micros(row.try_get(7).map_err(get_err)?),
        metadata,
        payload: row.try_get(9).map_err(get_err)?,
    })
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
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM events WHERE stream_id = ? AND version > ? ORDER BY version LIMIT ?"
        ))
        .bind(stream_id)
        .bind(signed(after_version))
        .bind(limit(max))
        .fetch_all(&self.inner.readers)
        .await
        .map_err(|e| self.err(e))?;
        rows.iter().map(decode).collect()
    }

    async fn read_all(&self, after: u64, max: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?"
        ))
        .bind(signed(after))
        .bind(limit(max))
        .fetch_all(&self.inner.readers)
        .await
        .map_err(|e| self.err(e))?;
        rows.iter().map(decode).collect()
    }

    async fn head(&self) -> Result<u64, StoreError> {
        let mut conn = self.inner.readers.acquire().await.map_err(|e| self.err(e))?;
        read_head(&mut conn).await.map_err(|e| self.err(e))
    }

    fn watch_head(&self) -> watch::Receiver<u64> {
        self.inner.head.clone()
    }

    fn describe(&self) -> String {
        format!("sqlite://{}", self.inner.path.display())
    }
}
