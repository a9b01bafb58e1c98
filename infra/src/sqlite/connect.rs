use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use vodsource_commands::ports::StoreError;

/// How a SQLite file is opened.
#[derive(Debug, Clone)]
pub struct SqliteSettings {
    /// `full` (every commit reaches the disk; the default) or `normal` (WAL commits reach the
    /// disk at checkpoints: survives a process crash, not a power cut).
    pub synchronous: SqliteSynchronous,
    /// How long a write waits for another process's lock before failing.
    pub busy_timeout: Duration,
}

impl Default for SqliteSettings {
    fn default() -> Self {
        Self {
            synchronous: SqliteSynchronous::Full,
            busy_timeout: Duration::from_secs(5),
        }
    }
}

impl SqliteSettings {
    /// Reads `synchronous=` and `busy_timeout_ms=` from a URL query.
    ///
    /// # Errors
    /// `Invalid` naming the bad parameter.
    pub fn from_query(query: &str) -> Result<Self, StoreError> {
        let mut settings = Self::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "synchronous" => {
                    settings.synchronous = SqliteSynchronous::from_str(value)
                        .map_err(|_| StoreError::Invalid(format!("unknown SQLite synchronous mode {value:?}")))?;
                }
                "busy_timeout_ms" => {
                    let ms = value
                        .parse()
                        .map_err(|_| StoreError::Invalid(format!("busy_timeout_ms must be a number, got {value:?}")))?;
                    settings.busy_timeout = Duration::from_millis(ms);
                }
                other => return Err(StoreError::Invalid(format!("unknown SQLite URL parameter {other:?}"))),
            }
        }
        Ok(settings)
    }

    pub(crate) fn synchronous_pragma(&self) -> &'static str {
        match self.synchronous {
            SqliteSynchronous::Off => "OFF",
            SqliteSynchronous::Normal => "NORMAL",
            SqliteSynchronous::Full => "FULL",
            SqliteSynchronous::Extra => "EXTRA",
        }
    }

    pub(crate) fn options(&self, path: &Path) -> SqliteConnectOptions {
        SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(self.synchronous)
            .busy_timeout(self.busy_timeout)
            .pragma("temp_store", "memory")
            .pragma("cache_size", "-65536")
    }
}

/// Makes sure the folder of `path` exists.
pub(crate) fn prepare(path: &Path) -> Result<PathBuf, StoreError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| {
            StoreError::Unavailable(format!("cannot create the folder {} for SQLite: {e}", parent.display()))
        })?;
    }
    Ok(path.to_path_buf())
}

/// Names the file in every error, and says "locked" when another process holds it.
pub(crate) fn map_err(path: &Path, error: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &error {
        let code = db.code().unwrap_or_default();
        // 5 SQLITE_BUSY, 6 SQLITE_LOCKED and their extended codes (261, 517, 262).
        if matches!(code.as_ref(), "5" | "6" | "261" | "262" | "517") || db.message().contains("locked") {
            return StoreError::Unavailable(format!(
                "SQLite database {} is locked by another process: {}",
                path.display(),
                db.message()
            ));
        }
    }
    match error {
        sqlx::Error::Io(e) => StoreError::Unavailable(format!("SQLite database {}: {e}", path.display())),
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => {
            StoreError::Unavailable(format!("SQLite database {}: {error}", path.display()))
        }
        other => StoreError::Unexpected(format!("SQLite database {}: {other}", path.display())),
    }
}

/// Microseconds since the epoch, as stored.
pub(crate) fn to_micros(at: chrono::DateTime<chrono::Utc>) -> i64 {
    at.timestamp_micros()
}

/// Back from microseconds; out-of-range values become the epoch rather than a panic.
pub(crate) fn from_micros(us: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_micros(us).unwrap_or_default()
}

/// A count or position as SQLite stores it.
pub(crate) fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
