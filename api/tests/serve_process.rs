//! `vodsource serve` as a process: SIGTERM lets an upload that is halfway through finish,
//! then the runners checkpoint at the head and the process exits cleanly.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use vodsource_commands::ports::EventLog;
use vodsource_infra::sqlite::{SqliteEventLog, SqliteSettings, SqliteViewStore};
use vodsource_projections::{ViewStore, PROJECTIONS};

const BIN: &str = env!("CARGO_BIN_EXE_vodsource");

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One HTTP/1.1 exchange on a fresh connection; returns the status line and the body.
fn exchange(addr: &str, head: &str, body: &[u8]) -> (String, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    stream.write_all(head.as_bytes()).expect("head");
    stream.write_all(body).expect("body");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let status = response.lines().next().unwrap_or("").to_owned();
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_requests_and_checkpoints_the_runners() {
    let dir = TempDir(std::env::temp_dir().join(format!("vodsource-serve-{}", uuid::Uuid::now_v7().simple())));
    std::fs::create_dir_all(&dir.0).expect("dir");
    let mut child = Command::new(BIN)
        .arg("--data-dir")
        .arg(&dir.0)
        .args(["--log-json", "serve", "--listen", "127.0.0.1:0"])
        .env("VODSOURCE_LOG", "info")
        .env_remove("VODSOURCE_JWT_SECRET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let addr = loop {
        let line = lines.next().expect("the server exited before listening").expect("line");
        let json: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if json["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("serving the API"))
        {
            break json["fields"]["addr"].as_str().expect("addr").to_owned();
        }
    };
    // The log, line by line, read on a thread so the server never blocks on a full pipe.
    let (log_tx, log_rx) = std::sync::mpsc::channel::<String>();
    let drained = std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let _ = log_tx.send(line);
        }
    });
    let mut log = Vec::new();

    let register = br#"{"title":"in flight","filename":"clip.mp4","content_type":"video/mp4","size_bytes":8}"#;
    let (status, body) = exchange(
        &addr,
        &format!(
            "POST /v1/videos HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            register.len()
        ),
        register,
    );
    assert!(status.contains("201"), "{status} {body}");
    let registered: serde_json::Value = serde_json::from_str(&body).expect("json");
    let url = registered["upload"]["url"].as_str().expect("url");
    let path = url.split_once(&addr).expect("url on this server").1.to_owned();

    // Half an upload, then SIGTERM, then the other half: the request completes.
    let mut upload = TcpStream::connect(&addr).expect("connect");
    upload.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    upload
        .write_all(
            format!("PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 8\r\nConnection: close\r\n\r\nfirst")
                .as_bytes(),
        )
        .expect("first half");
    upload.flush().expect("flush");
    // The server is writing the upload once its temporary file exists.
    let incoming = dir.0.join("objects/.incoming");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::fs::read_dir(&incoming).map_or(0, Iterator::count) == 0 {
        assert!(std::time::Instant::now() < deadline, "the upload never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(term.success());
    // SIGTERM is handled once the server says it is shutting down.
    loop {
        let line = log_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the server logged its shutdown");
        let handled = line.contains("shutting down");
        log.push(line);
        if handled {
            break;
        }
    }
    upload.write_all(b"!!!").expect("second half");
    let mut response = String::new();
    upload.read_to_string(&mut response).expect("response");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    let status = child.wait().expect("wait");
    assert!(status.success(), "serve exited with {status}");
    drained.join().expect("log");
    log.extend(log_rx.try_iter());
    assert!(log.iter().any(|l| l.contains("shutting down")), "{log:?}");
    let id = registered["video_id"].as_str().expect("id");
    let stored = std::fs::read(dir.0.join(format!("objects/sources/{id}/source.mp4"))).expect("upload stored");
    assert_eq!(stored, b"first!!!");

    let log_store = SqliteEventLog::open(dir.0.join("events.db"), &SqliteSettings::default())
        .await
        .expect("events");
    let head = log_store.head().await.expect("head");
    let views = SqliteViewStore::open(dir.0.join("views.db"), &SqliteSettings::default())
        .await
        .expect("views");
    for name in PROJECTIONS {
        assert_eq!(views.projection(name).await.expect("state").position, head, "{name}");
    }
}
