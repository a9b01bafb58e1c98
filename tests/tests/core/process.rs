//! Process managers: upload → encode, lease expiry → requeue with backoff, attempts
//! exhausted → terminal failure listed as a dead letter. Time is a manual clock.

use std::sync::Arc;

use chrono::Duration;
use vodsource_commands::ports::{EventLog, ManualClock};
use vodsource_commands::process::{EncodingSupervisor, SupervisorConfig};
use vodsource_commands::{CommandContext, VideoCommands};
use vodsource_domain::{Stage, VideoCommand, VideoError, VideoEvent};
use vodsource_infra::sqlite::SqliteViewStore;
use vodsource_projections::{DeadLetterProjector, DeadLetterView, Runner, RunnerConfig, ViewStore};

use crate::helpers::{clock, commands, register, sqlite_log, upload, view_store, TempDir};

struct World {
    log: Arc<dyn EventLog>,
    clock: Arc<ManualClock>,
    commands: VideoCommands,
    supervisor: EncodingSupervisor,
    store: SqliteViewStore,
    _dir: TempDir,
}

async fn world() -> World {
    let (log, dir) = sqlite_log().await;
    let log: Arc<dyn EventLog> = Arc::new(log);
    let clock = clock();
    let commands = commands(log.clone(), clock.clone());
    let store = view_store(dir.path(), "views.db").await;
    let shared = Arc::new(store.clone());
    let supervisor = EncodingSupervisor::new(
        commands.clone(),
        log.clone(),
        shared.clone(),
        shared.clone(),
        shared.clone(),
        shared,
        clock.clone(),
        "supervisor-1".into(),
        SupervisorConfig::default(),
    );
    World {
        log,
        clock,
        commands,
        supervisor,
        store,
        _dir: dir,
    }
}

impl World {
    async fn send(&self, id: &str, command: VideoCommand) -> Result<Vec<VideoEvent>, VideoError> {
        match self.commands.execute(id, command, &CommandContext::actor("test")).await {
            Ok(outcome) => Ok(outcome.events),
            Err(vodsource_commands::CommandError::Domain(e)) => Err(e),
            Err(e) => panic!("unexpected {e}"),
        }
    }

    async fn video(&self, id: &str) -> vodsource_domain::Video {
        self.commands.store().load(id).await.expect("load").video
    }

    async fn claim(&self, id: &str, attempt: u32) -> Result<Vec<VideoEvent>, VideoError> {
        self.send(
            id,
            VideoCommand::ClaimEncoding {
                worker_id: format!("worker-{attempt}"),
                attempt,
                lease_secs: 30,
            },
        )
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_starts_encoding() {
    let w = world().await;
    w.send("v", register("clip")).await.expect("register");
    w.supervisor.catch_up().await.expect("catch up");
    assert_eq!(w.video("v").await.stage, Stage::AwaitingUpload);
    w.send("v", upload()).await.expect("upload");
    w.supervisor.catch_up().await.expect("catch up");
    let video = w.video("v").await;
    assert_eq!((video.stage, video.attempt), (Stage::Queued, 1));
    // The upload delivered again (a restart before the checkpoint): nothing more happens,
    // no second attempt is requested.
    let events_before = w.log.head().await.expect("head");
    let uploaded = w.log.read_all(1, 1).await.expect("read").remove(0);
    assert_eq!(
        uploaded.event_type, "SourceUploaded",
        "the event the supervisor acts on"
    );
    let again = w.supervisor.handle(&uploaded).await;
    again.expect("redelivery is harmless");
    assert_eq!(w.log.head().await.expect("head"), events_before);
    assert_eq!(w.video("v").await.attempt, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lapsed_leases_are_requeued_with_backoff_until_attempts_run_out() {
    let w = world().await;
    w.send("v", register("clip")).await.expect("register");
    w.send("v", upload()).await.expect("upload");
    w.supervisor.catch_up().await.expect("request");

    // Attempt 1 is claimed and its worker dies.
    w.claim("v", 1).await.expect("claim 1");
    w.supervisor.catch_up().await.expect("track lease");
    w.clock.advance(Duration::seconds(29));
    w.supervisor.catch_up().await.expect("not yet");
    assert_eq!(w.video("v").await.attempt, 1, "a live lease is left alone");
    w.clock.advance(Duration::seconds(2));
    w.supervisor.catch_up().await.expect("sweep");
    let video = w.video("v").await;
    assert_eq!((video.stage, video.attempt), (Stage::Queued, 2));
    assert_eq!(
        video.not_before,
        Some(w.clock_now() + Duration::seconds(10)),
        "first backoff 10 s"
    );
    assert!(matches!(w.claim("v", 2).await, Err(VideoError::BackoffActive { .. })));

    // Attempt 2: claimed after the backoff, progress extends the lease, then the worker dies.
    w.clock.advance(Duration::seconds(10));
    w.claim("v", 2).await.expect("claim 2");
    w.supervisor.catch_up().await.expect("track");
    w.clock.advance(Duration::seconds(25));
    w.send(
        "v",
        VideoCommand::RecordProgress {
            worker_id: "worker-2".into(),
            attempt: 2,
            stage: vodsource_domain::EncodeStage::Encode,
            rendition: None,
            percent: 10.0,
            fps: None,
            eta_seconds: None,
            lease_secs: 30,
        },
    )
    .await
    .expect("progress");
    w.clock.advance(Duration::seconds(10));
    // The sweep runs before it reads the progress event: the domain says the lease is live.
    w.supervisor.sweep().await.expect("early sweep");
    assert_eq!(w.video("v").await.attempt, 2, "progress extended the lease");
    w.clock.advance(Duration::seconds(21));
    w.supervisor.catch_up().await.expect("sweep 2");
    let video = w.video("v").await;
    assert_eq!((video.stage, video.attempt), (Stage::Queued, 3));
    assert_eq!(
        video.not_before,
        Some(w.clock_now() + Duration::seconds(20)),
        "second backoff doubles"
    );

    // Attempt 3, the last: its lapse is a terminal failure.
    w.clock.advance(Duration::seconds(20));
    w.claim("v", 3).await.expect("claim 3");
    w.supervisor.catch_up().await.expect("track");
    w.clock.advance(Duration::seconds(31));
    w.supervisor.catch_up().await.expect("give up");
    let video = w.video("v").await;
    assert_eq!(video.stage, Stage::Failed);
    let failure = video.failure.expect("failure");
    assert!(!failure.retryable);
    assert_eq!(failure.reason, "gave up after 3 attempts: the worker's lease expired");

    // It is listed as a dead letter until retried.
    let views = Arc::new(w.store.clone());
    let mut dead = Runner::new(
        DeadLetterProjector,
        w.log.clone(),
        views.clone(),
        views,
        w.clock.clone(),
        "p",
        RunnerConfig::default(),
    );
    dead.catch_up().await.expect("dead letters");
    let listed: DeadLetterView = serde_json::from_str(
        &w.store
            .get("dead_letters", "v")
            .await
            .expect("get")
            .expect("listed")
            .body,
    )
    .expect("json");
    assert_eq!((listed.attempt, listed.reason.as_str()), (3, failure.reason.as_str()));
    w.send("v", VideoCommand::RetryEncoding).await.expect("retry");
    dead.catch_up().await.expect("dead letters");
    assert!(w.store.get("dead_letters", "v").await.expect("get").is_none());
    assert_eq!(w.video("v").await.attempt, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retryable_failure_is_requeued_and_a_terminal_one_is_not() {
    let w = world().await;
    for id in ["retry", "bad"] {
        w.send(id, register("clip")).await.expect("register");
        w.send(id, upload()).await.expect("upload");
    }
    w.supervisor.catch_up().await.expect("request");
    for (id, retryable) in [("retry", true), ("bad", false)] {
        w.claim(id, 1).await.expect("claim");
        w.send(
            id,
            VideoCommand::FailEncoding {
                worker_id: "worker-1".into(),
                attempt: 1,
                reason: "boom".into(),
                retryable,
            },
        )
        .await
        .expect("fail");
    }
    w.supervisor.catch_up().await.expect("react");
    let retry = w.video("retry").await;
    assert_eq!((retry.stage, retry.attempt), (Stage::Queued, 2));
    let bad = w.video("bad").await;
    assert_eq!((bad.stage, bad.attempt), (Stage::Failed, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_video_is_not_requeued() {
    let w = world().await;
    w.send("v", register("clip")).await.expect("register");
    w.send("v", upload()).await.expect("upload");
    w.supervisor.catch_up().await.expect("request");
    w.claim("v", 1).await.expect("claim");
    w.supervisor.catch_up().await.expect("track");
    w.send("v", VideoCommand::Delete { reason: None })
        .await
        .expect("delete");
    w.clock.advance(Duration::seconds(60));
    let head = w.log.head().await.expect("head");
    w.supervisor.catch_up().await.expect("sweep");
    assert_eq!(
        w.log.head().await.expect("head"),
        head,
        "nothing is written for a deleted video"
    );
}

impl World {
    fn clock_now(&self) -> chrono::DateTime<chrono::Utc> {
        vodsource_domain::Clock::now(&*self.clock)
    }
}

/// Two processes (two command services, two aggregate caches) write one video: a refusal or
/// an If-Match check decided on a stale cache is checked against the log first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_aggregate_cache_is_checked_against_the_log_before_refusing() {
    let (log, _dir) = sqlite_log().await;
    let log: Arc<dyn EventLog> = Arc::new(log);
    let clock = clock();
    let a = commands(log.clone(), clock.clone());
    let b = commands(log.clone(), clock.clone());
    let ctx = CommandContext::actor("t");
    a.execute("v", register("stale"), &ctx).await.expect("register");
    let rename = VideoCommand::UpdateMetadata {
        title: Some("b was here".into()),
        description: None,
        tags: None,
    };
    b.execute("v", rename.clone(), &ctx)
        .await
        .expect("b caches v at version 2");
    a.execute("v", upload(), &ctx).await.expect("a uploads: version 3");
    // b's cache says the source is not uploaded; the log says it is.
    let requested = b.execute("v", VideoCommand::RequestEncoding, &ctx).await;
    assert_eq!(requested.map(|o| o.version), Ok(4));
    // a's cache is at 3; If-Match 4 holds once the log is read.
    let conditional = CommandContext {
        expected_version: Some(4),
        ..ctx.clone()
    };
    let rename_again = VideoCommand::UpdateMetadata {
        title: Some("a was here".into()),
        description: None,
        tags: None,
    };
    assert_eq!(
        a.execute("v", rename_again, &conditional).await.map(|o| o.version),
        Ok(5)
    );
    let stale = CommandContext {
        expected_version: Some(4),
        ..ctx
    };
    let refused = b.execute("v", rename, &stale).await;
    assert!(
        matches!(
            refused,
            Err(vodsource_commands::CommandError::VersionMismatch { expected: 4, actual: 5 })
        ),
        "{refused:?}"
    );
}
