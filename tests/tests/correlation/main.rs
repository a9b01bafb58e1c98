//! One request followed through the logs by its correlation id. A binary of its own: the
//! test listens with a subscriber set for its thread only, and other tests running beside it
//! in one process (with none) could leave `tracing`'s shared callsite state saying nobody
//! listens — CI saw the request's command lines go missing that way.

#[allow(dead_code, unused_imports)]
#[path = "../encoder/helpers.rs"]
mod helpers;

use std::sync::Arc;

use vodsource_commands::CommandContext;
use vodsource_domain::VideoCommand;
use vodsource_encoder::JobOutcome;

use helpers::{worker, World};

/// What a `tracing` subscriber writes, kept for the test to read.
#[derive(Clone, Default)]
struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("logs").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().expect("logs"))
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// One flow, followed by its correlation id: the request's commands, the supervisor reacting
/// to their events, and the worker's job (which fails fast here, on a source that is not
/// media). Every command logs inside a `command` span naming the video, the command and the
/// correlation id; the supervisor's `supervise` span names the event it reacts to; the
/// worker's `encode` span carries the request's correlation id, and so do the events it
/// records.
#[tokio::test(flavor = "current_thread")]
async fn a_request_s_correlation_id_follows_the_flow_through_supervisor_and_worker() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let world = World::new().await;
    let id = uuid::Uuid::now_v7().to_string();
    let correlation = uuid::Uuid::now_v7();
    let context = CommandContext {
        actor: Some("tester".into()),
        correlation_id: Some(correlation),
        ..CommandContext::default()
    };
    let body = b"not a video at all\n".repeat(50);
    let commands = world.stores.commands();
    let register = VideoCommand::Register {
        owner: "tester".into(),
        title: "traced".into(),
        description: String::new(),
        tags: vec![],
        filename: "clip.mp4".into(),
        content_type: "video/mp4".into(),
        size_bytes: body.len() as u64,
        source_url: None,
        publish_when_playable: false,
    };
    commands.execute(&id, register, &context).await.expect("registered");
    let key = vodsource_commands::layout::source_key(&id, "clip.mp4");
    world
        .objects
        .put(&key, Box::new(std::io::Cursor::new(body.clone())), u64::MAX)
        .await
        .expect("stored");
    let complete = VideoCommand::CompleteUpload {
        object_key: key,
        size_bytes: body.len() as u64,
        checksum: None,
    };
    commands.execute(&id, complete, &context).await.expect("uploaded");
    world.supervise().await;
    let outcome = worker(&world, "w1").run_one().await.expect("no store failure");
    assert!(
        matches!(outcome, Some(JobOutcome::Failed { retryable: false, .. })),
        "{outcome:?}"
    );

    // The worker's own events carry the request's correlation id.
    let recorded = world.stores.log.read_stream(&id, 0, 100).await.expect("stream reads");
    let failed = recorded
        .iter()
        .find(|e| e.event_type == "EncodingFailed")
        .expect("the failure is recorded");
    assert_eq!(failed.metadata.correlation_id, Some(correlation));
    assert_eq!(failed.metadata.actor.as_deref(), Some("encoder:w1"));

    let lines = logs.lines();
    let has = |parts: &[&str]| lines.iter().any(|l| parts.iter().all(|p| l.contains(p)));
    let video = format!("video_id={id}");
    let flow = format!("correlation_id={correlation}");
    assert!(
        has(&["command{", &video, "command=\"register\"", &flow, "recorded"]),
        "the request's command: {lines:#?}"
    );
    assert!(
        has(&[
            "supervise{",
            &video,
            "event_type=SourceUploaded",
            &flow,
            "command{",
            "command=\"request_encoding\"",
            "recorded"
        ]),
        "the supervisor's command, inside its span: {lines:#?}"
    );
    assert!(
        has(&[
            "encode{",
            &video,
            "attempt=1",
            "worker=w1",
            &flow,
            "command{",
            "command=\"fail_encoding\"",
            "recorded"
        ]),
        "the worker's command, inside its span: {lines:#?}"
    );
}
