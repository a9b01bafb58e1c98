use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, Row as _};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;
use vodsource_commands::ports::{AppendRequest, Appended, EventLog, EventMetadata, RecordedEvent, StoreError};

use super::schema::migrate;
use crate::append::group::{BatchWriter, GroupCommit, Outcomes};
use crate::append::plan::{plan, Existing};

const COLUMNS: &str = "position, stream_id, stream_type, version, event_id, event_type, schema_version, occurred_at, metadata::text, payload::text";

/// The distributed event store on PostgreSQL.
///
/// Appends from this process are committed in groups by one writer connection; every group
/// takes the `log_head` row lock, which orders commits across processes. Readers page by
/// position. Other processes' appends arrive through LISTEN/NOTIFY, with polling as the
/// fallback in [`vodsource_commands::Subscription`].
#[derive(Clone)]
pub struct PgEventLog {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    writer: GroupCommit,
    head: watch::Receiver<u64>,
    head_tx: watch::Sender<u64>,
    channel: String,
    endpoint: String,
    listener: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// Where a URL points, for messages (no password).
fn endpoint(options: &PgConnectOptions) -> String {
    format!("{}:{}", options.get_host(), options.get_port())
}

/// sqlx's errors as the port's, in one place: connection trouble (I/O, pool, TLS, the
/// server's connection and shutdown codes 08xxx and 57Pxx) is `Unavailable`, anything else
/// `Unexpected`; the host and port named, sqlx's error kept as the cause.
fn map_err(endpoint: &str, error: sqlx::Error) -> StoreError {
    let transient = match &error {
        sqlx::Error::Io(e) => Some(format!("PostgreSQL at {endpoint} is unreachable: {e}")),
        sqlx::Error::PoolTimedOut => Some(format!(
            "PostgreSQL at {endpoint} is unreachable: timed out waiting for a connection"
        )),
        sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => Some(format!("PostgreSQL at {endpoint}: {error}")),
        sqlx::Error::Tls(e) => Some(format!("PostgreSQL at {endpoint}: TLS: {e}")),
        sqlx::Error::Database(db) if db.code().is_some_and(|c| c.starts_with("08") || c.starts_with("57P")) => {
            Some(format!("PostgreSQL at {endpoint}: {}", db.message()))
        }
        _ => None,
    };
    match transient {
        Some(message) => StoreError::Unavailable {
            message,
            source: Some(Arc::new(error)),
        },
        None => StoreError::Unexpected {
            message: format!("PostgreSQL at {endpoint}: {error}"),
            source: Some(Arc::new(error)),
        },
    }
}

/// Splits our own `schema=` parameter off a PostgreSQL URL.
fn split_schema(url: &str) -> Result<(String, String), StoreError> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), "public".to_owned()));
    };
    let mut schema = "public".to_owned();
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("schema", value)) => schema = value.to_owned(),
            _ => rest.push(pair),
        }
    }
    let valid = !schema.is_empty()
        && schema.len() <= 48
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid {
        return Err(StoreError::Invalid(format!(
            "schema must be 1 to 48 characters of a-z, 0-9 and _, got {schema:?}"
        )));
    }
    let url = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    Ok((url, schema))
}

impl PgEventLog {
    /// Connects to `url` (`postgres://user@host:port/db[?schema=name]`), creating the schema
    /// and tables when missing.
    ///
    /// # Errors
    /// `Unavailable` naming host and port when the server cannot be reached; `Invalid` for a
    /// malformed URL.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let (url, schema) = split_schema(url)?;
        let base =
            PgConnectOptions::from_str(&url).map_err(|e| StoreError::Invalid(format!("bad PostgreSQL URL: {e}")))?;
        let endpoint = endpoint(&base);
        // Custom plans: a generic plan cached while the table was empty would keep scanning it
        // sequentially for `= ANY($1)` lookups as it grows.
        let options = base.options([
            ("search_path", schema.as_str()),
            ("plan_cache_mode", "force_custom_plan"),
        ]);
        let mut conn = PgConnection::connect_with(&options)
            .await
            .map_err(|e| map_err(&endpoint, e))?;
        migrate(&mut conn, &schema).await.map_err(|e| map_err(&endpoint, e))?;
        let head = read_head(&mut conn).await.map_err(|e| map_err(&endpoint, e))?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options.clone())
            .await
            .map_err(|e| map_err(&endpoint, e))?;
        let channel = format!("vodsource_events_{schema}");
        let (head_tx, head_rx) = watch::channel(head);
        let writer = GroupCommit::spawn(
            Writer {
                conn: Some(conn),
                options: options.clone(),
                endpoint: endpoint.clone(),
                channel: channel.clone(),
            },
            head_tx.clone(),
        );
        let listener = tokio::spawn(listen(pool.clone(), channel.clone(), head_tx.clone()));
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                writer,
                head: head_rx,
                head_tx,
                channel,
                endpoint,
                listener,
            }),
        })
    }

    fn err(&self, e: sqlx::Error) -> StoreError {
        map_err(&self.inner.endpoint, e)
    }

    /// Appends in a transaction of its own that stays open for `hold` before it commits,
    /// bypassing the group writer. For fault-injection tests of tailing readers: it shows
    /// what a slow committer does to the log's order.
    ///
    /// # Errors
    /// As [`EventLog::append`].
    pub async fn append_holding(&self, request: AppendRequest, hold: Duration) -> Result<Appended, StoreError> {
        let mut conn = self.inner.pool.acquire().await.map_err(|e| self.err(e))?;
        let (mut outcomes, head) = write_batch(&mut conn, &[&request], &self.inner.channel, hold)
            .await
            .map_err(|e| self.err(e))?;
        self.inner.head_tx.send_if_modified(|h| {
            let moved = head > *h;
            *h = (*h).max(head);
            moved
        });
        outcomes
            .pop()
            .unwrap_or_else(|| Err(StoreError::unexpected("no outcome")))
    }
}

/// Follows NOTIFY on `channel` and raises the head signal; reconnects with backoff.
async fn listen(pool: PgPool, channel: String, head: watch::Sender<u64>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let listener = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(&channel).await?;
            loop {
                let note = listener.recv().await?;
                if let Ok(position) = note.payload().parse::<u64>() {
                    head.send_if_modified(|h| {
                        let moved = position > *h;
                        *h = (*h).max(position);
                        moved
                    });
                }
            }
        };
        let result: Result<(), sqlx::Error> = listener.await;
        if let Err(e) = result {
            tracing::warn!(error = %e, ?backoff, "PostgreSQL LISTEN lost; subscribers fall back to polling");
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

async fn read_head(conn: &mut PgConnection) -> Result<u64, sqlx::Error> {
    let head: i64 = sqlx::query_scalar("SELECT position FROM log_head")
        .fetch_one(conn)
        .await?;
    Ok(u64::try_from(head).unwrap_or(0))
}

struct Writer {
    conn: Option<PgConnection>,
    options: PgConnectOptions,
    endpoint: String,
    channel: String,
}

impl BatchWriter for Writer {
    async fn write(&mut self, batch: Vec<AppendRequest>) -> Result<(Outcomes, u64), StoreError> {
        let conn = match self.conn.as_mut() {
            Some(conn) => conn,
            None => self.conn.insert(
                PgConnection::connect_with(&self.options)
                    .await
                    .map_err(|e| map_err(&self.endpoint, e))?,
            ),
        };
        let refs: Vec<&AppendRequest> = batch.iter().collect();
        let result = write_batch(conn, &refs, &self.channel, Duration::ZERO).await;
        if let Err(e) = &result {
            if matches!(e, sqlx::Error::Io(_) | sqlx::Error::Protocol(_)) || e.as_database_error().is_none() {
                // The connection may be broken: open a fresh one for the next batch.
                self.conn = None;
            }
        }
        result.map_err(|e| map_err(&self.endpoint, e))
    }
}

async fn write_batch(
    conn: &mut PgConnection,
    batch: &[&AppendRequest],
    channel: &str,
    hold: Duration,
) -> Result<(Outcomes, u64), sqlx::Error> {
    let mut tx = conn.begin().await?;
    // The head row lock orders every append batch across all processes.
    let head: i64 = sqlx::query_scalar("SELECT position FROM log_head WHERE id FOR UPDATE")
        .fetch_one(&mut *tx)
        .await?;
    let head = u64::try_from(head).unwrap_or(0);

    let mut streams: Vec<&str> = batch.iter().map(|r| r.stream_id.as_str()).collect();
    streams.sort_unstable();
    streams.dedup();
    let ids: Vec<Uuid> = batch.iter().flat_map(|r| r.events.iter().map(|e| e.event_id)).collect();
    let rows = sqlx::query(
        "SELECT 'v' AS kind, stream_id, version, NULL::uuid AS event_id, NULL::bigint AS position FROM streams WHERE stream_id = ANY($1)
         UNION ALL
         SELECT 'e', stream_id, version, event_id, position FROM events WHERE event_id = ANY($2)",
    )
    .bind(&streams)
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?;
    let mut versions: HashMap<String, u64> = HashMap::new();
    let mut existing: HashMap<Uuid, Existing> = HashMap::new();
    for row in rows {
        let kind: &str = row.try_get(0)?;
        let stream_id: String = row.try_get(1)?;
        let version: i64 = row.try_get(2)?;
        let version = u64::try_from(version).unwrap_or(0);
        if kind == "v" {
            versions.insert(stream_id, version);
        } else {
            let position: i64 = row.try_get(4)?;
            existing.insert(
                row.try_get(3)?,
                Existing {
                    stream_id,
                    version,
                    position: u64::try_from(position).unwrap_or(0),
                },
            );
        }
    }

    let (outcomes, rows) = plan(batch, &versions, &existing, head);
    let new_head = rows.last().map_or(head, |r| r.position);
    if !rows.is_empty() {
        let n = rows.len();
        let mut positions = Vec::with_capacity(n);
        let mut stream_ids = Vec::with_capacity(n);
        let mut stream_types = Vec::with_capacity(n);
        let mut versions = Vec::with_capacity(n);
        let mut event_ids = Vec::with_capacity(n);
        let mut event_types = Vec::with_capacity(n);
        let mut schema_versions = Vec::with_capacity(n);
        let mut occurred = Vec::with_capacity(n);
        let mut metadata = Vec::with_capacity(n);
        let mut payloads = Vec::with_capacity(n);
        for row in &rows {
            positions.push(i64::try_from(row.position).unwrap_or(i64::MAX));
            stream_ids.push(row.stream_id);
            stream_types.push(row.stream_type);
            versions.push(i64::try_from(row.version).unwrap_or(i64::MAX));
            event_ids.push(row.event.event_id);
            event_types.push(row.event.event_type.as_str());
            schema_versions.push(i32::try_from(row.event.schema_version).unwrap_or(i32::MAX));
            occurred.push(row.event.occurred_at);
            metadata.push(serde_json::to_string(&row.event.metadata).unwrap_or_else(|_| "{}".into()));
            payloads.push(row.event.payload.as_str());
        }
        let mut last: HashMap<&str, (&str, i64)> = HashMap::new();
        for row in &rows {
            last.insert(
                row.stream_id,
                (row.stream_type, i64::try_from(row.version).unwrap_or(i64::MAX)),
            );
        }
        let (ids, rest): (Vec<&str>, Vec<(&str, i64)>) = last.into_iter().unzip();
        let (types, tops): (Vec<&str>, Vec<i64>) = rest.into_iter().unzip();
        // One round trip writes the events, moves the streams and the head, and notifies
        // listeners (delivered at commit).
        sqlx::query(
            "WITH e AS (
                 INSERT INTO events (position, stream_id, stream_type, version, event_id, event_type, schema_version, occurred_at, metadata, payload)
                 SELECT p, s, st, v, id, et, sv, oa, m::json, pl::json
                 FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::int8[], $5::uuid[], $6::text[], $7::int4[], $8::timestamptz[], $9::text[], $10::text[])
                      AS t(p, s, st, v, id, et, sv, oa, m, pl)
             ), s AS (
                 INSERT INTO streams (stream_id, stream_type, version)
                 SELECT * FROM UNNEST($11::text[], $12::text[], $13::int8[])
                 ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version
             ), h AS (
                 UPDATE log_head SET position = $14 WHERE id RETURNING position
             )
             SELECT pg_notify($15, position::text) FROM h",
        )
        .bind(&positions)
        .bind(&stream_ids)
        .bind(&stream_types)
        .bind(&versions)
        .bind(&event_ids)
        .bind(&event_types)
        .bind(&schema_versions)
        .bind(&occurred)
        .bind(&metadata)
        .bind(&payloads)
        .bind(&ids)
        .bind(&types)
        .bind(&tops)
        .bind(i64::try_from(new_head).unwrap_or(i64::MAX))
        .bind(channel)
        .execute(&mut *tx)
        .await?;
    }
    if !hold.is_zero() {
        tokio::time::sleep(hold).await;
    }
    tx.commit().await?;
    Ok((outcomes, new_head))
}

fn decode(row: &PgRow) -> Result<RecordedEvent, StoreError> {
    let corrupt = |position: u64, e: &dyn std::fmt::Display| StoreError::Corrupt {
        position,
        reason: e.to_string(),
    };
    let position: i64 = row.try_get(0).map_err(|e| corrupt(0, &e))?;
    let position = u64::try_from(position).map_err(|e| corrupt(0, &e))?;
    let get_err = |e: sqlx::Error| corrupt(position, &e);
    let version: i64 = row.try_get(3).map_err(get_err)?;
    let schema_version: i32 = row.try_get(6).map_err(get_err)?;
    let metadata: &str = row.try_get(8).map_err(get_err)?;
    let metadata: EventMetadata = serde_json::from_str(metadata).map_err(|e| corrupt(position, &e))?;
    let occurred_at: DateTime<Utc> = row.try_get(7).map_err(get_err)?;
    Ok(RecordedEvent {
        position,
        stream_id: row.try_get(1).map_err(get_err)?,
        stream_type: row.try_get(2).map_err(get_err)?,
        version: u64::try_from(version).map_err(|e| corrupt(position, &e))?,
        event_id: row.try_get(4).map_err(get_err)?,
        event_type: row.try_get(5).map_err(get_err)?,
        schema_version: u32::try_from(schema_version).map_err(|e| corrupt(position, &e))?,
        occurred_at,
        metadata,
        payload: row.try_get(9).map_err(get_err)?,
    })
}

#[async_trait]
impl EventLog for PgEventLog {
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
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM events WHERE stream_id = $1 AND version > $2 ORDER BY version LIMIT $3"
        ))
        .bind(stream_id)
        .bind(i64::try_from(after_version).unwrap_or(i64::MAX))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.inner.pool)
        .await
        .map_err(|e| self.err(e))?;
        rows.iter().map(decode).collect()
    }

    async fn stream_version_at(&self, stream_id: &str, position: u64) -> Result<u64, StoreError> {
        // Backwards along (stream_id, version) until the first event at or before `position`.
        let version: Option<i64> = sqlx::query_scalar(
            "SELECT version FROM events WHERE stream_id = $1 AND position <= $2 ORDER BY version DESC LIMIT 1",
        )
        .bind(stream_id)
        .bind(i64::try_from(position).unwrap_or(i64::MAX))
        .fetch_optional(&self.inner.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(version.and_then(|v| u64::try_from(v).ok()).unwrap_or(0))
    }

    async fn read_all(&self, after: u64, limit: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM events WHERE position > $1 ORDER BY position LIMIT $2"
        ))
        .bind(i64::try_from(after).unwrap_or(i64::MAX))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.inner.pool)
        .await
        .map_err(|e| self.err(e))?;
        rows.iter().map(decode).collect()
    }

    async fn head(&self) -> Result<u64, StoreError> {
        let mut conn = self.inner.pool.acquire().await.map_err(|e| self.err(e))?;
        read_head(&mut conn).await.map_err(|e| self.err(e))
    }

    fn watch_head(&self) -> watch::Receiver<u64> {
        self.inner.head.clone()
    }

    fn describe(&self) -> String {
        format!("postgres://{}", self.inner.endpoint)
    }
}
