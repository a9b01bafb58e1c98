//! Webhooks end to end: endpoints created over the API, the dispatcher sending the public
//! events of real video lifecycles to a receiver that is a separate Python process checking
//! every signature with Python's own `hmac` (`tests/src/webhook_receiver.py`).

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::harness::{code, parts, server_with, settings, token, Server};

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
async fn an_event_failing_past_the_retry_period_is_given_up_and_the_video_goes_on() {
    let receiver = Receiver::start("127.0.0.1");
    let mut settings = webhook_settings(&["127.0.0.1/32"]);
    settings.dispatch.retry_for = Duration::from_millis(600);
    let s = server_with(settings).await;
    endpoint(&s, &token("root", "admin"), &receiver, "picky", json!({})).await;
    receiver
        .control("picky", json!({ "fail_types": ["video.created"] }))
        .await;
    let (id, _) = s.register("alice", "first", 10).await;
    let (status, body) = s
        .send(
            s.req(Method::PATCH, &format!("/v1/videos/{id}"), &token("alice", "creator"))
                .json(&json!({ "title": "second" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let log = receiver
        .until(
            "the update delivered after the creation was given up",
            Duration::from_secs(20),
            |log| log.iter().any(|d| d["status"] == 200),
        )
        .await;
    let created: Vec<&Value> = log.iter().filter(|d| d["event_type"] == "video.created").collect();
    assert!(created.len() >= 2, "retried before giving up: {created:?}");
    assert!(created.iter().all(|d| d["status"] == 500));
    let last = log
        .iter()
        .rposition(|d| d["event_type"] == "video.created")
        .expect("created");
    let updated = log.iter().position(|d| d["status"] == 200).expect("updated");
    assert!(last < updated, "the update waited for the creation to be given up");
    assert_eq!(log[updated]["event_type"], "video.updated");
    let metrics = s
        .client
        .get(s.url("/metrics"))
        .bearer_auth(token("root", "admin"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("vodsource_webhook_deliveries_total{outcome=\"given_up\"} 1"),
        "{metrics}"
    );
    s.stop().await;
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
    s.register("alice", "redirected", 10).await;
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
    for name in ["one", "two", "three"] {
        endpoint(&s, &admin, &receiver, name, json!({})).await;
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
    let _ = stop.send(());
    running
        .await
        .expect("joined")
        .expect("the second dispatcher stops cleanly");
    s.stop().await;
}
