//! QoE beacons: judged one by one, the good ones stored on the QoE stream before the answer.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use vodsource_commands::ports::StreamConsumer;
use vodsource_qoe::QoeEvent;
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

fn beacon(now: i64, i: u64, video: &str) -> Value {
    json!({
        "event_id": uuid::Uuid::now_v7().to_string(),
        "event_type": "heartbeat",
        "sid": format!("session-{}", i % 3),
        "cid": video,
        "viewer_id": "bob",
        "ts": now - 1000,
        "position_ms": i * 1000,
        "br": 2800,
        "bl": 9000,
        "ot": "av",
    })
}

fn results(body: &Value) -> Vec<(&str, Option<&str>)> {
    body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| (r["status"].as_str().unwrap_or(""), r["error"]["field"].as_str()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_beacons_are_stored_and_the_servers_rules_reject_events_one_by_one() {
    let (_scratch, s) = server_with_embedded_stream().await;
    let video = s.published("carol", "watched").await;
    let viewer = token("bob", "viewer");
    let before = chrono::Utc::now().timestamp_millis();
    let mut from_the_future = beacon(before, 9, &video);
    from_the_future["ts"] = json!(before + 3_600_000);
    let sent = [
        beacon(before, 0, &video),
        from_the_future,
        beacon(before, 1, &video),
        beacon(before, 3, "no-such-video"),
        beacon(before, 2, &video),
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
    assert_eq!(
        results(&body),
        [
            ("accepted", None),
            ("rejected", Some("ts")),
            ("accepted", None),
            ("rejected", Some("cid")),
            ("accepted", None)
        ]
    );
    assert_eq!(body["results"][1]["event_id"], sent[1]["event_id"]);

    // A batch with an event out of the published schema is refused whole, naming it.
    let mut bad_type = beacon(before, 5, &video);
    bad_type["br"] = json!("fast");
    for (odd, field) in [(bad_type, "br"), (json!(7), "event")] {
        let (status, body) = s
            .send(
                s.req(Method::POST, "/v1/playback/beacons", &viewer)
                    .json(&json!({ "events": [beacon(before, 4, &video), odd] })),
            )
            .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("VALIDATION_FAILED")),
            "{body}"
        );
        assert_eq!(
            (
                body["error"]["details"]["index"].as_u64(),
                body["error"]["details"]["field"].as_str()
            ),
            (Some(1), Some(field))
        );
    }

    // Acknowledged means stored: the three good ones are on the stream, keyed by session;
    // nothing of the refused batches is.
    let running = s.running.as_ref().expect("running");
    let mut consumer = running
        .stream()
        .expect("a stream")
        .consumer("qoe-events", "test")
        .expect("consumer");
    let delivered = consumer.poll(100, Duration::from_millis(100)).await.expect("poll");
    assert_eq!(delivered.len(), 3);
    for d in &delivered {
        let event: QoeEvent = vodsource_qoe::wire::decode_event(&d.value).expect("a QoE event");
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
    let many: Vec<Value> = (0..501).map(|i| beacon(before, i, &video)).collect();
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

/// Beacons are about videos the caller may play: a published one; an unpublished one only
/// for its owner (or an admin); never an unknown id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beacons_name_a_video_the_caller_may_play() {
    let (_scratch, s) = server_with_embedded_stream().await;
    let public = s.published("carol", "public").await;
    let (private, _) = s.register("carol", "private", 10).await;
    s.until_catalog(&private, "listed", |_| true).await;
    let now = chrono::Utc::now().timestamp_millis();
    let send = |who: String, events: Vec<Value>| {
        s.req(Method::POST, "/v1/playback/beacons", &who)
            .json(&json!({ "events": events }))
    };
    let anonymous = |i: u64, video: &str| {
        let mut b = beacon(now, i, video);
        b.as_object_mut().expect("object").remove("viewer_id");
        b
    };
    let events = |i: u64| {
        vec![
            anonymous(i, &public),
            anonymous(i + 1, &private),
            anonymous(i + 2, "nobody-knows"),
        ]
    };
    let (status, bob) = s.send(send(token("bob", "viewer"), events(0))).await;
    assert_eq!(status, StatusCode::OK, "{bob}");
    assert_eq!(
        results(&bob),
        [("accepted", None), ("rejected", Some("cid")), ("rejected", Some("cid"))]
    );
    let (_, carol) = s.send(send(token("carol", "creator"), events(3))).await;
    assert_eq!(
        results(&carol),
        [("accepted", None), ("accepted", None), ("rejected", Some("cid"))],
        "the owner plays her own unpublished video"
    );
    let (_, root) = s.send(send(token("root", "admin"), events(6))).await;
    assert_eq!(
        results(&root),
        [("accepted", None), ("accepted", None), ("rejected", Some("cid"))]
    );
}

/// A viewer moves only their own watch state: an event without `viewer_id` is theirs, one
/// naming another viewer is refused; an admin (a trusted relay) may name anyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beacons_belong_to_the_caller() {
    let (_scratch, s) = server_with_embedded_stream().await;
    let video = s.published("carol", "watched").await;
    let now = chrono::Utc::now().timestamp_millis();
    let mut anonymous = beacon(now, 0, &video);
    anonymous.as_object_mut().expect("object").remove("viewer_id");
    let mut someone_else = beacon(now, 1, &video);
    someone_else["viewer_id"] = json!("alice");
    let (status, body) = s
        .send(
            s.req(Method::POST, "/v1/playback/beacons", &token("bob", "viewer"))
                .json(&json!({ "events": [anonymous.clone(), someone_else.clone(), beacon(now, 2, &video)] })),
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
                .json(&json!({ "events": [beacon(now, 3, &video)] })),
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
            let event: QoeEvent = vodsource_qoe::wire::decode_event(&d.value).expect("a QoE event");
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
                .json(&json!({ "events": [beacon(now, 0, "video-1")] })),
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
    let (a, b, c) = (
        s.published("carol", "a").await,
        s.published("carol", "b").await,
        s.published("carol", "c").await,
    );
    let bob = token("bob", "viewer");
    let now = chrono::Utc::now().timestamp_millis();
    let first = [
        at(now, &a, "session_start", 0, 0, Some(600_000)),
        at(now, &a, "heartbeat", 3_000, 120_000, None),
        at(now, &b, "heartbeat", 1_000, 30_000, Some(300_000)),
    ];
    let post = |events: Vec<Value>| {
        s.req(Method::POST, "/v1/playback/beacons", &bob)
            .json(&json!({ "events": events }))
    };
    let (status, body) = s.send(post(first.to_vec())).await;
    assert_eq!((status, body["accepted"].as_u64()), (StatusCode::OK, Some(3)), "{body}");
    // A late event for video a, then video c played to its end; one session, so one
    // partition: once c is seen, the late event has been folded too.
    let second = vec![
        at(now, &a, "heartbeat", 2_000, 60_000, None),
        at(now, &c, "ended", 4_000, 90_000, Some(90_000)),
    ];
    let (status, _) = s.send(post(second)).await;
    assert_eq!(status, StatusCode::OK);

    let until = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _) = s
            .send(s.req(Method::GET, &format!("/v1/viewers/bob/watch-state/{c}"), &bob))
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
    let (status, state) = s
        .send(s.req(Method::GET, &format!("/v1/viewers/bob/watch-state/{a}"), &bob))
        .await;
    assert_eq!(status, StatusCode::OK, "{state}");
    assert_eq!(
        state["position_ms"], 120_000,
        "the late event did not move bob back: {state}"
    );
    assert_eq!(
        (state["duration_ms"].as_u64(), state["percent_watched"].as_f64()),
        (Some(600_000), Some(20.0))
    );
    assert_eq!(state["completed"], false);

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
        [a.as_str(), b.as_str()],
        "newest first, the finished c left out"
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
    let mut lake = vodsource_lake::sink::SinkSettings::new(scratch.path().join("sink"));
    lake.max_age = Duration::from_millis(200);
    config.lake = Some(lake);
    let s = server_with(config).await;
    let video = s.published("carol", "watched").await;
    let viewer = token("bob", "viewer");
    let now = chrono::Utc::now().timestamp_millis();
    let sent: Vec<Value> = (0..20).map(|i| beacon(now, i, &video)).collect();
    // The same batch twice, as a player does when the first answer is lost: one row each.
    for _ in 0..2 {
        let (status, body) = s
            .send(
                s.req(Method::POST, "/v1/playback/beacons", &viewer)
                    .json(&json!({ "events": sent })),
            )
            .await;
        assert_eq!(
            (status, body["accepted"].as_u64()),
            (StatusCode::OK, Some(20)),
            "{body}"
        );
    }
    let (id, _) = s.register("alice", "to the lake", 10).await;
    let events = s.stores.log.head().await.expect("head") as usize;

    let root = s.dir.path().join("objects");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let qoe = vodsource_tests::lake::read(&root, "qoe_events");
        let videos = vodsource_tests::lake::read(&root, "video_events");
        let all_beacons = sent
            .iter()
            .all(|b| qoe.event_ids.contains_key(b["event_id"].as_str().unwrap_or_default()));
        if all_beacons && videos.event_ids.len() == events {
            let repeated: Vec<_> = qoe.event_ids.iter().filter(|(_, n)| **n != 1).collect();
            assert!(repeated.is_empty(), "one row per event id: {repeated:?}");
            assert_eq!(qoe.event_ids.len(), 20);
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

#[cfg(feature = "distributed")]
/// Beacons through the given distributed stream reach the lake and the watch state.
async fn through(stream: vodsource_infra::StreamUrl, aws: vodsource_infra::aws::AwsSettings) {
    let scratch = TempDir::new();
    let mut config = settings();
    config.stream = Some(stream);
    config.aws = aws;
    let mut lake = vodsource_lake::sink::SinkSettings::new(scratch.path().join("sink"));
    lake.max_age = Duration::from_millis(200);
    config.lake = Some(lake);
    let s = server_with(config).await;
    let video = s.published("carol", "watched").await;
    let viewer = token("bob", "viewer");
    let now = chrono::Utc::now().timestamp_millis();
    let sent: Vec<Value> = (0..30).map(|i| beacon(now, i, &video)).collect();
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
    let events = s.stores.log.head().await.expect("head") as usize;

    let root = s.dir.path().join("objects");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let qoe = vodsource_tests::lake::read(&root, "qoe_events");
        let videos = vodsource_tests::lake::read(&root, "video_events");
        let (watch, _) = s
            .send(s.req(Method::GET, &format!("/v1/viewers/bob/watch-state/{video}"), &viewer))
            .await;
        let all_beacons = qoe.event_ids.len() == 30 && qoe.event_ids.values().all(|n| *n == 1);
        if all_beacons && videos.event_ids.len() == events && watch == StatusCode::OK {
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

#[cfg(feature = "distributed")]
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

#[cfg(feature = "distributed")]
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
