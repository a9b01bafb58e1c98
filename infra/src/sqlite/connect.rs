use std::path::{Path, PathBuf};
use std::time::Duration;

use vodsource_commands::ports::StoreError;

/// When SQLite makes a commit durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronous {
    /// Every commit reaches the disk before it is acknowledged (the default).
    Full,
    /// WAL commits reach the disk at checkpoints: survives a process crash, not a power cut.
    Normal,
}

/// How a SQLite file is opened.
#[derive(Debug, Clone)]
pub struct SqliteSettings {
    /// Durability of commits.
    pub synchronous: Synchronous,
    /// How long a write waits for another process's lock before failing.
    pub busy_timeout: Duration,
}

impl Default for SqliteSettings {
    fn default() -> Self {
        Self {
            synchronous: Synchronous::Full,
            busy_timeout: Duration::from_secs(5),
        }
    }
}

impl SqliteSettings {
    /// Reads `synchronous=full|normal` and `busy_timeout_ms=N` from a URL query.
    ///
    /// # Errors
    /// `Invalid` naming the bad parameter.
    pub fn from_query(query: &str) -> Result<Self, StoreError> {
        let mut settings = Self::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "synchronous" => {
                    settings.synchronous = match value.to_ascii_lowercase().as_str() {
                        "full" => Synchronous::Full,
                        "normal" => Synchronous::Normal,
                        _ => {
                            return Err(StoreError::Invalid(format!(
                                "SQLite synchronous must be full or normal, got {value:?}"
                            )))
                        }
                    };
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
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        }
    }
}

/// Makes sure the folder of `path` exists.
pub(crate) fn prepare(path: &Path) -> Result<PathBuf, StoreError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| {
            StoreError::unavailable(format!("cannot create the folder {} for SQLite: {e}", parent.display()))
        })?;
    }
    Ok(path.to_path_buf())
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
