//! Starts a real server on an ephemeral port over a fresh data folder, mints tokens, and
//! drives the parts of a lifecycle no endpoint offers yet (an encoder's commands).

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{encode, EncodingKey, Header};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{json, Value};
use vodsource_api::config::{Config, Options};
use vodsource_api::http::auth::AuthSettings;
use vodsource_api::roles::Stores;
use vodsource_api::runtime::{Roles, Running};
use vodsource_api::settings::Settings as ServeSettings;
use vodsource_commands::ports::ObjectStore;
use vodsource_commands::CommandContext;
use vodsource_domain::{EncodeStage, EncodingCost, Manifests, Rendition, VideoCommand};
use vodsource_infra::open_object_store;

pub const SECRET: &str = "test-secret-0123456789abcdef-0123456789";

pub use vodsource_tests::TempDir;

pub struct Server {
    pub base: String,
    pub stores: Stores,
    pub objects: Arc<dyn ObjectStore>,
    pub running: Option<Running>,
    pub client: reqwest::Client,
    pub dir: TempDir,
}

pub fn settings() -> ServeSettings {
    ServeSettings {
        listen: "127.0.0.1:0".into(),
        public_url: None,
        auth: AuthSettings {
            hs256_secret: Some(SECRET.into()),
            jwks_file: None,
            issuer: None,
            audience: None,
            max_lifetime: None,
            rate_per_second: 10_000,
            burst: 10_000,
        },
        signing_secret: b"signing-secret-0123456789abcdef-0123".to_vec(),
        url_ttl: Duration::from_secs(600),
        idempotency_ttl: Duration::from_secs(3600),
        upload_expiry: Duration::from_secs(3600),
        grace: Duration::from_secs(5),
        workers: Vec::new(),
        stream: None,
        aws: vodsource_infra::aws::AwsSettings::default(),
        lake: None,
        cdn: None,
        limits: vodsource_api::http::limits::HttpLimits::default(),
        metrics_listen: None,
        fetch: vodsource_infra::egress::FetchSettings::default(),
        ingest: vodsource_app::ingest::IngestConfig::default(),
        send: vodsource_infra::egress::SendSettings::default(),
        dispatch: vodsource_app::webhooks::dispatch::DispatchConfig::default(),
    }
}

pub async fn server() -> Server {
    server_with(settings()).await
}

pub async fn server_with(settings: ServeSettings) -> Server {
    server_on(settings, None).await
}

#[cfg(feature = "distributed")]
/// A server whose event store is a fresh schema on the test PostgreSQL server.
pub async fn server_on_postgres() -> Server {
    let base =
        std::env::var("VODSOURCE_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}schema=t_api_{}", uuid::Uuid::now_v7().simple());
    server_on(settings(), Some(url)).await
}

#[cfg(feature = "distributed")]
/// A server in the distributed shape: events on a fresh PostgreSQL schema, views on fresh
/// DynamoDB tables (the AWS emulator).
pub async fn server_distributed() -> Server {
    server_distributed_with(settings()).await
}

#[cfg(feature = "distributed")]
/// As [`server_distributed`], with `settings`.
pub async fn server_distributed_with(settings: ServeSettings) -> Server {
    let base =
        std::env::var("VODSOURCE_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let sep = if base.contains('?') { '&' } else { '?' };
    let id = uuid::Uuid::now_v7().simple();
    let endpoint = std::env::var("VODSOURCE_TEST_AWS_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5000".into());
    let dir = TempDir::new();
    // What `vodsource setup` does first: the tables.
    let aws = vodsource_infra::aws::load(&vodsource_infra::aws::AwsSettings::emulator(&endpoint))
        .await
        .expect("AWS config");
    vodsource_infra::dynamodb::DynamoViewStore::new(&aws, &format!("t-{id}-"))
        .create_tables()
        .await
        .expect("DynamoDB tables (start the emulator with `scripts/services.sh start aws`)");
    let (stores, objects) = stores_with(
        &dir,
        Some(format!("{base}{sep}schema=t_api_{id}")),
        Some(format!("dynamodb://?prefix=t-{id}-")),
        &vodsource_infra::aws::AwsSettings::emulator(&endpoint),
    )
    .await;
    serve(dir, stores, objects, settings).await
}

#[cfg(feature = "distributed")]
/// A server whose object store is a fresh bucket on the S3 emulator (under `media-root/`);
/// returns it with the emulator's endpoint.
pub async fn server_on_s3() -> (Server, String) {
    server_on_s3_with(|_| settings()).await
}

#[cfg(feature = "distributed")]
/// As [`server_on_s3`], with the settings `settings` makes of the store's plain HTTP URL
/// (`<endpoint>/<bucket>/media-root/media`, where a CDN whose origin is the store's media
/// prefix would be).
pub async fn server_on_s3_with(settings: impl FnOnce(&str) -> ServeSettings) -> (Server, String) {
    let endpoint = std::env::var("VODSOURCE_TEST_AWS_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5000".into());
    let aws = vodsource_infra::aws::AwsSettings::emulator(&endpoint);
    let bucket = format!("t-{}", &uuid::Uuid::now_v7().simple().to_string()[..24]);
    let s3 = vodsource_infra::s3::S3ObjectStore::open(&format!("s3://{bucket}/media-root"), &aws)
        .await
        .expect("S3 store");
    s3.create_bucket()
        .await
        .expect("bucket (start the emulator with `scripts/services.sh start aws`)");
    let dir = TempDir::new();
    let (stores, _) = stores_in(&dir, None).await;
    let settings = settings(&format!("{endpoint}/{bucket}/media-root/media"));
    (serve(dir, stores, Arc::new(s3), settings).await, endpoint)
}

/// The stores of a server over `dir` (and `event_store` when given), as `serve` opens them.
pub async fn stores_in(dir: &TempDir, event_store: Option<String>) -> (Stores, Arc<dyn ObjectStore>) {
    stores_with(dir, event_store, None, &vodsource_infra::aws::AwsSettings::default()).await
}

async fn stores_with(
    dir: &TempDir,
    event_store: Option<String>,
    view_store: Option<String>,
    aws: &vodsource_infra::aws::AwsSettings,
) -> (Stores, Arc<dyn ObjectStore>) {
    let config = Config::resolve(Options {
        data_dir: Some(dir.path().to_path_buf()),
        event_store,
        view_store,
        ..Options::default()
    });
    let mut stores = match Stores::open_with(&config, aws).await {
        Ok(stores) => stores,
        Err(e) => panic!(
            "the stores did not open ({e:#}); for PostgreSQL start it with `pg_ctlcluster \
             --skip-systemctl-redirect $(ls /etc/postgresql) main start`, for DynamoDB \
             `scripts/services.sh start aws`, or run scripts/test.sh"
        ),
    };
    stores.policy.max_source_bytes = 10 * 1024 * 1024;
    let objects = open_object_store(
        &format!("file://{}", dir.path().join("objects").display()),
        &vodsource_infra::aws::AwsSettings::default(),
    )
    .await
    .expect("objects");
    (stores, objects)
}

/// As [`server_with`], every part of the server reading time from `clock`.
pub async fn server_with_clock(settings: ServeSettings, clock: Arc<dyn vodsource_commands::ports::Clock>) -> Server {
    let dir = TempDir::new();
    let (mut stores, objects) = stores_in(&dir, None).await;
    stores.clock = clock;
    serve(dir, stores, objects, settings).await
}

pub async fn server_on(settings: ServeSettings, event_store: Option<String>) -> Server {
    let dir = TempDir::new();
    let (stores, objects) = stores_in(&dir, event_store).await;
    serve(dir, stores, objects, settings).await
}

async fn serve(dir: TempDir, stores: Stores, objects: Arc<dyn ObjectStore>, settings: ServeSettings) -> Server {
    let running = vodsource_api::runtime::start(stores.clone(), objects.clone(), settings, Roles::SERVE)
        .await
        .expect("server starts");
    Server {
        base: running.endpoints().public_url.clone(),
        stores,
        objects,
        running: Some(running),
        client: reqwest::Client::new(),
        dir,
    }
}

/// A bearer token for `subject` with `role`, valid for an hour.
pub fn token(subject: &str, role: &str) -> String {
    token_with(json!({ "sub": subject, "role": role, "exp": exp(3600) }), SECRET)
}

pub fn exp(in_secs: i64) -> i64 {
    chrono::Utc::now().timestamp() + in_secs
}

pub fn token_with(claims: Value, secret: &str) -> String {
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("token")
}

pub fn register_body(title: &str, size: u64) -> Value {
    json!({
        "title": title,
        "description": "a test video",
        "tags": ["Test", "demo"],
        "filename": "clip.mp4",
        "content_type": "video/mp4",
        "size_bytes": size,
    })
}

/// A response's status and JSON body (`Null` when not JSON).
pub async fn parts(response: Response) -> (StatusCode, Value) {
    let status = response.status();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

pub fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no error code>")
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn req(&self, method: Method, path: &str, token: &str) -> RequestBuilder {
        self.client.request(method, self.url(path)).bearer_auth(token)
    }

    pub async fn send(&self, request: RequestBuilder) -> (StatusCode, Value) {
        parts(request.send().await.expect("request")).await
    }

    /// Registers a video as `owner` and returns (id, upload url).
    pub async fn register(&self, owner: &str, title: &str, size: u64) -> (String, String) {
        let (status, body) = self
            .send(
                self.req(Method::POST, "/v1/videos", &token(owner, "creator"))
                    .json(&register_body(title, size)),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        (
            body["video_id"].as_str().expect("id").to_owned(),
            body["upload"]["url"].as_str().expect("url").to_owned(),
        )
    }

    /// Registers, uploads and completes the upload: the video is queued for encoding.
    pub async fn uploaded(&self, owner: &str, title: &str) -> String {
        let bytes = b"not really a video, but the right size".to_vec();
        let (id, url) = self.register(owner, title, bytes.len() as u64).await;
        let put = self.client.put(&url).body(bytes).send().await.expect("put");
        assert_eq!(put.status(), StatusCode::OK);
        let (status, body) = self
            .send(self.req(
                Method::POST,
                &format!("/v1/videos/{id}/upload-complete"),
                &token(owner, "creator"),
            ))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        id
    }

    /// A video of `owner`, encoded (as [`Server::encode`] does) and published, once the
    /// catalog says so.
    pub async fn published(&self, owner: &str, title: &str) -> String {
        let id = self.uploaded(owner, title).await;
        self.encode(&id).await;
        self.until_catalog(&id, "ready", |v| v["status"] == "ready").await;
        let (status, body) = self
            .send(self.req(
                Method::POST,
                &format!("/v1/videos/{id}/publish"),
                &token(owner, "creator"),
            ))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        self.until_catalog(&id, "published", |v| v["published"] == true).await;
        id
    }

    /// The encoding attempt the supervisor requested for `id`, once it has.
    pub async fn requested_attempt(&self, id: &str) -> u32 {
        let commands = self.stores.commands();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let loaded = commands.store().load(id).await.expect("load");
            if loaded.video.attempt > 0 {
                return loaded.video.attempt;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no encoding was requested for {id}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Plays an encoder's part: claims the queued attempt, encodes one rung, writes
    /// manifests into the object store and completes.
    /// Records a whole successful attempt; returns the global position of its completion.
    pub async fn encode(&self, id: &str) -> u64 {
        let commands = self.stores.commands();
        let ctx = CommandContext::actor("test-encoder");
        let attempt = self.requested_attempt(id).await;
        let run = |cmd: VideoCommand| {
            let commands = commands.clone();
            let ctx = ctx.clone();
            async move { commands.execute(id, cmd, &ctx).await.expect("encoder command") }
        };
        let worker = "worker-1".to_owned();
        run(VideoCommand::ClaimEncoding {
            worker_id: worker.clone(),
            attempt,
            lease_secs: 60,
        })
        .await;
        run(VideoCommand::RecordProgress {
            worker_id: worker.clone(),
            attempt,
            stage: EncodeStage::Encode,
            rendition: Some("360p".into()),
            percent: 50.0,
            fps: Some(120.0),
            eta_seconds: Some(1),
            lease_secs: 60,
        })
        .await;
        let root = self.dir.path().join("objects").join("media").join(id).join("1");
        std::fs::create_dir_all(&root).expect("media dir");
        std::fs::write(root.join("master.m3u8"), MASTER).expect("master");
        std::fs::write(root.join("manifest.mpd"), "<MPD/>").expect("mpd");
        run(VideoCommand::RecordRendition {
            worker_id: worker.clone(),
            attempt,
            rendition: Rendition {
                name: "360p".into(),
                width: 640,
                height: 360,
                bitrate_bps: 800_000,
                codecs: "avc1.64001e".into(),
                playlist_key: format!("media/{id}/1/360p.m3u8"),
                bytes: 1000,
            },
        })
        .await;
        run(VideoCommand::CompleteEncoding {
            worker_id: worker,
            attempt,
            manifests: Manifests {
                hls_master_key: format!("media/{id}/1/master.m3u8"),
                dash_mpd_key: format!("media/{id}/1/manifest.mpd"),
            },
            poster_key: Some(format!("media/{id}/1/poster.jpg")),
            thumbnails_key: None,
            duration_ms: 4000,
            cost: EncodingCost::default(),
        })
        .await
        .position
        .expect("completion recorded")
    }

    /// Waits until the catalog shows the video with `check` true (as admin).
    pub async fn until_catalog(&self, id: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (status, body) = self
                .send(self.req(Method::GET, &format!("/v1/videos/{id}"), &token("root", "admin")))
                .await;
            if status == StatusCode::OK && check(&body) {
                return body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until `GET path` answers `status` (as admin).
    pub async fn until_status(&self, path: &str, status: StatusCode) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (got, body) = self.send(self.req(Method::GET, path, &token("root", "admin"))).await;
            if got == status {
                return body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {status} from {path}: {got} {body}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops this process and starts another over the same stores (on a new port), as a
    /// replacement after a crash or a deploy would.
    pub async fn restart(&mut self, settings: ServeSettings) {
        if let Some(running) = self.running.take() {
            running.shutdown().await.expect("clean shutdown");
        }
        let running = vodsource_api::runtime::start(self.stores.clone(), self.objects.clone(), settings, Roles::SERVE)
            .await
            .expect("server restarts");
        self.base = running.endpoints().public_url.clone();
        self.running = Some(running);
    }

    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await.expect("clean shutdown");
        }
    }
}

pub const MASTER: &str = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360\n360p.m3u8\n";
