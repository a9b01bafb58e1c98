use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::{Connection, ErrorCode, OpenFlags};
use vodsource_commands::ports::StoreError;

use super::connect::SqliteSettings;

/// Connections kept open between calls.
/// Connections kept open, and the most statements running at once: beyond this, work waits
/// for a connection instead of opening (and then closing) a new one, which costs more than
/// the query.
const POOL: usize = 16;

/// One SQLite file and a few open connections to it. Every call runs to completion on a
/// blocking thread, so a caller that is cancelled never leaves a transaction half done or a
/// connection holding a lock.
#[derive(Clone)]
pub(crate) struct Db {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    settings: SqliteSettings,
    idle: Mutex<Vec<Connection>>,
    permits: tokio::sync::Semaphore,
}

impl Db {
    /// Opens `path` (creating it) and applies `schema`.
    pub(crate) async fn open(path: &Path, settings: &SqliteSettings, schema: &'static str) -> Result<Self, StoreError> {
        let db = Self {
            inner: Arc::new(Inner {
                path: super::connect::prepare(path)?,
                settings: settings.clone(),
                idle: Mutex::new(Vec::new()),
                permits: tokio::sync::Semaphore::new(POOL),
            }),
        };
        db.run(move |conn| conn.execute_batch(schema)).await?;
        Ok(db)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.inner.path
    }

    /// A new connection with the store's settings.
    pub(crate) fn connect(&self) -> Result<Connection, StoreError> {
        let path = &self.inner.path;
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| self.error(e))?;
        conn.busy_timeout(self.inner.settings.busy_timeout)
            .map_err(|e| self.error(e))?;
        let pragmas = format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {}; PRAGMA temp_store = MEMORY; PRAGMA cache_size = -65536;",
            self.inner.settings.synchronous_pragma()
        );
        conn.execute_batch(&pragmas).map_err(|e| self.error(e))?;
        conn.set_prepared_statement_cache_capacity(64);
        Ok(conn)
    }

    /// Runs `work` on a connection on a blocking thread.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.clone();
        // The permit is only refused once the semaphore is closed, which never happens.
        let permit = self.inner.permits.acquire().await.ok();
        let result = tokio::task::spawn_blocking(move || db.with_connection(work)).await;
        drop(permit);
        result.map_err(|e| StoreError::unexpected(format!("SQLite worker failed: {e}")))?
    }

    /// Names the file in every error, and says "locked" when another process holds it.
    /// Runs a point read on the calling thread, skipping the hand-off to a blocking thread
    /// (which costs more than the read: two thread wake-ups). Only for single-row lookups by
    /// key: in WAL mode a reader does not wait for writers, and the page cache makes it a few
    /// microseconds.
    pub(crate) fn read_inline<T>(
        &self,
        work: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        self.with_connection(work)
    }

    /// Runs `work` on a pooled connection (opening one when none is idle) on this thread.
    fn with_connection<T>(&self, work: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let pooled = self.inner.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let mut conn = match pooled {
            Some(conn) => conn,
            None => self.connect()?,
        };
        let result = work(&mut conn).map_err(|e| self.error(e));
        // A connection is only reused when no transaction was left open on it.
        if conn.is_autocommit() {
            let mut idle = self.inner.idle.lock().unwrap_or_else(PoisonError::into_inner);
            if idle.len() < POOL {
                idle.push(conn);
            }
        }
        result
    }

    pub(crate) fn error(&self, error: rusqlite::Error) -> StoreError {
        map_err(&self.inner.path, error)
    }
}

/// rusqlite's errors as the port's, in one place: the file named in every error, "locked"
/// when another process holds it; rusqlite's error kept as the cause.
pub(crate) fn map_err(path: &Path, error: rusqlite::Error) -> StoreError {
    let transient = match &error {
        rusqlite::Error::SqliteFailure(e, message)
            if matches!(e.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) =>
        {
            Some(format!(
                "SQLite database {} is locked by another process: {}",
                path.display(),
                message.as_deref().unwrap_or("database is locked")
            ))
        }
        rusqlite::Error::SqliteFailure(e, _)
            if matches!(
                e.code,
                ErrorCode::CannotOpen | ErrorCode::SystemIoFailure | ErrorCode::DiskFull | ErrorCode::ReadOnly
            ) =>
        {
            Some(format!("SQLite database {}: {error}", path.display()))
        }
        _ => None,
    };
    match transient {
        Some(message) => StoreError::Unavailable {
            message,
            source: Some(std::sync::Arc::new(error)),
        },
        None => StoreError::Unexpected {
            message: format!("SQLite database {}: {error}", path.display()),
            source: Some(std::sync::Arc::new(error)),
        },
    }
}
