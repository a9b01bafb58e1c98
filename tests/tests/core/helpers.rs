//! What every test needs: fresh stores on real services, generated video lifecycles.

use std::path::Path;
use std::sync::Arc;
#[cfg(feature = "distributed")]
use std::time::Duration;

use chrono::{TimeZone, Utc};
use vodsource_commands::ports::{EventLog, ManualClock};
use vodsource_commands::{VideoCommands, VideoStore};
use vodsource_domain::{Clock, VideoServices};
#[cfg(feature = "distributed")]
use vodsource_infra::postgres::PgEventLog;
use vodsource_infra::sqlite::{SqliteEventLog, SqliteSettings, SqliteViewStore};

/// A folder removed when dropped.
pub use vodsource_tests::TempDir;

#[cfg(feature = "distributed")]
/// The PostgreSQL server the tests use.
pub fn pg_base_url() -> String {
    std::env::var("VODSOURCE_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

#[cfg(feature = "distributed")]
/// A fresh schema on the test server.
pub fn pg_url() -> String {
    let base = pg_base_url();
    let schema = format!("t_{}", uuid::Uuid::now_v7().simple());
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}schema={schema}")
}

#[cfg(feature = "distributed")]
/// Connects to a fresh schema, or fails saying how to start PostgreSQL.
pub async fn pg_log() -> PgEventLog {
    let url = pg_url();
    match PgEventLog::connect(&url).await {
        Ok(log) => log,
        Err(e) => panic!(
            "PostgreSQL is needed for this test and is not reachable ({e}). Start it with \
             `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`, or run \
             scripts/test.sh, which installs and starts it; set VODSOURCE_TEST_PG_URL to use another server."
        ),
    }
}

/// A fresh SQLite event store and the folder holding it.
pub async fn sqlite_log() -> (SqliteEventLog, TempDir) {
    let dir = TempDir::new();
    let log = SqliteEventLog::open(dir.path().join("events.db"), &SqliteSettings::default())
        .await
        .expect("open sqlite event log");
    (log, dir)
}

/// A fresh SQLite view store in `dir`.
pub async fn view_store(dir: &Path, name: &str) -> SqliteViewStore {
    SqliteViewStore::open(dir.join(name), &SqliteSettings::default())
        .await
        .expect("open view store")
}

/// A manual clock at a fixed instant.
pub fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0).single().expect("date"),
    ))
}

/// Commands over `log` with `clock`.
pub fn commands(log: Arc<dyn EventLog>, clock: Arc<dyn Clock>) -> VideoCommands {
    VideoCommands::new(VideoStore::new(log, clock.clone(), 1000), VideoServices::new(clock))
}

pub use vodsource_api::seed::{register, upload};

/// Drives video `id` through the sample lifecycle `i % 7` (see `vodsource_api::seed`).
pub async fn lifecycle(commands: &VideoCommands, id: &str, i: usize) -> usize {
    vodsource_api::seed::lifecycle(commands, id, i)
        .await
        .expect("lifecycle command")
}

#[cfg(feature = "distributed")]
/// Polls `check` until it holds or `deadline` passes.
pub async fn eventually<F, Fut>(what: &str, deadline: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if check().await {
            return;
        }
        assert!(tokio::time::Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[cfg(feature = "distributed")]
/// Connects to a given URL, or fails saying how to start PostgreSQL.
pub async fn pg_log_at(url: &str) -> PgEventLog {
    PgEventLog::connect(url).await.unwrap_or_else(|e| {
        panic!("PostgreSQL is needed for this test and is not reachable ({e}). Run scripts/test.sh, which starts it.")
    })
}
