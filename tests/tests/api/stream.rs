//! Server-Sent Events of a video's events: live, resumable, ending with the video, and
//! graceful shutdown.

use std::time::Duration;

use futures::StreamExt;
use reqwest::{Method, StatusCode};

use crate::harness::{server, token};

/// Reads SSE frames until `count` events arrived; returns (id, event type) pairs.
async fn read_events(response: reqwest::Response, count: usize) -> (Vec<(u64, String)>, bool) {
    read_counting(response, count, &std::sync::atomic::AtomicUsize::new(0)).await
}

/// As [`read_events`], counting events in `seen` as they arrive.
async fn read_counting(
    response: reqwest::Response,
    count: usize,
    seen: &std::sync::atomic::AtomicUsize,
) -> (Vec<(u64, String)>, bool) {
    let mut stream = response.bytes_stream();
    let mut buffer = String::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            let mut id = None;
            let mut kind = None;
            for line in frame.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = v.trim().parse::<u64>().ok();
                }
                if let Some(v) = line.strip_prefix("event: ") {
                    kind = Some(v.trim().to_owned());
                }
            }
            if let (Some(id), Some(kind)) = (id, kind) {
                events.push((id, kind));
                seen.store(events.len(), std::sync::atomic::Ordering::SeqCst);
            }
        }
        if events.len() >= count {
            return (events, false);
        }
        let next = tokio::time::timeout_at(deadline, stream.next()).await;
        match next {
            Ok(Some(Ok(bytes))) => buffer.push_str(&String::from_utf8_lossy(&bytes)),
            Ok(Some(Err(_)) | None) => return (events, true),
            Err(_) => panic!("timed out with {events:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_events_follow_the_log_resume_after_last_event_id_and_end_with_the_video() {
    let s = server().await;
    let alice = token("alice", "creator");
    let (id, url) = s.register("alice", "live", 4).await;
    let path = format!("/v1/videos/{id}/events");
    let response = s.req(Method::GET, &path, &alice).send().await.expect("sse");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("text/event-stream")));
    let (first, _) = read_events(response, 1).await;
    assert_eq!(first[0].1, "VideoRegistered");
    let registered_at = first[0].0;

    // Resume after the registration: only what came later, as it happens.
    let resumed = s
        .req(Method::GET, &path, &alice)
        .header("Last-Event-ID", registered_at.to_string())
        .send()
        .await
        .expect("sse");
    // Asked for more than will come: the read ends only because the stream does.
    let reader = tokio::spawn(read_events(resumed, 4));
    let put = s.client.put(&url).body("abcd").send().await.expect("put");
    assert_eq!(put.status(), StatusCode::OK);
    let (status, _) = s
        .send(s.req(Method::POST, &format!("/v1/videos/{id}/upload-complete"), &alice))
        .await;
    assert_eq!(status, StatusCode::OK);
    // The supervisor requests encoding; then the owner deletes the video.
    s.until_catalog(&id, "queued", |v| v["status"] == "queued").await;
    let (status, _) = s.send(s.req(Method::DELETE, &format!("/v1/videos/{id}"), &alice)).await;
    assert_eq!(status, StatusCode::OK);
    let (events, ended) = reader.await.expect("reader");
    let kinds: Vec<_> = events.iter().map(|(_, k)| k.as_str()).collect();
    assert_eq!(kinds, ["SourceUploaded", "EncodingRequested", "VideoDeleted"]);
    assert!(
        events.windows(2).all(|w| w[0].0 < w[1].0),
        "ids are increasing positions"
    );
    assert!(events[0].0 > registered_at);
    assert!(ended, "the live stream ends when the video is deleted");
    // After deletion a new stream replays and then ends on its own.
    let replay = s.req(Method::GET, &path, &alice).send().await.expect("sse");
    let (all, ended) = read_events(replay, 100).await;
    assert!(ended, "the stream of a deleted video ends");
    assert_eq!(all.len(), 4);
    let (status, _) = s.send(s.req(Method::GET, &path, &token("bob", "creator"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another owner's video is not found");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_streams_and_checkpoints_the_runners() {
    let s = server().await;
    let alice = token("alice", "creator");
    let id = s.uploaded("alice", "before shutdown").await;
    s.until_catalog(&id, "queued", |v| v["status"] == "queued").await;
    let response = s
        .req(Method::GET, &format!("/v1/videos/{id}/events"), &alice)
        .send()
        .await
        .expect("sse");
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = seen.clone();
    let reader = tokio::spawn(async move { read_counting(response, 100, &counter).await });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while seen.load(std::sync::atomic::Ordering::SeqCst) < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stream did not deliver the history"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let head = s.stores.log.head().await.expect("head");
    let views = s.stores.views.clone();
    // Each runner reaches the head first (a runner stops where it is, it does not drain: on a
    // loaded machine one may lag the stream); then shutdown must keep what they applied.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for name in vodsource_projections::PROJECTIONS {
        while vodsource_projections::ViewStore::projection(views.as_ref(), name)
            .await
            .expect("state")
            .position
            < head
        {
            assert!(tokio::time::Instant::now() < deadline, "{name} never reached the head");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    tokio::time::timeout(Duration::from_secs(20), s.stop())
        .await
        .expect("shutdown finishes with a stream open");
    let (events, ended) = reader.await.expect("reader");
    assert!(ended, "the stream ended");
    assert_eq!(events.len(), 3);
    for name in vodsource_projections::PROJECTIONS {
        let state = vodsource_projections::ViewStore::projection(views.as_ref(), name)
            .await
            .expect("state");
        assert_eq!(state.position, head, "{name} checkpointed at the head");
    }
}

#[cfg(feature = "distributed")]
/// The same lifecycle with the event store on PostgreSQL: commands, the supervisor, the views
/// and the live stream all work through the distributed store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_runs_on_the_postgresql_event_store() {
    let s = crate::harness::server_on_postgres().await;
    let alice = token("alice", "creator");
    let (id, url) = s.register("alice", "on postgres", 4).await;
    let response = s
        .req(Method::GET, &format!("/v1/videos/{id}/events"), &alice)
        .send()
        .await
        .expect("sse");
    let reader = tokio::spawn(read_events(response, 3));
    let put = s.client.put(&url).body("abcd").send().await.expect("put");
    assert_eq!(put.status(), StatusCode::OK);
    let (status, _) = s
        .send(s.req(Method::POST, &format!("/v1/videos/{id}/upload-complete"), &alice))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (events, _) = reader.await.expect("reader");
    let kinds: Vec<_> = events.iter().map(|(_, k)| k.as_str()).collect();
    assert_eq!(kinds, ["VideoRegistered", "SourceUploaded", "EncodingRequested"]);
    s.until_catalog(&id, "queued", |v| v["status"] == "queued").await;
    assert!(
        s.stores.log.describe().starts_with("postgres"),
        "{}",
        s.stores.log.describe()
    );
    s.stop().await;
}
