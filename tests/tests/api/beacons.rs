//! QoE beacons: judged one by one, the good ones stored on the QoE stream before the answer.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use vodsource_analytics::QoeEvent;
use vodsource_commands::ports::StreamConsumer;
use vodsource_tests::TempDir;

use crate::harness::{server, server_with, settings, token};

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
    let scratch = TempDir::new();
    let mut config = settings();
    config.stream_dir = Some(scratch.path().join("streams"));
    let s = server_with(config).await;
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
        let event: QoeEvent = serde_json::from_slice(&d.value).expect("a QoE event");
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
