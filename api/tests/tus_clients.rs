//! Published tus clients against `vodsource serve` (embedded), through a TCP proxy that
//! breaks their connections at random points of the upload: tus-js-client in Node (one PATCH
//! of everything left, so what arrived before a cut is kept) and tuspy (64 MiB chunks with
//! SHA-1 checksums, so a cut chunk is dropped whole). Each uploads a 300 MiB source,
//! resuming after every cut from the offset the server acknowledged; the stored source is
//! byte-identical (SHA-256), and the upload is recorded and encoding requested once.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::relay::Relay;
use common::{serve_on_any_port, uploaded_once, Children, BIN, LOG_WITH_ADDRESS};
use rand::Rng;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const SECRET: &str = "tus-clients-test-secret-0123456789-0123456789";
/// The source's size.
const SIZE: u64 = 300 * 1024 * 1024;
/// Connections the proxy breaks during an upload.
const CUTS: usize = 3;

/// `vodsource` over `data` with authentication on and no encoder (encoding is requested,
/// never run: the source is not a video).
fn vodsource(data: &Path) -> Command {
    let mut command = Command::new(BIN);
    command
        .arg("--data-dir")
        .arg(data)
        .env("VODSOURCE_JWT_SECRET", SECRET)
        .env("VODSOURCE_ENCODERS", "0")
        .env("VODSOURCE_LOG", "warn");
    command
}

fn token(data: &Path) -> String {
    let output = vodsource(data)
        .args(["token", "--sub", "alice", "--role", "creator"])
        .output()
        .expect("token");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A file of `SIZE` bytes in which no two MiB are alike.
fn source(path: &Path) -> [u8; 32] {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).expect("create the source"));
    let mut hash = Sha256::new();
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut block = vec![0u8; 1024 * 1024];
    for _ in 0..SIZE / block.len() as u64 {
        for word in block.chunks_exact_mut(8) {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            word.copy_from_slice(&state.to_le_bytes());
        }
        std::io::Write::write_all(&mut file, &block).expect("write the source");
        hash.update(&block);
    }
    std::io::Write::flush(&mut file).expect("flush");
    hash.finalize().into()
}

fn sha256_of(path: &Path) -> [u8; 32] {
    let mut file = std::fs::File::open(path).expect("the stored source");
    let mut hash = Sha256::new();
    std::io::copy(&mut file, &mut hash).expect("read the stored source");
    hash.finalize().into()
}

/// Runs a client (under `timeout 300`) to its end: the JSON line it printed last.
fn run_client(mut command: Command) -> Value {
    let output = command
        .stdin(Stdio::null())
        .output()
        .expect("the client runs (scripts/services.sh start tus-clients installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let result: Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no result from the client: {stdout}\n{stderr}"));
    assert!(
        output.status.success() && result["error"].is_null(),
        "the client failed: {result}\n{stderr}"
    );
    result
}

struct Run {
    _children: Children,
    data: PathBuf,
    base: String,
    token: String,
    client: reqwest::Client,
    video: String,
    file: PathBuf,
    digest: [u8; 32],
    proxy: Relay,
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// A server, a registered video of `SIZE` bytes, its source file, and a proxy that cuts at
/// `CUTS` random points of the first nine tenths of the upload.
async fn start(name: &str) -> Run {
    let data = std::env::temp_dir().join(format!("vodsource-tus-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).expect("data dir");
    let file = data.join("source.bin");
    let digest = source(&file);
    let token = token(&data);
    let mut command = vodsource(&data);
    command
        .env("VODSOURCE_LOG", LOG_WITH_ADDRESS)
        .args(["--log-json", "serve", "--listen", "127.0.0.1:0"]);
    let (child, base) = serve_on_any_port(command);
    let children = Children(vec![child]);
    let client = reqwest::Client::new();
    let registered: Value = client
        .post(format!("{base}/v1/videos"))
        .bearer_auth(&token)
        .json(&json!({
            "title": format!("tus {name}"),
            "filename": "source.mp4",
            "content_type": "video/mp4",
            "size_bytes": SIZE,
        }))
        .send()
        .await
        .expect("register")
        .json()
        .await
        .expect("json");
    let video = registered["video_id"].as_str().expect("video id").to_owned();
    let mut rng = rand::thread_rng();
    let cut_at: Vec<u64> = (0..CUTS).map(|_| rng.gen_range(SIZE / 10..SIZE * 9 / 10)).collect();
    eprintln!("{name}: cutting after {cut_at:?} bytes");
    let target: SocketAddr = base.trim_start_matches("http://").parse().expect("address");
    let proxy = Relay::start(target, cut_at).await;
    Run {
        _children: children,
        data,
        base,
        token,
        client,
        video,
        file,
        digest,
        proxy,
    }
}

/// After the client's run: every cut happened, the source is byte-identical, and the
/// upload was recorded and encoding requested exactly once.
async fn check(run: &Run) {
    assert_eq!(run.proxy.cuts(), CUTS, "every cut happened mid-upload");
    let stored = run.data.join("objects/sources").join(&run.video).join("source.mp4");
    assert_eq!(
        sha256_of(&stored),
        run.digest,
        "the stored source is the file, byte for byte"
    );
    uploaded_once(&run.client, &run.base, &run.token, &run.video).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tus_js_client_resumes_after_every_cut_and_the_source_arrives_whole() {
    let run = start("js").await;
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("../web");
    let mut node = Command::new("timeout");
    node.args(["300", "node"])
        .arg(web.join("e2e/tus-upload.mjs"))
        .env("ENDPOINT", format!("http://{}/v1/uploads", run.proxy.addr))
        .env("FILE", &run.file)
        .env("VIDEO_ID", &run.video)
        .env("TOKEN", &run.token);
    let result = tokio::task::spawn_blocking(move || run_client(node))
        .await
        .expect("client");
    eprintln!("tus-js-client: {result}");
    assert!(result["retries"].as_u64().unwrap_or(0) >= CUTS as u64, "{result}");
    // It resumed from the server's offsets, which moved on between cuts.
    let offsets: Vec<u64> = result["offsets"]
        .as_array()
        .expect("offsets")
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    assert!(
        offsets.windows(2).all(|w| w[0] <= w[1]) && offsets.iter().any(|&o| o > 0),
        "{offsets:?}"
    );
    check(&run).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tuspy_resumes_chunk_by_chunk_with_checksums_and_the_source_arrives_whole() {
    let run = start("py").await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/src/tus_upload.py");
    let mut python = Command::new("timeout");
    python
        .args(["300", "python3"])
        .arg(script)
        .env("ENDPOINT", format!("http://{}/v1/uploads", run.proxy.addr))
        .env("FILE", &run.file)
        .env("VIDEO_ID", &run.video)
        .env("TOKEN", &run.token)
        .env("CHUNK", (64 * 1024 * 1024).to_string());
    let result = tokio::task::spawn_blocking(move || run_client(python))
        .await
        .expect("client");
    eprintln!("tuspy: {result}");
    assert_eq!(result["offset"].as_u64(), Some(SIZE), "{result}");
    check(&run).await;
}
