//! Clips made at test time with FFmpeg's lavfi sources, ffprobe as the independent reader of
//! outputs, and stores like `vodsource serve` opens them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vodsource_api::config::{Config, Options};
use vodsource_api::roles::Stores;
use vodsource_commands::ports::ObjectStore;
use vodsource_commands::CommandContext;
use vodsource_domain::{VideoCommand, VideoEvent};
use vodsource_encoder::{Worker, WorkerConfig, WorkerError};
use vodsource_infra::open_object_store;
pub use vodsource_tests::clips::{clip, ffprobe, pattern, pattern_with, rotate_90, video_packets};
use vodsource_tests::TempDir;

/// Stores over a fresh data folder, as `vodsource serve` opens them.
pub struct World {
    pub stores: Stores,
    pub objects: Arc<dyn ObjectStore>,
    pub dir: TempDir,
}

impl World {
    pub async fn new() -> Self {
        let dir = TempDir::new();
        let config = Config::resolve(Options {
            data_dir: Some(dir.path().join("data")),
            ..Options::default()
        });
        let mut stores = Stores::open(&config).await.expect("stores open");
        stores.supervision.backoff_base_secs = 0;
        let objects = open_object_store(
            &format!("file://{}", config.data_dir.join("objects").display()),
            &vodsource_infra::aws::AwsSettings::default(),
        )
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
            source_url: None,
            publish_when_playable: false,
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

/// A worker over `world`'s stores with the tests' progress interval and lease.
pub fn worker(world: &World, name: &str) -> Worker {
    worker_with(world, name, |_| {})
}

/// A worker with the tests' progress interval and lease, then `configure`d.
pub fn worker_with(world: &World, name: &str, configure: impl FnOnce(&mut WorkerConfig)) -> Worker {
    let mut config = WorkerConfig::new(name, world.work_dir());
    config.progress_every = Duration::from_millis(200);
    config.lease_secs = 10;
    configure(&mut config);
    world.stores.worker(world.objects.clone(), config)
}

/// A worker running in a task of its own until [`Running::stop`] (the shutdown `serve` sends
/// on SIGTERM).
pub struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), WorkerError>>,
}

impl Running {
    pub fn spawn(worker: Worker) -> Self {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(worker.run(async {
            let _ = stopped.await;
        }));
        Self { stop, task }
    }

    /// Asks the worker to stop; it must return without error within seconds.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("stops within seconds")
            .expect("joins")
            .expect("no error");
    }
}
