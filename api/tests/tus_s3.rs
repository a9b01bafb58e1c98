//! A tus upload to `vodsource serve` whose objects are on S3 (moto), with the API process
//! killed (SIGKILL) mid-upload and another started on the same data: tus-js-client, through a
//! relay that now points at the new process, resumes from the offset the first process had
//! acknowledged (its parts are in the bucket, named by the upload's manifest), and the source
//! arrives whole. moto then holds no multipart upload: the one the upload used is completed,
//! no part is orphaned.
#![cfg(feature = "s3")]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::relay::Relay;
use common::{
    serve_on_any_port, until, uploaded_once, vodsource_on_s3, whole_source_in_bucket, Children, LOG_WITH_ADDRESS,
};
use serde_json::{json, Value};

const SECRET: &str = "tus-s3-test-secret-0123456789-0123456789-01";
/// Twelve parts of 8 MiB.
const SIZE: u64 = 96 * 1024 * 1024;
/// The API is killed once this much is sent: past what it may hold unacknowledged (four parts
/// on their way, one filling, the sockets' buffers), so some parts are surely named.
const KILL_AFTER: u64 = 72 * 1024 * 1024;

fn vodsource(data: &Path, bucket: &str) -> Command {
    vodsource_on_s3(data, bucket, SECRET)
}

fn serve(data: &Path, bucket: &str) -> (std::process::Child, String) {
    let mut command = vodsource(data, bucket);
    command
        .env("VODSOURCE_LOG", LOG_WITH_ADDRESS)
        .args(["--log-json", "serve", "--listen", "127.0.0.1:0"]);
    serve_on_any_port(command)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_api_on_s3_is_resumed_by_another_from_the_acknowledged_offset() {
    let id = uuid::Uuid::now_v7().simple().to_string();
    let bucket = format!("tus-{}", &id[..24]);
    let data = std::env::temp_dir().join(format!("vodsource-tus-s3-{id}"));
    std::fs::create_dir_all(&data).expect("data dir");
    let setup = vodsource(&data, &bucket).arg("setup").output().expect("setup runs");
    assert!(
        setup.status.success(),
        "setup (start moto with `scripts/services.sh start aws`): {}",
        String::from_utf8_lossy(&setup.stderr)
    );
    let file = data.join("source.bin");
    let bytes: Vec<u8> = (0..SIZE).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(&file, &bytes).expect("source");
    let token = {
        let output = vodsource(&data, &bucket)
            .args(["token", "--sub", "alice", "--role", "creator"])
            .output()
            .expect("token");
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };

    let (first, base) = serve(&data, &bucket);
    let mut children = Children(vec![first]);
    let client = reqwest::Client::new();
    let registered: Value = client
        .post(format!("{base}/v1/videos"))
        .bearer_auth(&token)
        .json(&json!({ "title": "killed mid-upload", "filename": "source.mp4",
                       "content_type": "video/mp4", "size_bytes": SIZE }))
        .send()
        .await
        .expect("register")
        .json()
        .await
        .expect("json");
    let video = registered["video_id"].as_str().expect("video id").to_owned();
    let target: SocketAddr = base.trim_start_matches("http://").parse().expect("address");
    let relay = Relay::start(target, Vec::new()).await;

    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("../web");
    let mut node = Command::new("timeout");
    node.args(["300", "node"])
        .arg(web.join("e2e/tus-upload.mjs"))
        .env("ENDPOINT", format!("http://{}/v1/uploads", relay.addr))
        .env("FILE", &file)
        .env("VIDEO_ID", &video)
        .env("TOKEN", &token)
        .env("RETRY_MS", "250")
        .stdin(Stdio::null());
    let upload = tokio::task::spawn_blocking(move || node.output());

    // Three quarters in, the API process dies without a word; another takes its place.
    until(
        "three quarters of the source are sent",
        Duration::from_secs(120),
        async || (relay.sent() > KILL_AFTER).then_some(()),
    )
    .await;
    children.0[0].kill().expect("SIGKILL");
    children.0[0].wait().expect("reaped");
    let (second, base) = serve(&data, &bucket);
    children.0.push(second);
    relay.point_at(base.trim_start_matches("http://").parse().expect("address"));

    let output = upload.await.expect("client").expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let result: Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no result: {stdout}\n{}", String::from_utf8_lossy(&output.stderr)));
    assert!(output.status.success() && result["error"].is_null(), "{result}");
    eprintln!("tus-js-client: {result}");
    // It resumed where the killed process's last stored part ended, not from zero.
    let resumed_at = result["offsets"]
        .as_array()
        .expect("offsets")
        .iter()
        .filter_map(Value::as_u64)
        .max()
        .unwrap_or(0);
    assert!(resumed_at >= 8 * 1024 * 1024, "resumed from {resumed_at}: {result}");
    assert_eq!(resumed_at % (8 * 1024 * 1024), 0, "at a part's end: {result}");

    // The source in the bucket, byte for byte; no multipart upload left behind.
    whole_source_in_bucket(&bucket, &data, &video, &bytes).await;

    uploaded_once(&client, &base, &token, &video).await;
    drop(children);
    let _ = std::fs::remove_dir_all(&data);
}
