//! What the process tests share: the binary, children killed at the end, clips made with
//! FFmpeg, a video's history, and polling with a deadline.
#![allow(dead_code)] // each test binary uses its own share of these

pub mod browser;
pub mod relay;

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use vodsource_commands::codec::Decoder;
use vodsource_commands::ports::EventLog;
use vodsource_domain::{EncodeStage, VideoEvent};

/// The `vodsource` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_vodsource");

/// Children are killed when the test ends, whatever happens.
pub struct Children(pub Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A real clip of `seconds` at `size` (`WxH`), H.264 and AAC.
pub fn clip(path: &Path, seconds: u32, size: &str) {
    let made = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("testsrc2=size={size}:rate=25"))
        .args(["-f", "lavfi", "-i", "sine", "-t"])
        .arg(seconds.to_string())
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-shortest"])
        .arg(path)
        .status()
        .expect("ffmpeg runs; install it with `scripts/services.sh start ffmpeg`");
    assert!(made.success());
}

/// The flags (`K__` for a keyframe) of each video packet ffprobe reads from `input` (a file or
/// URL, a master playlist walked as a player walks it).
pub fn video_packet_flags(input: &str) -> Vec<String> {
    let probe = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=flags",
            "-of",
            "csv=p=0",
        ])
        .arg(input)
        .output()
        .expect("ffprobe runs; install it with `scripts/services.sh start ffmpeg`");
    String::from_utf8_lossy(&probe.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

/// The log filter of processes whose API address a test reads from their log.
pub const LOG_WITH_ADDRESS: &str = "warn,vodsource_api::http=info";

/// Starts `command` (a `vodsource --log-json … --listen 127.0.0.1:0` serving the API, with
/// [`LOG_WITH_ADDRESS`] or more as its log filter): the child and the base URL it says it
/// listens on. The server picks its own port, so no other process can take it in between;
/// the rest of its log is drained on a thread.
pub fn serve_on_any_port(mut command: Command) -> (Child, String) {
    use std::io::BufRead as _;
    let mut child = command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("vodsource starts");
    let mut lines = std::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let base = loop {
        let line = lines
            .next()
            .expect("the server exited before it listened")
            .expect("a log line");
        let json: Value = serde_json::from_str(&line).unwrap_or_default();
        if json["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("serving the API"))
        {
            break format!("http://{}", json["fields"]["addr"].as_str().expect("addr"));
        }
    };
    std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
    (child, base)
}

/// Every event of a video, decoded.
pub async fn history(log: &dyn EventLog, id: &str) -> Vec<VideoEvent> {
    let decoder = Decoder::new();
    log.read_stream(id, 0, 10_000)
        .await
        .expect("reads")
        .iter()
        .map(|e| decoder.decode(e).expect("decodes"))
        .collect()
}

/// The worker encoding `attempt` of video `id`, once it reports the encode stage.
pub async fn encoding_worker(log: &dyn EventLog, id: &str, attempt: u32) -> Option<String> {
    history(log, id).await.into_iter().find_map(|e| match e {
        VideoEvent::EncodingProgressed {
            attempt: a,
            stage: EncodeStage::Encode,
            worker_id,
            ..
        } if a == attempt => Some(worker_id),
        _ => None,
    })
}

/// The attempt that completed video `id`'s encoding, and its worker.
pub async fn completion(log: &dyn EventLog, id: &str) -> Option<(u32, String)> {
    history(log, id).await.into_iter().find_map(|e| match e {
        VideoEvent::EncodingCompleted { attempt, worker_id, .. } => Some((attempt, worker_id)),
        _ => None,
    })
}

/// The index among `candidates` of the child whose lease owner or worker id is `owner`
/// (both carry the process id between dashes).
pub fn process_of(children: &Children, candidates: &[usize], owner: &str) -> usize {
    candidates
        .iter()
        .copied()
        .find(|&i| owner.contains(&format!("-{}-", children.0[i].id())))
        .unwrap_or_else(|| panic!("no process among {candidates:?} is {owner}"))
}

/// Polls `check` until it gives a value, failing with `what` after `within`.
pub async fn until<T>(what: &str, within: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Registers `clip`, PUTs it to the upload URL the API answers with (presigned S3 URL or the
/// API's own signed link) with a plain HTTP client and completes the upload: the video's id
/// and the URL it went to.
pub async fn upload(client: &reqwest::Client, base: &str, title: &str, clip: &std::path::Path) -> (String, String) {
    upload_with(client, base, title, clip, json!({})).await
}

/// As [`upload`], with `more` fields in the registration (`publish_when_playable`, …).
pub async fn upload_with(
    client: &reqwest::Client,
    base: &str,
    title: &str,
    clip: &std::path::Path,
    more: Value,
) -> (String, String) {
    let bytes = std::fs::read(clip).expect("clip");
    let mut registration = json!({
        "title": title,
        "filename": "clip.mp4",
        "content_type": "video/mp4",
        "size_bytes": bytes.len(),
    });
    if let (Some(fields), Value::Object(more)) = (registration.as_object_mut(), more) {
        fields.extend(more);
    }
    let registered: Value = client
        .post(format!("{base}/v1/videos"))
        .json(&registration)
        .send()
        .await
        .expect("register")
        .json()
        .await
        .expect("json");
    let id = registered["video_id"].as_str().expect("id").to_owned();
    let upload = registered["upload"]["url"].as_str().expect("url").to_owned();
    let put = reqwest::Client::new()
        .put(&upload)
        .header("Content-Type", "video/mp4")
        .body(bytes)
        .send()
        .await
        .expect("put");
    assert!(put.status().is_success(), "PUT: {}", put.status());
    let done = client
        .post(format!("{base}/v1/videos/{id}/upload-complete"))
        .send()
        .await
        .expect("upload-complete");
    assert!(
        done.status().is_success(),
        "upload-complete: {}",
        done.text().await.unwrap_or_default()
    );
    (id, upload)
}

/// Waits until encoding of `id` is requested, then checks that its history records the upload
/// and the request exactly once (a resumed upload must not record either twice).
pub async fn uploaded_once(client: &reqwest::Client, base: &str, token: &str, id: &str) {
    let types = until("encoding is requested", Duration::from_secs(30), async || {
        let history: Value = client
            .get(format!("{base}/v1/history/{id}"))
            .bearer_auth(token)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let types: Vec<String> = history["events"]
            .as_array()?
            .iter()
            .filter_map(|e| e["type"].as_str().map(str::to_owned))
            .collect();
        types.iter().any(|t| t == "EncodingRequested").then_some(types)
    })
    .await;
    let once = |name: &str| types.iter().filter(|t| *t == name).count();
    assert_eq!((once("SourceUploaded"), once("EncodingRequested")), (1, 1), "{types:?}");
}

/// The JSON `url` answers with, if it answers with JSON.
pub async fn get_json(client: &reqwest::Client, url: &str) -> Option<Value> {
    client.get(url).send().await.ok()?.json().await.ok()
}

/// The catalog's view of `id`, if it answers with one.
pub async fn video(client: &reqwest::Client, base: &str, id: &str) -> Option<Value> {
    get_json(client, &format!("{base}/v1/videos/{id}")).await
}

/// Waits until the catalog says the video is ready (failing at once if it says failed).
pub async fn ready(client: &reqwest::Client, base: &str, id: &str, within: Duration) {
    until("the video is ready", within, async || {
        let video = video(client, base, id).await?;
        assert_ne!(video["status"], "failed", "{video}");
        (video["status"] == "ready").then_some(())
    })
    .await;
}

/// The S3 emulator the process tests use (`scripts/services.sh start aws`).
pub fn s3_endpoint() -> String {
    std::env::var("VODSOURCE_TEST_AWS_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5000".into())
}

/// `vodsource` with `data` and its objects in `bucket` on the emulator, signing with `secret`;
/// no encoders, no QoE sink.
pub fn vodsource_on_s3(data: &Path, bucket: &str, secret: &str) -> Command {
    let mut command = Command::new(BIN);
    command
        .arg("--data-dir")
        .arg(data)
        .env("VODSOURCE_OBJECT_STORE", format!("s3://{bucket}/vod"))
        .env("VODSOURCE_JWT_SECRET", secret)
        .env("VODSOURCE_ENCODERS", "0")
        .env("VODSOURCE_NO_QOE_SINK", "true")
        .env("VODSOURCE_LOG", "warn")
        .env("AWS_ENDPOINT_URL", s3_endpoint())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "vodsource")
        .env("AWS_SECRET_ACCESS_KEY", "vodsource");
    command
}

/// The multipart uploads the emulator holds in `bucket`, as boto3 lists them.
pub fn multipart_uploads(bucket: &str) -> Vec<Value> {
    let script = r#"
import boto3, json, sys
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1",
                  aws_access_key_id="vodsource", aws_secret_access_key="vodsource")
print(json.dumps(s3.list_multipart_uploads(Bucket=sys.argv[2]).get("Uploads", []), default=str))
"#;
    let output = Command::new("python3")
        .args(["-c", script, &s3_endpoint(), bucket])
        .output()
        .expect("python3 runs; boto3 comes with `scripts/services.sh start aws`");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("json")
}

/// The source of `video` in `bucket` (under `vod/`) is `bytes`, byte for byte (SHA-256), and no
/// multipart upload is left in the bucket.
#[cfg(feature = "s3")]
pub async fn whole_source_in_bucket(bucket: &str, scratch: &Path, video: &str, bytes: &[u8]) {
    use sha2::{Digest, Sha256};
    use vodsource_commands::ports::ObjectStore as _;
    let store = vodsource_infra::s3::S3ObjectStore::open(
        &format!("s3://{bucket}/vod"),
        &vodsource_infra::aws::AwsSettings::emulator(&s3_endpoint()),
    )
    .await
    .expect("store");
    let fetched = scratch.join("fetched");
    let key = format!("sources/{video}/source.mp4");
    let size = store.fetch(&key, &fetched, None).await.expect("the source");
    assert_eq!(size, bytes.len() as u64);
    let digest = |b: &[u8]| Sha256::digest(b).to_vec();
    assert_eq!(digest(&std::fs::read(&fetched).expect("fetched")), digest(bytes));
    assert_eq!(
        multipart_uploads(bucket),
        Vec::<Value>::new(),
        "no multipart upload is left"
    );
}
