//! Faults and bad input: unreadable events stop only the projections that read them; a
//! locked SQLite file and an unreachable PostgreSQL are named; runners ride out outages.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
#[cfg(feature = "distributed")]
use std::time::Duration;

use serde_json::json;
use vodsource_commands::ports::{EventLog, ExpectedVersion, StoreError};
#[cfg(feature = "distributed")]
use vodsource_infra::postgres::PgEventLog;
use vodsource_infra::sqlite::{SqliteEventLog, SqliteSettings};
use vodsource_projections::{
    CatalogProjector, DeadLetterProjector, ProjectionStatus, Runner, RunnerConfig, RunnerError, StatusProjector,
    ViewStore,
};

use crate::conformance::{append, event};
use crate::helpers::{clock, commands, lifecycle, sqlite_log, view_store};
#[cfg(feature = "distributed")]
use crate::helpers::{eventually, pg_base_url};
#[cfg(feature = "distributed")]
use crate::proxy::Proxy;

async fn run_all(
    log: &Arc<dyn EventLog>,
    views: &Arc<vodsource_infra::sqlite::SqliteViewStore>,
) -> Vec<Result<u64, RunnerError>> {
    let clock = clock();
    let config = RunnerConfig::default;
    vec![
        Runner::new(
            CatalogProjector,
            log.clone(),
            views.clone(),
            views.clone(),
            clock.clone(),
            "p",
            config(),
        )
        .catch_up()
        .await,
        Runner::new(
            StatusProjector,
            log.clone(),
            views.clone(),
            views.clone(),
            clock.clone(),
            "p",
            config(),
        )
        .catch_up()
        .await,
        Runner::new(
            DeadLetterProjector,
            log.clone(),
            views.clone(),
            views.clone(),
            clock,
            "p",
            config(),
        )
        .catch_up()
        .await,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_only_the_catalog_reads_stops_the_catalog_and_no_other_projection() {
    let (log, dir) = sqlite_log().await;
    let log: Arc<dyn EventLog> = Arc::new(log);
    let commands = commands(log.clone(), clock());
    lifecycle(&commands, "a", 0).await;
    let bad_at = log
        .append(append(
            "a",
            ExpectedVersion::Any,
            vec![event("MetadataUpdated", json!({"MetadataUpdated": {"title": 42}}))],
        ))
        .await
        .expect("append")
        .first_position;
    lifecycle(&commands, "b", 3).await;
    let head = log.head().await.expect("head");

    let views = Arc::new(view_store(dir.path(), "views.db").await);
    let results = run_all(&log, &views).await;
    match &results[0] {
        Err(RunnerError::Stopped { projection, source }) => {
            assert_eq!(*projection, "catalog");
            let message = source.to_string();
            assert!(
                message.contains(&format!("position {bad_at}")) && message.contains("MetadataUpdated"),
                "{message}"
            );
        }
        other => panic!("catalog should stop, got {other:?}"),
    }
    assert_eq!(results[1].as_ref().ok(), Some(&head), "status goes on");
    assert_eq!(results[2].as_ref().ok(), Some(&head), "dead letters go on");
    let state = views.projection("catalog").await.expect("state");
    assert_eq!(
        state.position,
        bad_at - 1,
        "the catalog holds everything before the bad event"
    );
    assert!(matches!(state.status, ProjectionStatus::Failed { position, .. } if position == bad_at));
    // Restarting does not skip it.
    let again = Runner::new(
        CatalogProjector,
        log.clone(),
        views.clone(),
        views.clone(),
        clock(),
        "p",
        RunnerConfig::default(),
    )
    .catch_up()
    .await;
    assert!(matches!(again, Err(RunnerError::Failed { position, .. }) if position == bad_at));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_event_type_or_newer_schema_is_reported_with_its_position_and_type() {
    let (log, dir) = sqlite_log().await;
    let log: Arc<dyn EventLog> = Arc::new(log);
    let commands = commands(log.clone(), clock());
    lifecycle(&commands, "a", 0).await;
    let unknown = log
        .append(append(
            "a",
            ExpectedVersion::Any,
            vec![event("VideoTeleported", json!({"VideoTeleported": {}}))],
        ))
        .await
        .expect("append")
        .first_position;
    let views = Arc::new(view_store(dir.path(), "views.db").await);
    for result in run_all(&log, &views).await {
        let message = result.expect_err("every projection meets an unknown type").to_string();
        assert!(
            message.contains("unknown event type \"VideoTeleported\"")
                && message.contains(&format!("position {unknown}")),
            "{message}"
        );
    }

    let (log, dir) = sqlite_log().await;
    let log: Arc<dyn EventLog> = Arc::new(log);
    let mut newer = event(
        "MetadataUpdated",
        json!({"MetadataUpdated": {"title": "x", "description": null, "tags": null, "subtitle": "y"}}),
    );
    newer.schema_version = 2;
    lifecycle(&commands_on(&log), "a", 0).await;
    let at = log
        .append(append("a", ExpectedVersion::Any, vec![newer]))
        .await
        .expect("append")
        .first_position;
    let views = Arc::new(view_store(dir.path(), "views.db").await);
    let message = run_all(&log, &views)
        .await
        .remove(0)
        .expect_err("catalog stops")
        .to_string();
    assert!(
        message.contains(&format!("position {at}")) && message.contains("schema version 2"),
        "{message}"
    );
}

fn commands_on(log: &Arc<dyn EventLog>) -> vodsource_commands::VideoCommands {
    commands(log.clone(), clock())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_file_locked_by_another_process_is_named_in_the_error() {
    let (log, dir) = sqlite_log().await;
    let path = log.path().to_path_buf();
    drop(log);
    let mut holder = Command::new("python3")
        .arg("-c")
        .arg("import sqlite3, sys; c = sqlite3.connect(sys.argv[1], isolation_level=None); c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); sys.stdin.read()")
        .arg(&path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 is needed to hold a lock from another process");
    let mut line = String::new();
    BufReader::new(holder.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read");
    assert_eq!(line.trim(), "locked");

    let settings = SqliteSettings::from_query("busy_timeout_ms=200").expect("settings");
    let err = match SqliteEventLog::open(&path, &settings).await {
        Err(e) => e,
        Ok(log) => log
            .append(append("s", ExpectedVersion::Any, vec![crate::conformance::published()]))
            .await
            .expect_err("the file is locked"),
    };
    drop(holder.stdin.take());
    let _ = holder.wait();
    let message = err.to_string();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    assert!(
        message.contains(&path.display().to_string()) && message.contains("locked by another process"),
        "{message}"
    );
    drop(dir);
}

#[cfg(feature = "distributed")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_postgres_is_named_by_host_and_port() {
    let err = match PgEventLog::connect("postgres://postgres@127.0.0.1:1/postgres").await {
        Err(e) => e,
        Ok(_) => panic!("nothing listens on port 1"),
    };
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    assert!(
        err.to_string().contains("PostgreSQL at 127.0.0.1:1 is unreachable"),
        "{err}"
    );
}

#[cfg(feature = "distributed")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_rides_out_a_postgres_outage_and_resumes_from_its_checkpoint() {
    let base = pg_base_url();
    let target: std::net::SocketAddr = "127.0.0.1:5432".parse().expect("addr");
    let proxy = Proxy::start(target).await;
    let schema = format!("t_{}", uuid::Uuid::now_v7().simple());
    let direct_url = format!("{base}?schema={schema}");
    let proxied_url = direct_url.replace(":5432", &format!(":{}", proxy.port));
    let direct: Arc<dyn EventLog> = Arc::new(crate::helpers::pg_log_at(&direct_url).await);
    let proxied: Arc<dyn EventLog> = Arc::new(crate::helpers::pg_log_at(&proxied_url).await);
    let commands = commands(direct.clone(), clock());
    for i in 0..5 {
        lifecycle(&commands, &format!("before{i}"), i).await;
    }

    let dir = crate::helpers::TempDir::new();
    let store = view_store(dir.path(), "views.db").await;
    let views = Arc::new(store.clone());
    let runner = Runner::new(
        CatalogProjector,
        proxied.clone(),
        views.clone(),
        views.clone(),
        Arc::new(vodsource_commands::ports::SystemClock),
        "p",
        RunnerConfig::default(),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(runner.run(async move {
        let _ = stopped.await;
    }));
    let caught_up = |store: vodsource_infra::sqlite::SqliteViewStore, log: Arc<dyn EventLog>| async move {
        store.projection("catalog").await.expect("state").position == log.head().await.expect("head")
    };
    eventually("the runner catches up", Duration::from_secs(20), || {
        caught_up(store.clone(), direct.clone())
    })
    .await;
    let before = store.projection("catalog").await.expect("state").position;

    proxy.cut();
    for i in 0..5 {
        lifecycle(&commands, &format!("during{i}"), i).await;
    }
    eventually(
        "the runner retries while PostgreSQL is unreachable",
        Duration::from_secs(20),
        || async { proxy.refused() >= 2 },
    )
    .await;
    assert!(!task.is_finished(), "an outage does not stop the runner");
    assert_eq!(
        store.projection("catalog").await.expect("state").position,
        before,
        "nothing moves while cut"
    );

    proxy.restore();
    eventually("the runner resumes after the outage", Duration::from_secs(30), || {
        caught_up(store.clone(), direct.clone())
    })
    .await;
    let _ = stop.send(());
    task.await.expect("join").expect("clean stop");
    let fresh_dir = crate::helpers::TempDir::new();
    let fresh = view_store(fresh_dir.path(), "fresh.db").await;
    let fresh_views = Arc::new(fresh.clone());
    Runner::new(
        CatalogProjector,
        direct.clone(),
        fresh_views.clone(),
        fresh_views,
        clock(),
        "f",
        RunnerConfig::default(),
    )
    .catch_up()
    .await
    .expect("fresh");
    assert_eq!(
        store.dump("catalog").await.expect("dump"),
        fresh.dump("catalog").await.expect("dump")
    );
}
