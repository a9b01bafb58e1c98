//! Uppy's S3 multipart plugin (`@uppy/aws-s3`, the published bundle, in headless Chromium)
//! uploads a source straight to S3 (moto) through `vodsource serve`'s direct-upload calls: a
//! part's first attempt is cut off and the upload paused and resumed (Uppy lists the parts the
//! bucket has and sends the rest), and it completes. The API's request-body counter shows it
//! never carried the file's bytes; the bucket holds them byte for byte and no multipart upload.
#![cfg(feature = "s3")]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{serve_on_any_port, uploaded_once, vodsource_on_s3, whole_source_in_bucket, Children, LOG_WITH_ADDRESS};
use serde_json::{json, Value};

const SECRET: &str = "direct-s3-test-secret-0123456789-0123456789";
/// Three parts: 8 MiB, 8 MiB and 4 MiB.
const SIZE: u64 = 20 * 1024 * 1024;

fn vodsource(data: &Path, bucket: &str) -> Command {
    vodsource_on_s3(data, bucket, SECRET)
}

fn token(data: &Path, bucket: &str, sub: &str, role: &str) -> String {
    let output = vodsource(data, bucket)
        .args(["token", "--sub", sub, "--role", role])
        .output()
        .expect("token");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Request body bytes the API has read, over every kind of route.
async fn body_bytes(client: &reqwest::Client, base: &str, admin: &str) -> u64 {
    let text = client
        .get(format!("{base}/metrics"))
        .bearer_auth(admin)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let counted: Vec<u64> = text
        .lines()
        .filter(|l| l.starts_with("vodsource_http_request_body_bytes_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    assert!(!counted.is_empty(), "the counter is exposed:\n{text}");
    counted.iter().sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uppy_sends_the_parts_straight_to_the_bucket_and_resumes_an_interrupted_one() {
    let id = uuid::Uuid::now_v7().simple().to_string();
    let bucket = format!("direct-{}", &id[..24]);
    let data = std::env::temp_dir().join(format!("vodsource-direct-s3-{id}"));
    std::fs::create_dir_all(&data).expect("data dir");
    let setup = vodsource(&data, &bucket).arg("setup").output().expect("setup runs");
    assert!(
        setup.status.success(),
        "setup (start moto with `scripts/services.sh start aws`): {}",
        String::from_utf8_lossy(&setup.stderr)
    );
    let file = data.join("source.mp4");
    let bytes: Vec<u8> = (0..SIZE).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    std::fs::write(&file, &bytes).expect("source");
    let creator = token(&data, &bucket, "alice", "creator");
    let admin = token(&data, &bucket, "ops", "admin");

    let mut command = vodsource(&data, &bucket);
    command
        .env("VODSOURCE_LOG", LOG_WITH_ADDRESS)
        .args(["--log-json", "serve", "--listen", "127.0.0.1:0"]);
    let (child, base) = serve_on_any_port(command);
    let _children = Children(vec![child]);
    let client = reqwest::Client::new();
    let registered: Value = client
        .post(format!("{base}/v1/videos"))
        .bearer_auth(&creator)
        .json(&json!({ "title": "straight to the bucket", "filename": "source.mp4",
                       "content_type": "video/mp4", "size_bytes": SIZE }))
        .send()
        .await
        .expect("register")
        .json()
        .await
        .expect("json");
    let video = registered["video_id"].as_str().expect("video id").to_owned();
    let multipart = &registered["multipart"];
    let endpoint_url = multipart["endpoint"].as_str().unwrap_or_else(|| panic!("{registered}"));
    let before = body_bytes(&client, &base, &admin).await;

    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("../web");
    let mut node = Command::new("timeout");
    node.args(["180", "node"])
        .arg(web.join("e2e/uppy-direct.mjs"))
        .env("BASE", &base)
        .env("ENDPOINT", endpoint_url)
        .env("FILE", &file)
        .env("PART_SIZE", multipart["part_size"].to_string())
        .stdin(Stdio::null());
    let output = tokio::task::spawn_blocking(move || node.output())
        .await
        .expect("client")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let result: Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no result: {stdout}\n{}", String::from_utf8_lossy(&output.stderr)));
    eprintln!("uppy: {result}");
    assert!(
        output.status.success() && result["error"].is_null(),
        "{result}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Part 2's first attempt was cut off, the upload resumed from the bucket's list of parts.
    assert_eq!(result["cut"], 1, "{result}");
    assert!(result["listed"].as_u64().unwrap_or(0) >= 1, "{result}");
    assert!(
        result["puts"].as_u64().unwrap_or(0) >= 4,
        "three parts and a retry: {result}"
    );
    // Uppy keeps the completion's `location`: the video's URL in the API.
    assert!(
        result["response"].to_string().contains(&format!("/v1/videos/{video}")),
        "{result}"
    );

    // The API read the calls' small JSON bodies, never the file's bytes.
    let carried = body_bytes(&client, &base, &admin).await - before;
    assert!(
        carried < 64 * 1024,
        "the API read {carried} body bytes for a {SIZE}-byte upload"
    );

    whole_source_in_bucket(&bucket, &data, &video, &bytes).await;
    uploaded_once(&client, &base, &creator, &video).await;
    let _ = std::fs::remove_dir_all(&data);
}
