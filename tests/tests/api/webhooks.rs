//! Webhooks end to end: endpoints created over the API, the dispatcher sending the public
//! events of real video lifecycles to a receiver that is a separate Python process checking
//! every signature with Python's own `hmac` (`tests/src/webhook_receiver.py`).

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use vodsource_commands::ports::{Clock, ManualClock};

use crate::harness::{code, parts, server_with, server_with_clock, settings, token, Server};

/// The stand-in public address (`scripts/services.sh start origins`).
const PUBLIC: &str = "203.0.113.7";

/// The Python receiver.
struct Receiver {
    child: Child,
    base: String,
    client: reqwest::Client,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Receiver {
    /// A receiver listening on `host`.
    fn start(host: &str) -> Self {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/src/webhook_receiver.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(host)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs (scripts/services.sh start python)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the receiver's port");
        let port: u16 = line.trim().parse().unwrap_or_else(|_| {
            panic!("the receiver printed {line:?}, not a port (run scripts/services.sh start origins)")
        });
        Self {
            child,
            base: format!("http://{host}:{port}"),
            client: reqwest::Client::new(),
        }
    }

    fn url(&self, name: &str) -> String {
        format!("{}/hook/{name}", self.base)
    }

    async fn control(&self, name: &str, control: Value) {
        let response = self
            .client
            .post(format!("{}/control/{name}", self.base))
            .json(&control)
            .send()
            .await
            .expect("control");
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
    }

    /// Checks every body from now on against the `WebhookEvent` schema of `s`'s document.
    async fn schema_of(&self, s: &Server) {
        let document: Value = s
            .client
            .get(s.url("/openapi.json"))
            .send()
            .await
            .expect("doc")
            .json()
            .await
            .expect("json");
        let response = self
            .client
            .post(format!("{}/schema", self.base))
            .json(&document)
            .send()
            .await
            .expect("schema");
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
    }

    /// Every delivery seen, in arrival order.
    async fn log(&self) -> Vec<Value> {
        let response = self.client.get(format!("{}/log", self.base)).send().await.expect("log");
        response.json().await.expect("log json")
    }

    /// The deliveries to `name`.
    async fn log_of(&self, name: &str) -> Vec<Value> {
        self.log().await.into_iter().filter(|d| d["endpoint"] == name).collect()
    }

    /// Polls the log until `done` holds of it.
    async fn until(&self, what: &str, within: Duration, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let log = self.log().await;
            if done(&log) {
                return log;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; the receiver saw {} deliveries",
                log.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Settings with webhooks to plain http, `allow` admitted, and retries in milliseconds.
fn webhook_settings(allow: &[&str]) -> vodsource_api::settings::Settings {
    let mut s = settings();
    s.send = vodsource_infra::egress::SendSettings {
        policy: vodsource_infra::egress::AddressPolicy {
            allow: allow.iter().map(|a| a.parse().expect("cidr")).collect(),
        },
        allow_http: true,
        ..Default::default()
    };
    s.dispatch = vodsource_app::webhooks::dispatch::DispatchConfig {
        backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(300),
        refresh: Duration::from_millis(50),
        timeout: Duration::from_secs(5),
        ..Default::default()
    };
    s
}

/// Creates an endpoint as `who`; returns the answer.
async fn create(s: &Server, who: &str, body: Value) -> (StatusCode, Value) {
    s.send(s.req(Method::POST, "/v1/webhooks", who).json(&body)).await
}

/// Creates an endpoint named `name` at `receiver` and gives the receiver its secret.
async fn endpoint(s: &Server, who: &str, receiver: &Receiver, name: &str, extra: Value) -> Value {
    let mut body = json!({ "url": receiver.url(name) });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    let (status, created) = create(s, who, body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let secret = created["secret"].as_str().expect("secret");
    assert!(secret.starts_with("whsec_"), "{created}");
    receiver.control(name, json!({ "secret": secret })).await;
    created
}

/// One video's lifecycle: registered, uploaded, encoded, published, retitled, deleted.
/// Returns its id.
async fn lifecycle(s: &Server, owner: &str, n: usize) -> String {
    let id = s.published(owner, &format!("video {n}")).await;
    let who = token(owner, "creator");
    let (status, body) = s
        .send(
            s.req(Method::PATCH, &format!("/v1/videos/{id}"), &who)
                .json(&json!({ "title": format!("renamed {n}") })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = s.send(s.req(Method::DELETE, &format!("/v1/videos/{id}"), &who)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    id
}

/// The public types a lifecycle makes, in order.
const LIFECYCLE: [&str; 6] = [
    "video.created",
    "video.upload.completed",
    "video.ready",
    "video.published",
    "video.updated",
    "video.deleted",
];

/// The successful deliveries in `log` (answered 200), grouped by video in arrival order.
fn delivered_by_video(log: &[Value]) -> HashMap<String, Vec<Value>> {
    let mut by_video: HashMap<String, Vec<Value>> = HashMap::new();
    for delivery in log.iter().filter(|d| d["status"] == 200) {
        let video = delivery["event"]["video_id"].as_str().expect("video_id").to_owned();
        by_video.entry(video).or_default().push(delivery["event"].clone());
    }
    by_video
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap_or_default()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_lifecycles_reach_each_endpoint_signed_in_order_and_only_what_it_may_see() {
    let receiver = Receiver::start("127.0.0.1");
    let s = server_with(webhook_settings(&["127.0.0.1/32"])).await;
    // The receiver checks every body against the schemas the API's document publishes.
    receiver.schema_of(&s).await;
    let admin = token("root", "admin");
    endpoint(&s, &admin, &receiver, "all", json!({ "description": "every video" })).await;
    endpoint(&s, &token("alice", "creator"), &receiver, "alice", json!({})).await;
    endpoint(
        &s,
        &admin,
        &receiver,
        "ready",
        json!({ "event_types": ["video.ready", "video.deleted"] }),
    )
    .await;
    endpoint(&s, &admin, &receiver, "off", json!({ "enabled": false })).await;

    const VIDEOS: usize = 200;
    let owners: HashMap<String, &str> = futures::stream::iter(0..VIDEOS)
        .map(|n| {
            let owner = if n % 2 == 0 { "alice" } else { "bob" };
            let s = &s;
            async move { (lifecycle(s, owner, n).await, owner) }
        })
        .buffer_unordered(8)
        .collect()
        .await;

    let expected_all = VIDEOS * LIFECYCLE.len();
    let expected_alice = VIDEOS / 2 * LIFECYCLE.len();
    let log = receiver
        .until("every event at every endpoint", Duration::from_secs(60), |log| {
            let of = |name: &str| log.iter().filter(|d| d["endpoint"] == name).count();
            of("all") >= expected_all && of("alice") >= expected_alice && of("ready") >= VIDEOS * 2
        })
        .await;
    // Whatever was still on its way to "off" would have arrived with the rest.
    assert!(
        log.iter().all(|d| d["endpoint"] != "off"),
        "a disabled endpoint was sent something"
    );
    for (name, per_video) in [
        ("all", LIFECYCLE.to_vec()),
        ("alice", LIFECYCLE.to_vec()),
        ("ready", vec!["video.ready", "video.deleted"]),
    ] {
        let deliveries: Vec<Value> = log.iter().filter(|d| d["endpoint"] == name).cloned().collect();
        for delivery in &deliveries {
            assert_eq!(delivery["status"], 200, "{name}: {delivery}");
            assert!(
                delivery["problem"].is_null(),
                "{name}: Python's hmac refused {delivery}"
            );
            assert!(
                delivery["schema_problem"].is_null(),
                "{name}: not as documented: {delivery}"
            );
            assert_eq!(delivery["event"]["id"], delivery["event_id"], "{delivery}");
            assert_eq!(delivery["event"]["type"], delivery["event_type"], "{delivery}");
            assert_eq!(delivery["event"]["api_version"], "2026-12-05", "{delivery}");
            assert_eq!(delivery["attempt"], "1", "nothing failed, nothing retried: {delivery}");
        }
        let ids: HashSet<&str> = deliveries.iter().filter_map(|d| d["event_id"].as_str()).collect();
        assert_eq!(ids.len(), deliveries.len(), "{name}: each event once");
        let by_video = delivered_by_video(&deliveries);
        let expected_videos = if name == "alice" { VIDEOS / 2 } else { VIDEOS };
        assert_eq!(by_video.len(), expected_videos, "{name}");
        for (video, events) in &by_video {
            assert_eq!(types(events), per_video, "{name}: {video}'s events in log order");
            let positions: Vec<u64> = events.iter().filter_map(|e| e["position"].as_u64()).collect();
            assert!(positions.windows(2).all(|w| w[0] < w[1]), "{name}: {positions:?}");
            let owner = owners[video.as_str()];
            if name == "alice" {
                assert_eq!(owner, "alice", "alice's endpoint heard of {owner}'s video {video}");
            }
            if name != "ready" {
                let created = &events[0]["data"];
                assert_eq!(created["owner"], owner, "{created}");
                assert_eq!(created["source"], "upload", "{created}");
                assert!(created.get("source_url").is_none(), "{created}");
                let n = created["title"]
                    .as_str()
                    .and_then(|t| t.strip_prefix("video "))
                    .expect("title");
                assert_eq!(events[4]["data"], json!({ "title": format!("renamed {n}") }));
                assert_eq!(events[1]["data"]["size_bytes"], 38);
            }
        }
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_receiver_failing_for_a_while_and_a_restart_lose_nothing_and_keep_each_videos_order() {
    let receiver = Receiver::start("127.0.0.1");
    let settings = webhook_settings(&["127.0.0.1/32"]);
    let mut s = server_with(settings.clone()).await;
    endpoint(&s, &token("root", "admin"), &receiver, "flaky", json!({})).await;
    let mut videos = Vec::new();
    for n in 0..5 {
        videos.push(lifecycle(&s, "alice", n).await);
    }
    receiver
        .until("the first videos delivered", Duration::from_secs(30), |log| {
            log.iter().filter(|d| d["status"] == 200).count() >= 5 * LIFECYCLE.len()
        })
        .await;
    // The receiver fails every request from now on.
    receiver.control("flaky", json!({ "fail": true })).await;
    for n in 5..15 {
        videos.push(lifecycle(&s, "alice", n).await);
    }
    receiver
        .until(
            "each failing video's first event tried three times",
            Duration::from_secs(30),
            |log| {
                videos[5..].iter().all(|id| {
                    log.iter()
                        .filter(|d| d["status"] == 500 && d["event"]["video_id"] == id.as_str())
                        .count()
                        >= 3
                })
            },
        )
        .await;
    // A replacement process takes over with the events still undelivered.
    s.restart(settings).await;
    let before = receiver.log().await.len();
    receiver
        .until("retries from the new process", Duration::from_secs(30), |log| {
            log.len() >= before + 20
        })
        .await;
    receiver.control("flaky", json!({ "fail": false })).await;
    let log = receiver
        .until("every event delivered", Duration::from_secs(60), |log| {
            let delivered: HashSet<&str> = log
                .iter()
                .filter(|d| d["status"] == 200)
                .filter_map(|d| d["event_id"].as_str())
                .collect();
            delivered.len() >= videos.len() * LIFECYCLE.len()
        })
        .await;
    let by_video = delivered_by_video(&log);
    for id in &videos {
        let events = &by_video[id.as_str()];
        let mut firsts = Vec::new();
        for event in events {
            if !firsts.iter().any(|e: &&Value| e["id"] == event["id"]) {
                firsts.push(event);
            }
        }
        assert_eq!(
            firsts
                .iter()
                .map(|e| e["type"].as_str().unwrap_or_default())
                .collect::<Vec<_>>(),
            LIFECYCLE,
            "{id}: every event delivered, first deliveries in log order"
        );
    }
    // A duplicate is the same event: the same id carries the same body.
    let mut bodies: HashMap<String, Value> = HashMap::new();
    for delivery in &log {
        let id = delivery["event_id"].as_str().expect("event id").to_owned();
        let event = delivery["event"].clone();
        let first = bodies.entry(id).or_insert_with(|| event.clone());
        assert_eq!(*first, event, "one id, one event");
        assert!(delivery["problem"].is_null(), "{delivery}");
    }
    // Nothing of a video was sent before its previous event was delivered.
    for id in &videos {
        let mine: Vec<&Value> = log.iter().filter(|d| d["event"]["video_id"] == id.as_str()).collect();
        let mut positions: Vec<u64> = mine.iter().filter_map(|d| d["event"]["position"].as_u64()).collect();
        positions.sort_unstable();
        positions.dedup();
        let mut delivered = HashSet::new();
        for delivery in mine {
            let position = delivery["event"]["position"].as_u64().expect("position");
            for earlier in positions.iter().filter(|p| **p < position) {
                assert!(
                    delivered.contains(earlier),
                    "{id}: the event at {position} was sent before the one at {earlier} was delivered"
                );
            }
            if delivery["status"] == 200 {
                delivered.insert(position);
            }
        }
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_are_their_owners_and_secrets_rotate_with_an_overlap() {
    let receiver = Receiver::start("127.0.0.1");
    let s = server_with(webhook_settings(&["127.0.0.1/32"])).await;
    receiver.schema_of(&s).await;
    let alice = token("alice", "creator");
    let bob = token("bob", "creator");
    let created = endpoint(
        &s,
        &alice,
        &receiver,
        "rotating",
        json!({ "event_types": ["video.created"] }),
    )
    .await;
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(created["scope"], "owner");
    assert_eq!(created["owner"], "alice");
    assert_eq!(created["secret_version"], 1);
    let path = format!("/v1/webhooks/{id}");

    // Another creator does not see it, cannot change or delete it; a viewer cannot create.
    for (method, body) in [
        (Method::GET, None),
        (Method::PATCH, Some(json!({ "enabled": false }))),
        (Method::DELETE, None),
    ] {
        let mut request = s.req(method.clone(), &path, &bob);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let (status, answer) = s.send(request).await;
        assert_eq!(
            (status, code(&answer)),
            (StatusCode::NOT_FOUND, "WEBHOOK_NOT_FOUND"),
            "{method}: {answer}"
        );
    }
    let (status, list) = s.send(s.req(Method::GET, "/v1/webhooks", &bob)).await;
    assert_eq!(
        (status, list["items"].as_array().map(Vec::len)),
        (StatusCode::OK, Some(0)),
        "{list}"
    );
    let (status, answer) = create(&s, &token("eve", "viewer"), json!({ "url": receiver.url("x") })).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    // The admin and the owner see it, without its secret.
    for who in [&alice, &token("root", "admin")] {
        let (status, list) = s.send(s.req(Method::GET, "/v1/webhooks", who)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(list["items"][0]["id"], id.as_str(), "{list}");
        assert!(list["items"][0].get("secret").is_none(), "{list}");
        let (status, one) = s.send(s.req(Method::GET, &path, who)).await;
        assert_eq!(status, StatusCode::OK);
        assert!(one.get("secret").is_none(), "{one}");
    }

    // A test event: sent now, signed, of the documented shape.
    let (status, tested) = s.send(s.req(Method::POST, &format!("{path}/test"), &alice)).await;
    assert_eq!(status, StatusCode::OK, "{tested}");
    assert_eq!(
        (&tested["delivered"], &tested["status"]),
        (&json!(true), &json!(200)),
        "{tested}"
    );
    assert_eq!(tested["event"]["type"], "webhook.test");
    assert_eq!(tested["event"]["data"], json!({ "endpoint_id": id }));
    let log = receiver.log_of("rotating").await;
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0]["event"], tested["event"]);
    assert!(
        log[0]["problem"].is_null() && log[0]["schema_problem"].is_null(),
        "{}",
        log[0]
    );
    let (status, answer) = s.send(s.req(Method::POST, &format!("{path}/test"), &bob)).await;
    assert_eq!(
        (status, code(&answer)),
        (StatusCode::NOT_FOUND, "WEBHOOK_NOT_FOUND"),
        "{answer}"
    );

    // Rotated with an overlap: the receiver still holding the old secret verifies.
    let (status, rotated) = s
        .send(
            s.req(Method::POST, &format!("{path}/rotate-secret"), &alice)
                .json(&json!({ "overlap_seconds": 3600 })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    assert_eq!(rotated["secret_version"], 2);
    let new_secret = rotated["secret"].as_str().expect("secret").to_owned();
    assert_ne!(new_secret, created["secret"].as_str().expect("old"));
    s.register("alice", "during the overlap", 10).await;
    let log = receiver
        .until("a delivery during the overlap", Duration::from_secs(20), |log| {
            log.len() == 2
        })
        .await;
    assert_eq!(
        (&log[1]["status"], &log[1]["problem"]),
        (&json!(200), &Value::Null),
        "{}",
        log[1]
    );
    assert_eq!(log[1]["event"]["type"], "video.created", "{}", log[1]);

    // Rotated with no overlap: only the newest secret signs; the old one fails…
    let (status, rotated) = s
        .send(
            s.req(Method::POST, &format!("{path}/rotate-secret"), &alice)
                .json(&json!({ "overlap_seconds": 0 })),
        )
        .await;
    assert_eq!(
        (status, &rotated["secret_version"]),
        (StatusCode::OK, &json!(3)),
        "{rotated}"
    );
    s.register("alice", "after the overlap", 10).await;
    let log = receiver
        .until("a refused delivery", Duration::from_secs(20), |log| {
            log.iter().any(|d| d["status"] == 400)
        })
        .await;
    let refused = log.iter().find(|d| d["status"] == 400).expect("refused");
    assert_eq!(refused["problem"], "no signature matches", "{refused}");
    // …and the newest verifies, on the retry.
    receiver
        .control(
            "rotating",
            json!({ "secret": rotated["secret"].as_str().expect("secret") }),
        )
        .await;
    receiver
        .until(
            "the retry verified with the newest secret",
            Duration::from_secs(20),
            |log| log.iter().filter(|d| d["status"] == 200).count() == 3,
        )
        .await;

    // Deleted: gone for its owner too.
    let (status, _) = s.send(s.req(Method::DELETE, &path, &alice)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, answer) = s.send(s.req(Method::GET, &path, &alice)).await;
    assert_eq!((status, code(&answer)), (StatusCode::NOT_FOUND, "WEBHOOK_NOT_FOUND"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_answering_500_for_two_minutes_of_the_clock_then_recovering_loses_nothing() {
    let receiver = Receiver::start("127.0.0.1");
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let s = server_with_clock(clocked_settings(), clock.clone()).await;
    let admin = token("root", "admin");
    let id = endpoint(&s, &admin, &receiver, "down", json!({})).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    receiver.control("down", json!({ "fail": true })).await;
    let videos = retitled_videos(&s, 8).await;
    // Each video's first event is tried at once; its update waits behind it.
    settled(&s, &id, &clock, |d| d.len() == videos.len()).await;
    // Two minutes of the dispatcher's clock, five seconds at a time, each retry that falls
    // due made before the clock moves on.
    for _ in 0..24 {
        clock.advance(chrono::Duration::seconds(5));
        settled(&s, &id, &clock, |d| d.len() == videos.len()).await;
    }
    let failing = receiver.log_of("down").await;
    assert!(failing.iter().all(|d| d["status"] == 500), "only failures so far");
    for video in &videos {
        let attempts = failing
            .iter()
            .filter(|d| d["event"]["video_id"] == video.as_str())
            .count();
        // Backoff 5 s doubling, up to half taken off: retries by 5-7.5, 15-22.5, 35-52.5,
        // 75-112.5 s, the next past 2 minutes but for the jitter.
        assert!((5..=7).contains(&attempts), "{video}: {attempts} attempts in 2 minutes");
        assert!(
            failing
                .iter()
                .all(|d| d["event"]["video_id"] != video.as_str() || d["event_type"] == "video.created"),
            "{video}: its update was sent before its creation was delivered"
        );
    }
    // The receiver recovers (its clock where the dispatcher's is going); the next retries,
    // within the longest backoff, deliver it all.
    let ahead = (clock.now() + chrono::Duration::minutes(5) - chrono::Utc::now()).num_seconds();
    receiver
        .control("down", json!({ "fail": false, "clock_offset": ahead }))
        .await;
    clock.advance(chrono::Duration::minutes(5));
    let log = created_then_updated(&receiver, &videos).await;
    for delivery in log.iter().filter(|d| d["status"] == 200) {
        assert!(delivery["problem"].is_null(), "{delivery}");
    }
    let first_ids: HashSet<&str> = log
        .iter()
        .filter(|d| d["event_type"] == "video.created")
        .filter_map(|d| d["event_id"].as_str())
        .collect();
    assert_eq!(first_ids.len(), videos.len(), "every retry carries its event's id");
    // The delivery log says the same.
    let page = deliveries_until(&s, &id, &admin, |items| {
        items.len() == videos.len() * 2 && items.iter().all(|d| d["state"] == "delivered")
    })
    .await;
    for item in page["items"].as_array().into_iter().flatten() {
        assert_eq!(item["status_code"], 200, "{item}");
        let attempts = item["attempts"].as_u64().expect("attempts");
        if item["event_type"] == "video.created" {
            assert!(attempts >= 6, "{item}");
        } else {
            assert_eq!(attempts, 1, "{item}");
        }
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_failing_for_a_day_is_parked_visible_and_re_driven_by_an_admin() {
    let receiver = Receiver::start("127.0.0.1");
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let s = server_with_clock(clocked_settings(), clock.clone()).await;
    let admin = token("root", "admin");
    let id = endpoint(&s, &token("alice", "creator"), &receiver, "dead", json!({})).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    receiver.control("dead", json!({ "fail": true })).await;
    // One video two hours before two others: its day of failures ends first.
    let mut videos = retitled_videos(&s, 1).await;
    settled(&s, &id, &clock, |d| d.len() == 1).await;
    for _ in 0..2 {
        clock.advance(chrono::Duration::hours(1));
        settled(&s, &id, &clock, |d| d.len() == 1).await;
    }
    videos.extend(retitled_videos(&s, 2).await);
    settled(&s, &id, &clock, |d| d.len() == 3).await;
    // A day of failures, an hour at a time (the backoff's cap).
    let mut hours = 2;
    let failing = loop {
        clock.advance(chrono::Duration::hours(1));
        hours += 1;
        let (_, endpoint) = s.send(s.req(Method::GET, &format!("/v1/webhooks/{id}"), &admin)).await;
        if endpoint["state"] == "failing" {
            break endpoint;
        }
        assert!(hours <= 27, "not failing after {hours} h: {endpoint}");
        settled(&s, &id, &clock, |d| d.len() == 3).await;
    };
    assert!(hours >= 25, "failing after {hours} h, before the retry period");
    let reason = &failing["failing"];
    assert_eq!(reason["reason"], "answered 500", "{failing}");
    assert!(reason["attempts"].as_u64().expect("attempts") >= 24, "{failing}");
    // The delivery log: the event that failed, the others parked, none retrying.
    let page = deliveries_until(&s, &id, &admin, |items| items.iter().all(|d| d["state"] != "retrying")).await;
    let items = page["items"].as_array().expect("items");
    let states: Vec<&str> = items.iter().filter_map(|d| d["state"].as_str()).collect();
    assert_eq!(states.iter().filter(|s| **s == "failed").count(), 1, "{page}");
    assert_eq!(states.iter().filter(|s| **s == "parked").count(), 2, "{page}");
    let failed = items.iter().find(|d| d["state"] == "failed").expect("failed");
    assert_eq!(failed["event_id"], reason["event_id"]);
    assert_eq!(
        failed["video_id"],
        videos[0].as_str(),
        "the first video's day ended first"
    );
    assert_eq!(failed["status_code"], 500);
    // Parked: nothing more is sent, whatever happens and however long.
    let seen = receiver.log_of("dead").await.len();
    videos.extend(retitled_videos(&s, 1).await);
    clock.advance(chrono::Duration::hours(2));
    let text = metrics(&s).await;
    assert!(
        text.contains("vodsource_webhook_deliveries_total{outcome=\"parked\"} 1"),
        "{text}"
    );
    assert_eq!(
        receiver.log_of("dead").await.len(),
        seen,
        "a parked endpoint was sent to"
    );
    // Re-driving: not another creator's, not when nothing is parked.
    let redrive = format!("/v1/webhooks/{id}/redrive");
    let (status, _) = s.send(s.req(Method::POST, &redrive, &token("bob", "creator"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let offset = (clock.now() - chrono::Utc::now()).num_seconds();
    receiver
        .control("dead", json!({ "fail": false, "clock_offset": offset }))
        .await;
    let (status, body) = s.send(s.req(Method::POST, &redrive, &admin)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "enabled", "{body}");
    let (status, body) = s.send(s.req(Method::POST, &redrive, &admin)).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "WEBHOOK_NOT_FAILING"),
        "{body}"
    );
    // Everything parked, and what came meanwhile, in order per video.
    let log = created_then_updated(&receiver, &videos).await;
    assert!(
        log.iter()
            .filter(|d| d["status"] == 200)
            .all(|d| d["problem"].is_null()),
        "{log:?}"
    );
    let page = deliveries_until(&s, &id, &admin, |items| {
        items.len() == videos.len() * 2 && items.iter().all(|d| d["state"] == "delivered")
    })
    .await;
    assert!(page["next_before"].is_null(), "{page}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoints_rate_limit_spaces_a_burst_out_and_its_log_keeps_the_newest() {
    let receiver = Receiver::start("127.0.0.1");
    let mut settings = webhook_settings(&["127.0.0.1/32"]);
    settings.dispatch.retained = 20;
    let s = server_with(settings).await;
    let admin = token("root", "admin");
    let videos = retitled_videos(&s, 15).await;
    let created = endpoint(&s, &admin, &receiver, "paced", json!({ "max_per_second": 20 })).await;
    assert_eq!(created["max_per_second"], 20, "{created}");
    let id = created["id"].as_str().expect("id");
    // The history at once: 30 events of 15 videos, up to 16 in flight.
    let (status, body) = s
        .send(
            s.req(Method::POST, &format!("/v1/webhooks/{id}/replay"), &admin)
                .json(&json!({ "from_position": 0 })),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let log = receiver
        .until("the history delivered", Duration::from_secs(30), |log| {
            log.iter().filter(|d| d["status"] == 200).count() >= videos.len() * 2
        })
        .await;
    let mut times: Vec<f64> = log.iter().filter_map(|d| d["at"].as_f64()).collect();
    times.sort_by(f64::total_cmp);
    for (i, t) in times.iter().enumerate() {
        let within = times[i..].iter().take_while(|u| **u < t + 1.0).count();
        assert!(within <= 21, "{within} requests within a second of {t}: {times:?}");
    }
    let span = times.last().copied().unwrap_or_default() - times.first().copied().unwrap_or_default();
    assert!(span >= 1.4, "30 requests at 20/s took {span:.2} s");
    // The delivery log keeps the newest 20 (as configured here), in two pages.
    let mut positions: Vec<u64> = log.iter().filter_map(|d| d["event"]["position"].as_u64()).collect();
    positions.sort_unstable();
    positions.dedup();
    let newest: Vec<u64> = positions.iter().rev().take(20).copied().collect();
    let listed_positions =
        |items: &[Value]| -> Vec<u64> { items.iter().filter_map(|d| d["position"].as_u64()).collect() };
    let first = deliveries_until(&s, id, &admin, |items| {
        listed_positions(items) == newest && items.iter().all(|d| d["state"] == "delivered")
    })
    .await;
    let (status, half) = s
        .send(s.req(Method::GET, &format!("/v1/webhooks/{id}/deliveries?limit=10"), &admin))
        .await;
    assert_eq!(status, StatusCode::OK, "{half}");
    let before = half["next_before"].as_u64().expect("a next page");
    let rest = deliveries(&s, id, &admin, &format!("&before={before}")).await;
    assert!(rest["next_before"].is_null(), "{rest}");
    let paged: Vec<u64> = half["items"]
        .as_array()
        .into_iter()
        .chain(rest["items"].as_array())
        .flatten()
        .filter_map(|d| d["position"].as_u64())
        .collect();
    let listed: Vec<u64> = first["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["position"].as_u64())
        .collect();
    assert_eq!(listed, newest, "the newest 20, newest first");
    assert_eq!(paged, newest, "two pages make the same list");
    // Another creator sees no log of it.
    let (status, _) = s
        .send(s.req(
            Method::GET,
            &format!("/v1/webhooks/{id}/deliveries"),
            &token("bob", "creator"),
        ))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    s.stop().await;
}

/// Waits until each of `videos` was delivered its creation then its update (the events of
/// [`retitled_videos`]); returns the receiver's log.
async fn created_then_updated(receiver: &Receiver, videos: &[String]) -> Vec<Value> {
    let log = receiver
        .until("every event delivered", Duration::from_secs(30), |log| {
            log.iter().filter(|d| d["status"] == 200).count() >= videos.len() * 2
        })
        .await;
    let by_video = delivered_by_video(&log);
    for video in videos {
        assert_eq!(
            types(&by_video[video.as_str()]),
            ["video.created", "video.updated"],
            "{video}"
        );
    }
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_with_another_signing_secret_signs_nothing_and_says_why() {
    let receiver = Receiver::start("127.0.0.1");
    let settings = webhook_settings(&["127.0.0.1/32"]);
    let mut s = server_with(settings.clone()).await;
    let admin = token("root", "admin");
    let id = endpoint(&s, &admin, &receiver, "keyed", json!({})).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    // The same stores, another signing secret: a process started without the shared
    // VODSOURCE_SIGNING_SECRET.
    let mut other = settings.clone();
    other.signing_secret = vec![9; 32];
    s.restart(other).await;
    s.register("alice", "while mismatched", 10).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = metrics(&s).await;
        if !text.contains("vodsource_webhook_key_mismatches_total 0") {
            assert!(text.contains("vodsource_webhook_key_mismatches_total"), "{text}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the runner never refused: {text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        receiver.log_of("keyed").await.is_empty(),
        "a request signed with another secret was sent"
    );
    for path in ["rotate-secret", "test"] {
        let (status, body) = s
            .send(
                s.req(Method::POST, &format!("/v1/webhooks/{id}/{path}"), &admin)
                    .json(&json!({})),
            )
            .await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::CONFLICT, "WEBHOOK_KEY_MISMATCH"),
            "{path}: {body}"
        );
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("VODSOURCE_SIGNING_SECRET"), "{message}");
    }
    // Mended: the event arrives, signed with the secret the receiver holds.
    s.restart(settings).await;
    let log = receiver
        .until("the event delivered", Duration::from_secs(20), |log| {
            log.iter().any(|d| d["status"] == 200)
        })
        .await;
    assert!(log.iter().all(|d| d["problem"].is_null()), "{log:?}");
    s.stop().await;
}

/// The server's metrics, as an admin reads them.
async fn metrics(s: &Server) -> String {
    s.client
        .get(s.url("/metrics"))
        .bearer_auth(token("root", "admin"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

/// Settings for a dispatcher on a test's clock: the real retry schedule (5 s doubling to
/// 1 h, for 24 h), the clock looked at every 10 ms.
fn clocked_settings() -> vodsource_api::settings::Settings {
    let mut s = webhook_settings(&["127.0.0.1/32"]);
    s.dispatch = vodsource_app::webhooks::dispatch::DispatchConfig {
        refresh: Duration::from_millis(50),
        timeout: Duration::from_secs(5),
        clock_tick: Duration::from_millis(10),
        ..Default::default()
    };
    s
}

/// Registers `n` videos of alice's and retitles each: two events per video.
async fn retitled_videos(s: &Server, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let (id, _) = s.register("alice", &format!("video {i}"), 10).await;
        let (status, body) = s
            .send(
                s.req(Method::PATCH, &format!("/v1/videos/{id}"), &token("alice", "creator"))
                    .json(&json!({ "title": format!("renamed {i}") })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        ids.push(id);
    }
    ids
}

/// A page of endpoint `id`'s delivery log.
async fn deliveries(s: &Server, id: &str, who: &str, query: &str) -> Value {
    let (status, page) = s
        .send(s.req(
            Method::GET,
            &format!("/v1/webhooks/{id}/deliveries?limit=100{query}"),
            who,
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page
}

/// Polls endpoint `id`'s delivery log until `done` holds of its newest 100 items.
async fn deliveries_until(s: &Server, id: &str, who: &str, done: impl Fn(&[Value]) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let page = deliveries(s, id, who, "").await;
        if done(page["items"].as_array().map_or(&[][..], Vec::as_slice)) {
            return page;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out; the log: {page}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until endpoint `id`'s dispatcher has made every attempt due by `clock`: each
/// retrying delivery in its log is next tried after the clock's time (and `ready` holds).
async fn settled(s: &Server, id: &str, clock: &ManualClock, ready: impl Fn(&[Value]) -> bool) {
    let now = clock.now();
    deliveries_until(s, id, &token("root", "admin"), |items| {
        ready(items)
            && items.iter().all(|d| {
                d["state"] != "retrying"
                    || d["next_attempt_at"]
                        .as_str()
                        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                        .is_some_and(|t| t > now)
            })
    })
    .await;
}

/// A `vodsource serve` process over `data`, its API on a port of its own.
struct Process {
    child: Child,
    base: String,
}

impl Process {
    fn start(data: &std::path::Path) -> Self {
        let target = std::env::var("CARGO_TARGET_DIR")
            .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../target").to_owned());
        let binary = std::path::Path::new(&target).join("debug/vodsource");
        assert!(
            binary.exists(),
            "{} is not built: cargo build --locked --bin vodsource (the test command builds it)",
            binary.display()
        );
        let log = data.join(format!("server-{}.log", uuid::Uuid::now_v7().simple()));
        let out = std::fs::File::create(&log).expect("log file");
        let child = Command::new(&binary)
            .args(["--data-dir"])
            .arg(data)
            .args(["--log-json", "serve", "--listen", "127.0.0.1:0"])
            .env("VODSOURCE_JWT_SECRET", crate::harness::SECRET)
            .env("VODSOURCE_WEBHOOK_ALLOW_HTTP", "true")
            .env("VODSOURCE_WEBHOOK_ALLOW", "127.0.0.1/32")
            .env("VODSOURCE_ENCODERS", "0")
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .expect("vodsource starts");
        // Held from here, so that it is killed and reaped however this ends.
        let mut process = Self {
            child,
            base: String::new(),
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let addr = text.lines().find_map(|line| {
                let entry: Value = serde_json::from_str(line).ok()?;
                let fields = &entry["fields"];
                fields["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("serving the API"))
                    .then(|| fields["addr"].as_str().map(str::to_owned))
                    .flatten()
            });
            if let Some(addr) = addr {
                process.base = format!("http://{addr}");
                return process;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the server did not start:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatcher_killed_mid_delivery_is_followed_by_one_that_delivers_everything() {
    let receiver = Receiver::start("127.0.0.1");
    let data = vodsource_tests::TempDir::new();
    let client = reqwest::Client::new();
    let admin = token("root", "admin");
    let mut first = Process::start(data.path());
    let (status, created) = parts(
        client
            .post(format!("{}/v1/webhooks", first.base))
            .bearer_auth(&admin)
            .json(&json!({ "url": receiver.url("killed") }))
            .send()
            .await
            .expect("create"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    receiver
        .control("killed", json!({ "secret": created["secret"], "stall": true }))
        .await;
    let mut videos = Vec::new();
    for n in 0..5 {
        let (status, body) = parts(
            client
                .post(format!("{}/v1/videos", first.base))
                .bearer_auth(token("alice", "creator"))
                .json(&crate::harness::register_body(&format!("video {n}"), 10))
                .send()
                .await
                .expect("register"),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        videos.push(body["video_id"].as_str().expect("id").to_owned());
    }
    receiver
        .until("deliveries in flight", Duration::from_secs(20), |log| {
            log.iter().filter(|d| d["status"] == "stalled").count() == 5
        })
        .await;
    // SIGKILL, with every delivery unanswered.
    first.child.kill().expect("SIGKILL");
    first.child.wait().expect("reaped");
    receiver.control("killed", json!({ "stall": false })).await;
    let _second = Process::start(data.path());
    // The killed process's lease lapses (15 s); the new one delivers.
    let log = receiver
        .until(
            "every event delivered by the new process",
            Duration::from_secs(60),
            |log| {
                videos.iter().all(|id| {
                    log.iter()
                        .any(|d| d["status"] == 200 && d["event"]["video_id"] == id.as_str())
                })
            },
        )
        .await;
    for delivery in log.iter().filter(|d| d["status"] == 200) {
        assert!(delivery["problem"].is_null(), "{delivery}");
        assert_eq!(delivery["event_type"], "video.created");
    }
    let stalled: HashSet<&str> = log
        .iter()
        .filter(|d| d["status"] == "stalled")
        .filter_map(|d| d["event_id"].as_str())
        .collect();
    let delivered: HashSet<&str> = log
        .iter()
        .filter(|d| d["status"] == 200)
        .filter_map(|d| d["event_id"].as_str())
        .collect();
    assert_eq!(stalled, delivered, "the same events, under the same ids");
}

/// Waits until endpoint `path` has delivered everything up to the log's head; returns the
/// deliveries `receiver` saw.
async fn caught_up(s: &Server, path: &str, receiver: &Receiver) -> Vec<Value> {
    let head = s.stores.log.head().await.expect("head");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, endpoint) = s.send(s.req(Method::GET, path, &token("root", "admin"))).await;
        assert_eq!(status, StatusCode::OK, "{endpoint}");
        if endpoint["position"].as_u64().is_some_and(|p| p >= head) {
            return receiver.log().await;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path} never caught up: {endpoint}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The ids of `deliveries`.
fn ids(deliveries: &[Value]) -> Vec<String> {
    deliveries
        .iter()
        .map(|d| d["event_id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_from_a_position_or_a_time_sends_exactly_the_events_after_it_again() {
    let receiver = Receiver::start("127.0.0.1");
    let s = server_with(webhook_settings(&["127.0.0.1/32"])).await;
    let alice = token("alice", "creator");
    // History from before the endpoint exists…
    lifecycle(&s, "alice", 0).await;
    let created = endpoint(&s, &alice, &receiver, "replayed", json!({})).await;
    let path = format!("/v1/webhooks/{}", created["id"].as_str().expect("id"));
    // …another owner's video, never this endpoint's…
    lifecycle(&s, "bob", 1).await;
    // …and one after its creation, delivered once.
    lifecycle(&s, "alice", 2).await;
    let first = caught_up(&s, &path, &receiver).await;
    assert_eq!(first.len(), LIFECYCLE.len(), "the video after its creation only");

    // From position 0: the whole history of alice's videos, also from before its creation.
    let replay = |body: Value| s.send(s.req(Method::POST, &format!("{path}/replay"), &alice).json(&body));
    let (status, accepted) = replay(json!({ "from_position": 0 })).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let log = caught_up(&s, &path, &receiver).await;
    let again = &log[first.len()..];
    assert_eq!(again.len(), 2 * LIFECYCLE.len(), "both of alice's videos: {again:?}");
    let by_video = delivered_by_video(again);
    assert_eq!(by_video.len(), 2);
    for events in by_video.values() {
        assert_eq!(types(events), LIFECYCLE);
    }
    let mut all: Vec<(u64, String)> = again
        .iter()
        .map(|d| {
            (
                d["event"]["position"].as_u64().expect("position"),
                d["event_id"].as_str().expect("id").to_owned(),
            )
        })
        .collect();
    all.sort();
    assert!(
        ids(&first).iter().all(|id| all.iter().any(|(_, i)| i == id)),
        "the same ids again"
    );

    // From a position: exactly the events after it.
    let (cut, _) = all[3].clone();
    let (status, accepted) = replay(json!({ "from_position": cut })).await;
    assert_eq!(
        (status, &accepted["from_position"]),
        (StatusCode::ACCEPTED, &json!(cut)),
        "{accepted}"
    );
    let log = caught_up(&s, &path, &receiver).await;
    let mut again = ids(&log[first.len() + all.len()..]);
    let mut expected: Vec<String> = all.iter().filter(|(p, _)| *p > cut).map(|(_, id)| id.clone()).collect();
    again.sort();
    expected.sort();
    assert_eq!(again, expected, "the events after position {cut}, each once");

    // From a time: the events recorded from then on.
    let seen = log.len();
    let third = &first[0]["event"];
    let (status, accepted) = replay(json!({ "from_time": third["created_at"] })).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    assert_eq!(
        accepted["from_position"],
        json!(third["position"].as_u64().expect("position") - 1),
        "{accepted}"
    );
    let log = caught_up(&s, &path, &receiver).await;
    assert_eq!(
        ids(&log[seen..]),
        ids(&first),
        "the last video's events again, in order"
    );

    // Refusals.
    let (status, answer) = replay(json!({ "from_position": 1_000_000 })).await;
    assert_eq!(
        (status, code(&answer)),
        (StatusCode::UNPROCESSABLE_ENTITY, "REPLAY_POSITION_AHEAD"),
        "{answer}"
    );
    let (status, answer) = replay(json!({ "from_position": 1, "from_time": "2026-01-01T00:00:00Z" })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let (status, answer) = s
        .send(
            s.req(Method::POST, &format!("{path}/replay"), &token("bob", "creator"))
                .json(&json!({ "from_position": 0 })),
        )
        .await;
    assert_eq!(
        (status, code(&answer)),
        (StatusCode::NOT_FOUND, "WEBHOOK_NOT_FOUND"),
        "{answer}"
    );
    let (status, _) = s
        .send(s.req(Method::PATCH, &path, &alice).json(&json!({ "enabled": false })))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, answer) = replay(json!({ "from_position": 0 })).await;
    assert_eq!(
        (status, code(&answer)),
        (StatusCode::CONFLICT, "WEBHOOK_DISABLED"),
        "{answer}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_urls_inside_the_network_are_refused_and_redirects_are_not_followed() {
    let inside = Receiver::start("127.0.0.1");
    let outside = Receiver::start(PUBLIC);
    // No allow-list: only public addresses (http allowed, for the receivers).
    let s = server_with(webhook_settings(&[])).await;
    let admin = token("root", "admin");
    for (url, reason) in [
        (inside.url("victim"), "127.0.0.1 is a loopback address"),
        ("http://169.254.169.254/latest/meta-data/".to_owned(), "cloud metadata"),
        ("http://10.1.2.3/hook".to_owned(), "private address"),
        ("http://[::1]:8080/hook".to_owned(), "loopback"),
        ("http://2130706433/hook".to_owned(), "127.0.0.1 is a loopback address"),
        ("ftp://example.com/hook".to_owned(), "not ftp"),
    ] {
        let (status, answer) = create(&s, &admin, json!({ "url": url })).await;
        assert_eq!(
            (status, code(&answer)),
            (StatusCode::UNPROCESSABLE_ENTITY, "WEBHOOK_URL_REFUSED"),
            "{url}: {answer}"
        );
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(reason), "{url}: {message}");
    }
    for url in [
        "not a url",
        "http://",
        "http://example.com/a b",
        "https://example.com/#fragment",
    ] {
        let (status, answer) = create(&s, &admin, json!({ "url": url })).await;
        assert_eq!(
            (status, code(&answer)),
            (StatusCode::UNPROCESSABLE_ENTITY, "WEBHOOK_URL_INVALID"),
            "{url}: {answer}"
        );
    }
    // Public endpoints that redirect (307: same method, same body) to loopback and to
    // another public one: each redirect is a failed delivery, tried again, never followed.
    endpoint(&s, &admin, &outside, "redirector", json!({})).await;
    outside
        .control("redirector", json!({ "redirect": inside.url("victim") }))
        .await;
    endpoint(&s, &admin, &outside, "bouncer", json!({})).await;
    outside
        .control("bouncer", json!({ "redirect": outside.url("elsewhere") }))
        .await;
    // A name that resolves inside the network: accepted (names are judged when resolved),
    // then every attempt refused, as its delivery log says.
    let (status, named) = create(&s, &admin, json!({ "url": "http://private.vodsource.test/hook" })).await;
    assert_eq!(status, StatusCode::CREATED, "{named}");
    let named = named["id"].as_str().expect("id").to_owned();
    s.register("alice", "redirected", 10).await;
    let page = deliveries_until(&s, &named, &admin, |items| {
        items.first().is_some_and(|d| d["attempts"].as_u64() >= Some(2))
    })
    .await;
    let refused = &page["items"][0];
    assert_eq!(refused["state"], "retrying", "{refused}");
    assert!(refused["status_code"].is_null(), "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap_or_default()
            .contains("private.vodsource.test resolves to 10.20.30.40, a private address"),
        "{refused}"
    );
    let log = outside
        .until(
            "three attempts at each redirecting endpoint",
            Duration::from_secs(20),
            |log| {
                ["redirector", "bouncer"].iter().all(|name| {
                    log.iter()
                        .filter(|d| d["endpoint"] == *name && d["status"] == 307)
                        .count()
                        >= 3
                })
            },
        )
        .await;
    assert!(inside.log().await.is_empty(), "the loopback receiver was reached");
    assert!(
        log.iter().all(|d| d["endpoint"] != "elsewhere"),
        "a redirect was followed"
    );
    s.stop().await;

    // https only unless configured.
    let strict = server_with(settings()).await;
    let (status, answer) = create(&strict, &admin, json!({ "url": outside.url("x") })).await;
    assert_eq!(
        (status, code(&answer)),
        (StatusCode::UNPROCESSABLE_ENTITY, "WEBHOOK_URL_REFUSED"),
        "{answer}"
    );
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("only https"),
        "{answer}"
    );
    strict.stop().await;
}

#[cfg(feature = "distributed")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_postgresql_and_dynamodb_two_dispatchers_deliver_each_event_once() {
    let receiver = Receiver::start("127.0.0.1");
    let settings = webhook_settings(&["127.0.0.1/32"]);
    let s = crate::harness::server_distributed_with(settings.clone()).await;
    // A second dispatcher process over the same stores, as another replica would run.
    let mut other = s.stores.clone();
    other.owner = "another-replica".into();
    let sender = vodsource_infra::egress::HttpSender::new(settings.send.clone()).expect("sender");
    let second = other.dispatcher(
        std::sync::Arc::new(sender),
        vodsource_app::Signer::new(settings.signing_secret.clone()),
        settings.dispatch.clone(),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(second.run(async move {
        let _ = stopped.await;
    }));
    let admin = token("root", "admin");
    let mut ids = Vec::new();
    for name in ["one", "two", "three"] {
        ids.push(endpoint(&s, &admin, &receiver, name, json!({})).await["id"].clone());
    }
    const VIDEOS: usize = 10;
    for n in 0..VIDEOS {
        lifecycle(&s, if n % 2 == 0 { "alice" } else { "bob" }, n).await;
    }
    let log = receiver
        .until("every event at the three endpoints", Duration::from_secs(60), |log| {
            log.len() >= 3 * VIDEOS * LIFECYCLE.len()
        })
        .await;
    for name in ["one", "two", "three"] {
        let deliveries: Vec<Value> = log.iter().filter(|d| d["endpoint"] == name).cloned().collect();
        assert_eq!(deliveries.len(), VIDEOS * LIFECYCLE.len(), "{name}");
        let ids: HashSet<&str> = deliveries.iter().filter_map(|d| d["event_id"].as_str()).collect();
        assert_eq!(
            ids.len(),
            deliveries.len(),
            "{name}: each event once, by one dispatcher"
        );
        for (video, events) in delivered_by_video(&deliveries) {
            assert_eq!(types(&events), LIFECYCLE, "{name}: {video}");
        }
        assert!(deliveries.iter().all(|d| d["status"] == 200 && d["problem"].is_null()));
    }
    // Each endpoint's delivery log, on DynamoDB, written by whichever process served it.
    for id in ids.iter().filter_map(Value::as_str) {
        deliveries_until(&s, id, &admin, |items| {
            items.len() == VIDEOS * LIFECYCLE.len()
                && items.iter().all(|d| d["state"] == "delivered" && d["attempts"] == 1)
        })
        .await;
    }
    let _ = stop.send(());
    running
        .await
        .expect("joined")
        .expect("the second dispatcher stops cleanly");
    s.stop().await;
}
