//! Clips made at test time with FFmpeg's lavfi sources, ffprobe as the independent reader of
//! outputs, and stores like `vodsource serve` opens them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use vodsource_api::config::Config;
use vodsource_api::roles::Stores;
use vodsource_commands::ports::ObjectStore;
use vodsource_commands::CommandContext;
use vodsource_domain::{VideoCommand, VideoEvent};
use vodsource_infra::open_object_store;
use vodsource_tests::TempDir;

fn tool(name: &str) -> Command {
    let mut command = Command::new(name);
    command.arg("-v").arg("error");
    command
}

fn run(mut command: Command) -> Vec<u8> {
    let output = command.output().unwrap_or_else(|e| {
        panic!("{command:?} did not start ({e}); install FFmpeg with `scripts/services.sh start ffmpeg`")
    });
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// Makes `dir/name` with `ffmpeg -y <args> <dir/name>`.
pub fn clip(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let mut command = tool("ffmpeg");
    command.arg("-y").args(args).arg(&path);
    run(command);
    path
}

/// A test-pattern clip with a tone: `size` like `1280x720`, `rate` frames/s, `seconds`.
pub fn pattern(dir: &Path, name: &str, size: &str, rate: u32, seconds: u32) -> PathBuf {
    clip(
        dir,
        name,
        &[
            "-f",
            "lavfi",
            "-i",
            &format!("testsrc2=size={size}:rate={rate}"),
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=44100",
            "-t",
            &seconds.to_string(),
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-c:a",
            "aac",
            "-shortest",
        ],
    )
}

/// Sets the display matrix of an MP4's first track to "turn 90° clockwise", as phones record
/// portrait video (FFmpeg 5.1's CLI cannot write it).
pub fn rotate_90(path: &Path) {
    let mut bytes = std::fs::read(path).expect("read mp4");
    let tkhd = bytes.windows(4).position(|w| w == b"tkhd").expect("a tkhd box");
    // version 0 tkhd: the matrix follows 40 bytes of fields after the box type.
    let matrix: [i32; 9] = [0, 65536, 0, -65536, 0, 0, 0, 0, 0x4000_0000];
    for (i, value) in matrix.iter().enumerate() {
        let at = tkhd + 44 + i * 4;
        bytes[at..at + 4].copy_from_slice(&value.to_be_bytes());
    }
    std::fs::write(path, bytes).expect("write mp4");
}

/// ffprobe's JSON for `path` with `args` (such as `-show_streams`).
pub fn ffprobe(path: &Path, args: &[&str]) -> Value {
    let mut command = tool("ffprobe");
    command.args(args).args(["-of", "json"]).arg(path);
    let out = run(command);
    serde_json::from_slice(&out).expect("ffprobe prints JSON")
}

/// The video packets of `path`: (pts seconds, keyframe).
pub fn video_packets(path: &Path) -> Vec<(f64, bool)> {
    let json = ffprobe(
        path,
        &["-select_streams", "v:0", "-show_entries", "packet=pts_time,flags"],
    );
    let mut packets: Vec<(f64, bool)> = json["packets"]
        .as_array()
        .expect("packets")
        .iter()
        .map(|p| {
            let pts: f64 = p["pts_time"].as_str().and_then(|t| t.parse().ok()).expect("pts_time");
            (pts, p["flags"].as_str().is_some_and(|f| f.starts_with('K')))
        })
        .collect();
    packets.sort_by(|a, b| a.0.total_cmp(&b.0));
    packets
}

/// Stores over a fresh data folder, as `vodsource serve` opens them.
pub struct World {
    pub stores: Stores,
    pub objects: Arc<dyn ObjectStore>,
    pub dir: TempDir,
}

impl World {
    pub async fn new() -> Self {
        let dir = TempDir::new();
        let config = Config {
            data_dir: dir.path().join("data"),
            event_store: None,
            view_store: None,
        };
        let mut stores = Stores::open(&config).await.expect("stores open");
        stores.supervision.backoff_base_secs = 0;
        let objects = open_object_store(&format!("file://{}", config.data_dir.join("objects").display()))
            .await
            .expect("object store opens");
        Self { stores, objects, dir }
    }

    pub fn work_dir(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    /// Registers a video, stores `source` as its upload, and lets the supervisor queue the job.
    pub async fn uploaded(&self, source: &Path) -> String {
        let id = uuid::Uuid::now_v7().to_string();
        let size = std::fs::metadata(source).expect("source").len();
        let context = CommandContext::actor("tester");
        let commands = self.stores.commands();
        let register = VideoCommand::Register {
            owner: "tester".into(),
            title: "clip".into(),
            description: String::new(),
            tags: vec![],
            filename: "clip.mp4".into(),
            content_type: "video/mp4".into(),
            size_bytes: size.max(1),
        };
        commands.execute(&id, register, &context).await.expect("registered");
        let key = format!("sources/{id}/clip.mp4");
        let body = tokio::fs::File::open(source).await.expect("source opens");
        self.objects.put(&key, Box::new(body), u64::MAX).await.expect("stored");
        let complete = VideoCommand::CompleteUpload {
            object_key: key,
            size_bytes: size.max(1),
            checksum: None,
        };
        commands.execute(&id, complete, &context).await.expect("uploaded");
        self.supervise().await;
        id
    }

    /// One pass of the supervisor over the log (offers jobs, requeues failures).
    pub async fn supervise(&self) {
        self.stores
            .supervisor()
            .catch_up()
            .await
            .expect("supervisor catches up");
    }

    /// Every event of video `id`, decoded.
    pub async fn history(&self, id: &str) -> Vec<VideoEvent> {
        let events = self.stores.log.read_stream(id, 0, 10_000).await.expect("stream reads");
        let decoder = vodsource_commands::codec::Decoder::new();
        events.iter().map(|e| decoder.decode(e).expect("decodes")).collect()
    }

    /// Waits until `check` holds for the history of `id`.
    pub async fn wait_for_event(&self, id: &str, what: &str, check: impl Fn(&VideoEvent) -> bool) {
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            if self.history(id).await.iter().any(&check) {
                return;
            }
            assert!(Instant::now() < until, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
