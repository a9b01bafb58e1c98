//! QoE beacons: judged one by one, the good ones stored on the QoE stream before the answer.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use vodsource_analytics::QoeEvent;
use vodsource_commands::ports::StreamConsumer;
use vodsource_tests::TempDir;

use crate::harness::{server, server_with, settings, token};

/// A server whose QoE stream is the embedded log in a scratch folder; bind them in this
/// order so the server drops before its folder.
async fn server_with_embedded_stream() -> (TempDir, crate::harness::Server) {
    let scratch = TempDir::new();
    let mut config = settings();
    config.stream = Some(vodsource_infra::StreamUrl::Embedded(scratch.path().join("streams")));
    let server = server_with(config).await;
    (scratch, server)
}

fn beacon(now: i64, i: u64) -> Value {
    json!({
        "event_id": uuid::Uuid::now_v7().to_string(),
        "event_type": "heartbeat",
        "sid": format!("session-{}", i % 3),
        "cid": "video-1",
        "viewer_id": "bob",
        "ts": now - 1000,
        "position_ms": i * 1000,
        "br": 2800,
        "bl": 9000,
        "ot": "av",
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_beacons_are_stored_and_bad_ones_are_rejected_one_by_one() {
    let (_scratch, s) = server_with_embedded_stream().await;
    let viewer = token("bob", "viewer");
    let before = chrono::Utc::now().timestamp_millis();
    let mut bad_type = beacon(before, 9);
    bad_type["br"] = json!("fast");
    let sent = [
        beacon(before, 0),
        bad_type,
        beacon(before, 1),
        json!(7),
        beacon(before, 2),
    ];
    let (status, body) = s
        .send(
            s.req(Method::POST, "/v1/playback/beacons", &viewer)
                .json(&json!({ "events": sent })),
        )
        .await;
    let after = chrono::Utc::now().timestamp_millis();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["accepted"].as_u64(), body["rejected"].as_u64()),
        (Some(3), Some(2)),
        "{body}"
    );
    let results = body["results"].as_array().expect("results");
    let statuses: Vec<&str> = results.iter().filter_map(|r| r["status"].as_str()).collect();
    assert_eq!(statuses, ["accepted", "rejected", "accepted", "rejected", "accepted"]);
    assert_eq!(results[1]["error"]["field"], "br");
    assert_eq!(results[1]["event_id"], sent[1]["event_id"]);
    assert_eq!(results[3]["error"]["field"], "event");

    // Acknowledged means stored: the three good ones are on the stream, keyed by session.
    let running = s.running.as_ref().expect("running");
    let mut consumer = running
        .stream()
        .expect("a stream")
        .consumer("qoe-events", "test")
        .expect("consumer");
    let delivered = consumer.poll(100, Duration::from_millis(100)).await.expect("poll");
    assert_eq!(delivered.len(), 3);
    for d in &delivered {
        let event: QoeEvent = vodsource_analytics::wire::decode_event(&d.value).expect("a QoE event");
        assert_eq!(d.key, event.sid);
        assert!((before..=after).contains(&event.received_at), "stamped on receipt");
        assert!(sent.iter().any(|b| b["event_id"] == event.event_id.to_string()));
    }

    let (status, body) = s
        .send(
            s.req(Method::POST, "/v1/playback/beacons", &viewer)
                .json(&json!({ "events": [] })),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("VALIDATION_FAILED"))
    );
    let many: Vec<Value> = (0..501).map(|i| beacon(before, i)).collect();
    let (status, body) = s
        .send(
            s.req(Method::POST, "/v1/playback/beacons", &viewer)
                .json(&json!({ "events": many })),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("TOO_MANY_EVENTS"))
    );
    let huge = format!("{{\"events\": [\"{}\"]}}", "x".repeat(1024 * 1024));
    let sent = s
        .req(Method::POST, "/v1/playback/beacons", &viewer)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await;
    // Refused by its Content-Length before it is read: the client either reads the 413 or,
    // still writing when the server closes, sees the connection go.
    match sent {
        Ok(response) => assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE),
        Err(e) => assert!(e.is_request() && !e.is_timeout(), "{e:?}"),
    }
}

/// A viewer moves only their own watch state: an event without `viewer_id` is theirs, one
/// naming another viewer is refused; an admin (a trusted relay) may name anyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beacons_belong_to_the_caller() {
    let (_scratch, s) = server_with_embedded_stream().await;
    let now = chrono::Utc::now().timestamp_millis();
    let mut anonymous = beacon(now, 0);
    anonymous.as_object_mut().expect("object").remove("viewer_id");
    let mut someone_else = beacon(now, 1);
    someone_else["viewer_id"] = json!("alice");
    let (status, body) = s
        .send(
            s.req(Method::POST, "/v1/playback/beacons", &token("bob", "viewer"))
                .json(&json!({ "events": [anonymous.clone(), someone_else.clone(), beacon(now, 2)] })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let results = body["results"].as_array().expect("results");
    let statuses: Vec<&str> = results.iter().filter_map(|r| r["status"].as_str()).collect();
    assert_eq!(statuses, ["accepted", "rejected", "accepted"], "{body}");
    assert_eq!(results[1]["error"]["field"], "viewer_id");
    assert!(results[1]["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("\"bob\"")));
    let (status, body) = s
        .send(
            s.req(Method::POST, "/v1/playback/beacons", &token("relay", "admin"))
                .json(&json!({ "events": [beacon(now, 3)] })),
        )
        .await;
    assert_eq!((status, body["accepted"].as_u64()), (StatusCode::OK, Some(1)), "{body}");

    let running = s.running.as_ref().expect("running");
    let mut consumer = running
        .stream()
        .expect("a stream")
        .consumer("qoe-events", "test")
        .expect("consumer");
    let mut viewers = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while viewers.len() < 3 && std::time::Instant::now() < deadline {
        for d in consumer.poll(100, Duration::from_millis(100)).await.expect("poll") {
            let event: QoeEvent = vodsource_analytics::wire::decode_event(&d.value).expect("a QoE event");
            viewers.push((event.event_id.to_string(), event.viewer_id));
        }
    }
    let of = |b: &Value| {
        viewers
            .iter()
            .find(|(id, _)| b["event_id"] == id.as_str())
            .map(|(_, v)| v.clone())
    };
    assert_eq!(viewers.len(), 3, "{viewers:?}");
    assert_eq!(of(&anonymous), Some(Some("bob".to_owned())), "filled in from the token");
    assert_eq!(of(&someone_else), None, "refused, not stored");
}

#[tokio::test]
async fn without_a_stream_beacons_are_refused_rather_than_lost() {
    let s = server().await;
    let now = chrono::Utc::now().timestamp_millis();
    let (status, body) = s
        .send(
            s.req(Method::POST, "/v1/playback/beacons", &token("bob", "viewer"))
                .json(&json!({ "events": [beacon(now, 0)] })),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("UNAVAILABLE"))
    );
}

fn at(now: i64, video: &str, kind: &str, offset_ms: i64, position: u64, duration: Option<u64>) -> Value {
    let mut event = json!({
        "event_id": uuid::Uuid::now_v7().to_string(),
        "event_type": kind,
        "sid": "one-session",
        "cid": video,
        "viewer_id": "bob",
        "ts": now - 60_000 + offset_ms,
        "position_ms": position,
    });
    if let Some(duration) = duration {
        event["duration_ms"] = json!(duration);
    }
    event
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_state_follows_the_newest_event_and_lists_what_to_continue() {
    let (_scratch, s) = server_with_embedded_stream().await;
    let bob = token("bob", "viewer");
    let now = chrono::Utc::now().timestamp_millis();
    let first = [
        at(now, "video-a", "session_start", 0, 0, Some(600_000)),
        at(now, "video-a", "heartbeat", 3_000, 120_000, None),
        at(now, "video-b", "heartbeat", 1_000, 30_000, Some(300_000)),
    ];
    let post = |events: Vec<Value>| {
        s.req(Method::POST, "/v1/playback/beacons", &bob)
            .json(&json!({ "events": events }))
    };
    let (status, body) = s.send(post(first.to_vec())).await;
    assert_eq!((status, body["accepted"].as_u64()), (StatusCode::OK, Some(3)), "{body}");
    // A late event for video-a, then video-c played to its end; one session, so one
    // partition: once video-c is seen, the late event has been folded too.
    let second = vec![
        at(now, "video-a", "heartbeat", 2_000, 60_000, None),
        at(now, "video-c", "ended", 4_000, 90_000, Some(90_000)),
    ];
    let (status, _) = s.send(post(second)).await;
    assert_eq!(status, StatusCode::OK);

    let until = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _) = s
            .send(s.req(Method::GET, "/v1/viewers/bob/watch-state/video-c", &bob))
            .await;
        if status == StatusCode::OK {
            break;
        }
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(
            std::time::Instant::now() < until,
            "the watch state did not follow the stream"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, a) = s
        .send(s.req(Method::GET, "/v1/viewers/bob/watch-state/video-a", &bob))
        .await;
    assert_eq!(status, StatusCode::OK, "{a}");
    assert_eq!(a["position_ms"], 120_000, "the late event did not move bob back: {a}");
    assert_eq!(
        (a["duration_ms"].as_u64(), a["percent_watched"].as_f64()),
        (Some(600_000), Some(20.0))
    );
    assert_eq!(a["completed"], false);

    let (status, list) = s
        .send(s.req(Method::GET, "/v1/viewers/bob/continue-watching", &bob))
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let videos: Vec<&str> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["video_id"].as_str())
        .collect();
    assert_eq!(
        videos,
        ["video-a", "video-b"],
        "newest first, the finished video-c left out"
    );

    let (status, _) = s
        .send(s.req(
            Method::GET,
            "/v1/viewers/bob/continue-watching",
            &token("alice", "viewer"),
        ))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = s
        .send(s.req(Method::GET, "/v1/viewers/bob/watch-state/never-seen", &bob))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_relays_every_event_to_the_video_events_stream() {
    let (_scratch, s) = server_with_embedded_stream().await;
    let (id, _) = s.register("alice", "relayed", 10).await;
    let mut consumer = s
        .running
        .as_ref()
        .expect("running")
        .stream()
        .expect("a stream")
        .consumer("video-events", "test")
        .expect("consumer");
    let delivered = consumer.poll(10, Duration::from_secs(20)).await.expect("poll");
    assert_eq!(delivered.len(), 1, "the registration");
    assert_eq!(delivered[0].key, id);
    let event: Value = serde_json::from_slice(&delivered[0].value).expect("json");
    assert_eq!(event["event_type"], "VideoRegistered");
    assert_eq!(event["payload"]["VideoRegistered"]["title"], "relayed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beacons_and_video_events_reach_the_lake() {
    let scratch = TempDir::new();
    let mut config = settings();
    config.stream = Some(vodsource_infra::StreamUrl::Embedded(scratch.path().join("streams")));
    let mut lake = vodsource_analytics::sink::SinkSettings::new(scratch.path().join("sink"));
    lake.max_age = Duration::from_millis(200);
    config.lake = Some(lake);
    let s = server_with(config).await;
    let viewer = token("bob", "viewer");
    let now = chrono::Utc::now().timestamp_millis();
    let sent: Vec<Value> = (0..20).map(|i| beacon(now, i)).collect();
    let (status, _) = s
        .send(
            s.req(Method::POST, "/v1/playback/beacons", &viewer)
                .json(&json!({ "events": sent })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (id, _) = s.register("alice", "to the lake", 10).await;

    let root = s.dir.path().join("objects");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let qoe = vodsource_tests::lake::read(&root, "qoe_events");
        let videos = vodsource_tests::lake::read(&root, "video_events");
        let all_beacons = sent
            .iter()
            .all(|b| qoe.event_ids.get(b["event_id"].as_str().unwrap_or_default()) == Some(&1));
        if all_beacons && videos.event_ids.len() == 1 {
            assert_eq!(videos.misplaced, 0);
            assert!(videos.files[0].path.contains("video-events-"));
            let names: Vec<&str> = videos.files[0].schema.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(names[..3], ["event_id", "position", "video_id"]);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the lake has {} beacons and {} video events (video {id})",
            qoe.event_ids.len(),
            videos.event_ids.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Beacons through the given distributed stream reach the lake and the watch state.
async fn through(stream: vodsource_infra::StreamUrl, aws: vodsource_infra::aws::AwsSettings) {
    let scratch = TempDir::new();
    let mut config = settings();
    config.stream = Some(stream);
    config.aws = aws;
    let mut lake = vodsource_analytics::sink::SinkSettings::new(scratch.path().join("sink"));
    lake.max_age = Duration::from_millis(200);
    config.lake = Some(lake);
    let s = server_with(config).await;
    let viewer = token("bob", "viewer");
    let now = chrono::Utc::now().timestamp_millis();
    let sent: Vec<Value> = (0..30).map(|i| beacon(now, i)).collect();
    let (status, body) = s
        .send(
            s.req(Method::POST, "/v1/playback/beacons", &viewer)
                .json(&json!({ "events": sent })),
        )
        .await;
    assert_eq!(
        (status, body["accepted"].as_u64()),
        (StatusCode::OK, Some(30)),
        "{body}"
    );
    let (id, _) = s.register("alice", "through the stream", 10).await;

    let root = s.dir.path().join("objects");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let qoe = vodsource_tests::lake::read(&root, "qoe_events");
        let videos = vodsource_tests::lake::read(&root, "video_events");
        let (watch, _) = s
            .send(s.req(Method::GET, "/v1/viewers/bob/watch-state/video-1", &viewer))
            .await;
        let all_beacons = qoe.event_ids.len() == 30 && qoe.event_ids.values().all(|n| *n == 1);
        if all_beacons && videos.event_ids.len() == 1 && watch == StatusCode::OK {
            assert_eq!(qoe.misplaced + videos.misplaced, 0);
            assert!(sent
                .iter()
                .all(|b| qoe.event_ids.contains_key(b["event_id"].as_str().unwrap_or_default())));
            assert!(
                videos.files[0].path.contains("/video-events-"),
                "{:?}",
                videos.files[0].path
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the lake has {} beacons and {} video events (video {id}); watch state: {watch}",
            qoe.event_ids.len(),
            videos.event_ids.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_kafka_beacons_reach_the_lake_and_the_watch_state() {
    let broker = "127.0.0.1:9092";
    assert!(
        std::net::TcpStream::connect(broker).is_ok(),
        "no Kafka broker on {broker}: start one with `scripts/services.sh start kafka`"
    );
    through(
        vodsource_infra::StreamUrl::Kafka {
            brokers: broker.into(),
            partitions: 2,
            prefix: format!("t{}-", uuid::Uuid::now_v7().simple()),
        },
        vodsource_infra::aws::AwsSettings::default(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_kinesis_beacons_reach_the_lake_and_the_watch_state() {
    let endpoint = std::env::var("VODSOURCE_TEST_AWS_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5000".into());
    assert!(
        std::net::TcpStream::connect(endpoint.trim_start_matches("http://")).is_ok(),
        "no AWS emulator at {endpoint}: start one with `scripts/services.sh start aws`"
    );
    through(
        vodsource_infra::StreamUrl::Kinesis {
            shards: 2,
            lease_ttl: Duration::from_secs(5),
            prefix: format!("t{}-", uuid::Uuid::now_v7().simple()),
        },
        vodsource_infra::aws::AwsSettings::emulator(&endpoint),
    )
    .await;
}
