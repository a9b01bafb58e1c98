//! vodsource's application layer: every use case the API offers, as services over the
//! ports, with no transport in sight.
//!
//! - [`Videos`]: the commands of one video — register (with its upload grant), record the
//!   upload, change, publish, unpublish, retry, delete (with its media) — each authorized
//!   against the video's owner, checked against `If-Match` and run at most once per
//!   idempotency key.
//! - [`Resumable`]: resumable uploads of a video's source (tus 1.0), straight into a
//!   multipart upload of the object store.
//! - [`ingest::SourceIngest`]: the process that fetches a source named by URL at
//!   registration.
//! - [`Catalog`]: the queries — the listing, one video, its encoding status, its history and
//!   its playback grant.
//! - [`Viewers`]: viewers' resume positions and their "continue watching" list.
//! - [`Beacons`]: players' QoE events, judged and appended to the QoE stream.
//! - [`Media`]: the files a playback grant's links name, from wherever they are stored.
//! - [`webhooks::Webhooks`]: webhook endpoints; [`webhooks::dispatch`] sends them the
//!   public events the log records.
//! - [`Admin`]: readiness, projections and their rebuilds, dead letters.
//!
//! A transport (the HTTP layer) parses a request, authenticates its [`Principal`], calls one
//! method and maps the answer or the [`AppError`]. The composition root builds one [`App`]
//! over the stores it opened.

pub mod admin;
pub mod beacons;
pub mod catalog;
pub mod cdn;
pub mod error;
mod follow;
mod idempotency;
pub mod ingest;
pub mod listing;
pub mod media;
pub mod principal;
pub mod resumable;
pub mod signing;
pub mod status;
pub mod uploads;
pub mod videos;
pub mod viewers;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use vodsource_commands::ports::{
    CheckpointStore, Clock, EventLog, IdempotencyStore, ObjectStore, StreamProducer, WebhookSender,
};
use vodsource_commands::VideoCommands;
use vodsource_projections::ViewStore;

pub use admin::Admin;
pub use beacons::Beacons;
pub use catalog::Catalog;
pub use error::{AppError, ErrorKind};
pub use idempotency::MAX_KEY_CHARS;
pub use media::Media;
pub use principal::{Principal, Role};
pub use resumable::Resumable;
pub use signing::Signer;
pub use status::VideoStatus;
pub use uploads::Uploads;
pub use videos::Videos;
pub use viewers::Viewers;

/// How long the answer "who may play this video" is kept for beacons (a fifth of it for a
/// video not published).
const PLAYABLE_TTL: Duration = Duration::from_secs(10);
/// Videos the beacons' cache holds at most.
const PLAYABLE_ENTRIES: usize = 100_000;

/// The ports the use cases run over, opened by the composition root.
#[derive(Clone)]
pub struct Ports {
    /// The command side (aggregate store over the event log).
    pub commands: VideoCommands,
    /// The event log (history, heads).
    pub log: Arc<dyn EventLog>,
    /// Read models.
    pub views: Arc<dyn ViewStore>,
    /// Idempotency keys.
    pub idempotency: Arc<dyn IdempotencyStore>,
    /// Sources and media.
    pub objects: Arc<dyn ObjectStore>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Where accepted QoE beacons go; `None` refuses beacons as unavailable.
    pub qoe: Option<Arc<dyn StreamProducer>>,
    /// The projection runners of this process, when it runs them (rebuilds go through them).
    pub rebuilds: Option<Arc<dyn admin::Rebuilds>>,
    /// Where webhook requests go (its checks judge endpoint URLs).
    pub webhooks: Arc<dyn WebhookSender>,
    /// The checkpoints of log consumers (how far each webhook endpoint is).
    pub checkpoints: Arc<dyn CheckpointStore>,
}

/// How the use cases behave.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The base URL clients reach this service at (upload and media links it serves).
    pub public_url: String,
    /// How long upload and playback grants work.
    pub url_ttl: Duration,
    /// How long an idempotency key is remembered.
    pub idempotency_ttl: Duration,
    /// The CDN media is fetched from, if any.
    pub cdn: Option<Arc<cdn::Cdn>>,
    /// How long a resumable upload lives after its last request.
    pub upload_expiry: Duration,
    /// Whether a registration's `source_url` may be `http` (else `https` only).
    pub ingest_allow_http: bool,
}

/// Told how long each command took (metrics).
pub trait Observer: Send + Sync {
    /// Command `name` ran for `elapsed`, successful or not.
    fn command(&self, name: &'static str, elapsed: Duration);
}

/// What every service shares.
pub(crate) struct Core {
    ports: Ports,
    settings: Settings,
    signer: Signer,
    uploads: Uploads,
    playable: beacons::PlayableCache,
    observer: Arc<dyn Observer>,
    registry: webhooks::RegistryStore,
}

/// The application: cheap to clone, one per process.
#[derive(Clone)]
pub struct App {
    core: Arc<Core>,
}

impl App {
    /// The application over `ports`. `signer` signs the links this service serves itself
    /// (embedded uploads and media).
    pub fn new(ports: Ports, settings: Settings, signer: Signer, observer: Arc<dyn Observer>) -> Self {
        Self {
            core: Arc::new(Core {
                registry: webhooks::RegistryStore::new(ports.log.clone()),
                ports,
                settings,
                signer,
                uploads: Uploads::default(),
                playable: beacons::PlayableCache::new(PLAYABLE_TTL, PLAYABLE_ENTRIES),
                observer,
            }),
        }
    }

    /// The commands of videos.
    pub fn videos(&self) -> Videos<'_> {
        Videos::new(&self.core)
    }

    /// Resumable uploads (tus) of videos' sources.
    pub fn resumable(&self) -> Resumable<'_> {
        Resumable::new(&self.core)
    }

    /// The queries of the catalog.
    pub fn catalog(&self) -> Catalog<'_> {
        Catalog::new(&self.core)
    }

    /// Delivery of encoded media through playback grants.
    pub fn media(&self) -> Media<'_> {
        Media::new(&self.core)
    }

    /// The operators' use cases.
    pub fn admin(&self) -> Admin<'_> {
        Admin::new(&self.core)
    }

    /// Player beacons.
    pub fn beacons(&self) -> Beacons<'_> {
        Beacons::new(&self.core)
    }

    /// The queries of viewers' watch state.
    pub fn viewers(&self) -> Viewers<'_> {
        Viewers::new(&self.core)
    }

    /// Webhook endpoints.
    pub fn webhooks(&self) -> webhooks::Webhooks<'_> {
        webhooks::Webhooks::new(&self.core)
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.core.settings
    }
}

impl Core {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.ports.clock.now()
    }

    /// When a grant issued now expires.
    fn grant_expiry(&self) -> chrono::DateTime<chrono::Utc> {
        self.now() + chrono::Duration::from_std(self.settings.url_ttl).unwrap_or(chrono::Duration::hours(1))
    }
}
