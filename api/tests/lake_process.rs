//! Exactly once into the lake across SIGKILL: a `vodsource serve` process takes beacons under
//! load and sinks them into Parquet with flushes every few hundred events; it is killed with
//! SIGKILL at random moments and restarted on the same data folder. At the end the lake, read
//! by pyarrow and duckdb, holds every accepted event exactly once, and nothing that was not
//! sent. The same with the distributed roles, each its own process on Kafka: `vodsource api`,
//! `vodsource projector` and `vodsource relay` stay up while the `vodsource qoe-sink` process
//! is the one killed; a video registered through the API reaches the catalog (projector) and
//! the lake's `video_events` (relay, then sink).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;

const BIN: &str = env!("CARGO_BIN_EXE_vodsource");
const BATCH: usize = 25;

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `vodsource` process whose log (JSON lines) goes to a file of its own.
struct Server {
    child: Option<Child>,
    log: PathBuf,
}

const FLUSH: [&str; 4] = ["--lake-flush-secs", "1", "--lake-flush-bytes", "20000"];

/// What the processes log: warnings, plus the line saying where the API listens.
const LOG_FILTER: &str = "warn,vodsource_api::http=info";

impl Server {
    /// `vodsource serve` on a port of its own choosing, with the sink inside.
    fn start(data: &Path, env: &[(&str, &str)]) -> Self {
        Self::spawn(
            data,
            &["serve", "--listen", "127.0.0.1:0", "--encoders", "0"],
            &FLUSH,
            None,
            env,
        )
    }

    /// `vodsource <args> <extra>` on `data`, with the stream `stream` (default embedded).
    fn spawn(data: &Path, args: &[&str], extra: &[&str], stream: Option<&str>, env: &[(&str, &str)]) -> Self {
        let log = data.join(format!("process-{}.log", uuid::Uuid::now_v7().simple()));
        let mut command = Command::new(BIN);
        command
            .arg("--data-dir")
            .arg(data)
            .arg("--log-json")
            .args(args)
            .args(extra)
            .env("VODSOURCE_LOG", LOG_FILTER)
            .env("VODSOURCE_RATE_LIMIT", "1000000")
            .env("VODSOURCE_RATE_BURST", "1000000")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        for (name, value) in env {
            command.env(name, value);
        }
        if let Some(stream) = stream {
            command.env("VODSOURCE_STREAM", stream);
        }
        Self {
            child: Some(command.spawn().expect("vodsource starts")),
            log,
        }
    }

    /// The process's log so far.
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `http://<address>` the API listens on, from its log line (it picked the port itself).
    async fn base(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let found = self.log().lines().find_map(|line| {
                let json: serde_json::Value = serde_json::from_str(line).ok()?;
                let message = json["fields"]["message"].as_str()?;
                message
                    .starts_with("serving the API")
                    .then(|| json["fields"]["addr"].as_str().map(|a| format!("http://{a}")))?
            });
            if let Some(base) = found {
                return base;
            }
            assert!(
                Instant::now() < deadline,
                "the API never said where it listens: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the process exits by itself; its exit status.
    async fn exited(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                return status;
            }
            assert!(Instant::now() < deadline, "the process did not exit: {}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn wait_ready(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(format!("{base}/v1/health/ready")).send().await {
            if r.status().is_success() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "the server did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[derive(Default)]
struct Ledger {
    accepted: HashSet<String>,
    sent: HashSet<String>,
}

/// Sends batches until `stop`; every id goes in `sent`, and in `accepted` once a 200 says so.
async fn load(
    client: reqwest::Client,
    base: Arc<Mutex<String>>,
    cid: String,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut n = 0u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let base = base.lock().expect("base").clone();
        let now = chrono::Utc::now().timestamp_millis();
        let events: Vec<serde_json::Value> = (0..BATCH)
            .map(|i| {
                n += 1;
                serde_json::json!({
                    "event_id": uuid::Uuid::now_v7(),
                    "event_type": "heartbeat",
                    "sid": format!("s-{}", n % 11),
                    "cid": cid,
                    "ts": now - i as i64,
                    "position_ms": n * 10,
                })
            })
            .collect();
        let ids: Vec<String> = events
            .iter()
            .map(|e| e["event_id"].as_str().unwrap_or_default().to_owned())
            .collect();
        ledger.lock().expect("ledger").sent.extend(ids.iter().cloned());
        let response = client
            .post(format!("{base}/v1/playback/beacons"))
            .json(&serde_json::json!({ "events": events }))
            .send()
            .await;
        match response {
            Ok(r) if r.status().is_success() => {
                let body: serde_json::Value = r.json().await.unwrap_or_default();
                assert_eq!(body["accepted"], BATCH, "every event is valid: {body}");
                ledger.lock().expect("ledger").accepted.extend(ids);
            }
            // Killed mid-request, or refused while down: in doubt, so only "at most once".
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

fn read_lake(objects: &Path) -> BTreeMap<String, u64> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/src/lake_reader.py");
    let output = Command::new("python3")
        .arg(script)
        .arg(objects)
        .args(["qoe_events", "ts"])
        .output()
        .expect("python3 runs; install the readers with `scripts/services.sh start lake-readers`");
    assert!(
        output.status.success(),
        "the lake readers failed (install them with `scripts/services.sh start lake-readers`): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let table: serde_json::Value = serde_json::from_slice(&output.stdout).expect("reader JSON");
    assert_eq!(table["misplaced"], 0, "rows sit in the hour of their ts");
    serde_json::from_value(table["event_ids"].clone()).expect("event ids")
}

/// Which process is killed, and on which stream.
enum Shape {
    /// `serve` with the embedded stream and the sink inside.
    Embedded,
    /// `serve --no-qoe-sink` on Kafka stays up; `qoe-sink` processes are killed.
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    KafkaSinkProcess,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lake_holds_every_accepted_beacon_exactly_once_across_sigkills() {
    exactly_once_across_sigkills(Shape::Embedded, 8).await;
}

#[cfg(feature = "kafka")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qoe_sink_process_on_kafka_writes_every_beacon_once_across_sigkills() {
    assert!(
        std::net::TcpStream::connect("127.0.0.1:9092").is_ok(),
        "no Kafka broker on 127.0.0.1:9092: start one with `scripts/services.sh start kafka`"
    );
    exactly_once_across_sigkills(Shape::KafkaSinkProcess, 4).await;
}

async fn exactly_once_across_sigkills(shape: Shape, kills: usize) {
    let dir = TempDir(std::env::temp_dir().join(format!("vodsource-lake-{}", uuid::Uuid::now_v7().simple())));
    let data = dir.0.join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");

    let kafka = format!(
        "kafka://127.0.0.1:9092?partitions=3&prefix=t{}-",
        uuid::Uuid::now_v7().simple()
    );
    let api_args = ["api", "--listen", "127.0.0.1:0"];
    type Start = Box<dyn Fn(&[(&str, &str)]) -> Server>;
    let (mut server, start_victim): (Server, Start) = match shape {
        Shape::Embedded => {
            let data = data.clone();
            (
                Server::start(&data, &[]),
                Box::new(move |env| Server::start(&data, env)),
            )
        }
        Shape::KafkaSinkProcess => {
            let server = Server::spawn(&data, &api_args, &[], Some(&kafka), &[]);
            let (data, kafka) = (data.clone(), kafka.clone());
            (
                server,
                Box::new(move |env| Server::spawn(&data, &["qoe-sink"], &FLUSH, Some(&kafka), env)),
            )
        }
    };
    let base = Arc::new(Mutex::new(server.base().await));
    let current = |base: &Arc<Mutex<String>>| base.lock().expect("base").clone();
    wait_ready(&client, &current(&base)).await;
    // With the sink in its own process, `server` stays up and `victim` is the one killed;
    // the projector and the relay run beside them.
    let mut victim = match shape {
        Shape::Embedded => None,
        Shape::KafkaSinkProcess => Some(start_victim(&[])),
    };
    let _roles = match shape {
        Shape::Embedded => Vec::new(),
        Shape::KafkaSinkProcess => vec![
            Server::spawn(&data, &["projector"], &[], Some(&kafka), &[]),
            Server::spawn(&data, &["relay"], &[], Some(&kafka), &[]),
        ],
    };
    // The video the beacons are about: beacons name a video the caller may play.
    let response = client
        .post(format!("{}/v1/videos", current(&base)))
        .json(&serde_json::json!({
            "title": "through the roles",
            "filename": "clip.mp4",
            "content_type": "video/mp4",
            "size_bytes": 1000,
        }))
        .send()
        .await
        .expect("register");
    assert_eq!(response.status(), reqwest::StatusCode::CREATED);
    let body: serde_json::Value = response.json().await.expect("json");
    let video = body["video_id"].as_str().expect("id").to_owned();
    // The catalog (this process's projector, or the projector process) lists it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let response = client
            .get(format!("{}/v1/videos/{video}", current(&base)))
            .send()
            .await
            .expect("get");
        if response.status() == reqwest::StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "the projector never listed {video}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let registered = matches!(shape, Shape::KafkaSinkProcess).then(|| video.clone());
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let senders: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(load(
                client.clone(),
                base.clone(),
                video.clone(),
                ledger.clone(),
                stop.clone(),
            ))
        })
        .collect();

    // First a crash at the worst moment, on purpose: a sink that dies after a flush's files
    // are up and before its offsets are committed. The next run must redo that range.
    let failpoint = [("VODSOURCE_FAILPOINT", "sink-before-commit")];
    let redone = match victim.as_mut() {
        None => {
            server.kill();
            server = start_victim(&failpoint);
            *base.lock().expect("base") = server.base().await;
            let status = server.exited().await;
            assert!(!status.success(), "the failpoint aborts the process: {status}");
            assert!(
                server.log().contains("failpoint sink-before-commit"),
                "{}",
                server.log()
            );
            server = start_victim(&[]);
            *base.lock().expect("base") = server.base().await;
            wait_ready(&client, &current(&base)).await;
            &server
        }
        Some(sink) => {
            sink.kill();
            *sink = start_victim(&failpoint);
            let status = sink.exited().await;
            assert!(!status.success(), "the failpoint aborts the process: {status}");
            assert!(sink.log().contains("failpoint sink-before-commit"), "{}", sink.log());
            *sink = start_victim(&[]);
            &*sink
        }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !redone
        .log()
        .contains("redoing a flush that was interrupted before its commit")
    {
        assert!(
            Instant::now() < deadline,
            "the next run never redid the flush: {}",
            redone.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    for _ in 0..kills {
        let pause = rand::thread_rng().gen_range(200..1000);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        match victim.as_mut() {
            None => {
                server.kill();
                server = start_victim(&[]);
                *base.lock().expect("base") = server.base().await;
                wait_ready(&client, &current(&base)).await;
            }
            Some(sink) => {
                sink.kill();
                *sink = start_victim(&[]);
            }
        }
    }
    // Some load on the last run, then quiet while the sink catches up.
    let before = ledger.lock().expect("ledger").accepted.len();
    let deadline = Instant::now() + Duration::from_secs(30);
    while ledger.lock().expect("ledger").accepted.len() < before + 500 {
        assert!(Instant::now() < deadline, "the last run accepts beacons");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for sender in senders {
        sender.await.expect("sender");
    }
    let (accepted, sent) = {
        let ledger = ledger.lock().expect("ledger");
        (ledger.accepted.clone(), ledger.sent.clone())
    };
    assert!(accepted.len() > 2000, "enough load to matter: {}", accepted.len());
    if matches!(shape, Shape::KafkaSinkProcess) {
        assert_eq!(accepted.len(), sent.len(), "serve stays up, so every batch is accepted");
    }

    let objects = data.join("objects");
    let deadline = Instant::now() + Duration::from_secs(60);
    let lake = loop {
        let lake = read_lake(&objects);
        if accepted.iter().all(|id| lake.contains_key(id)) {
            break lake;
        }
        let missing = accepted.iter().filter(|id| !lake.contains_key(*id)).count();
        assert!(
            Instant::now() < deadline,
            "{missing} accepted events never reached the lake"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let doubled: Vec<(&String, &u64)> = lake.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "events written twice: {doubled:?}");
    let unknown = lake.keys().filter(|id| !sent.contains(*id)).count();
    assert_eq!(unknown, 0, "nothing in the lake that was not sent");
    // The CLI's SQL over the same files agrees with the independent readers.
    let output = Command::new(BIN)
        .arg("--data-dir")
        .arg(&data)
        .args(["qoe", "query", "--format", "csv"])
        .arg("SELECT count(*) AS n, count(DISTINCT event_id) AS ids FROM qoe_events")
        .output()
        .expect("qoe query runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let total: u64 = lake.values().sum();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("n,ids\n{total},{}\n", lake.len())
    );
    if let Some(id) = registered {
        // The projector process built the catalog entry the API process serves (above), and
        // the relay published its registration, which the sink landed in the lake.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let output = Command::new(BIN)
                .arg("--data-dir")
                .arg(&data)
                .args(["qoe", "query", "--format", "csv"])
                .arg(format!("SELECT event_type FROM video_events WHERE video_id = '{id}'"))
                .output()
                .expect("qoe query runs");
            assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
            if String::from_utf8_lossy(&output.stdout) == "event_type\nVideoRegistered\n" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the registration never reached video_events: {}",
                String::from_utf8_lossy(&output.stdout)
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    eprintln!(
        "{} accepted, {} sent, {} in the lake (in-doubt ones included at most once)",
        accepted.len(),
        sent.len(),
        lake.len()
    );
}
