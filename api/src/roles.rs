//! The composition root: opens the configured stores and builds the runners and process
//! managers every role is made of.

use std::sync::Arc;

use anyhow::{bail, Context};
use vodsource_commands::ports::{Clock, EventLog, ObjectStore, StreamConsumer, SystemClock};
use vodsource_commands::process::VIDEO_EVENTS_TOPIC;
use vodsource_commands::process::{EncodingSupervisor, SupervisorConfig};
use vodsource_commands::{VideoCommands, VideoStore};
use vodsource_domain::{Policy, VideoServices};
use vodsource_encoder::{Worker, WorkerConfig};
use vodsource_infra::aws::AwsSettings;
use vodsource_infra::ShardCoordination;
use vodsource_infra::{open_event_log, open_view_store, StreamUrl, Streams, Views};
use vodsource_lake::sink::{LakeSink, SinkSettings, SINK_GROUP};
use vodsource_lake::tables;
use vodsource_projections::{
    rebuild, CatalogProjector, DeadLetterProjector, Projector, RebuildProgress, Runner, RunnerConfig, RunnerError,
    StatusProjector, PROJECTIONS,
};

use crate::config::Config;
use vodsource_qoe::QOE_TOPIC;

/// The opened stores of one process.
#[derive(Clone)]
pub struct Stores {
    /// The event store.
    pub log: Arc<dyn EventLog>,
    /// The view store (also checkpoints, leases and timeouts).
    pub views: Arc<dyn Views>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// This process's name in leases.
    pub owner: String,
    /// Deployment limits commands are decided with.
    pub policy: Policy,
    /// Attempts and backoff of the encoding supervisor.
    pub supervision: SupervisorConfig,
}

impl Stores {
    /// Opens what `config` names.
    ///
    /// # Errors
    /// A store that cannot be opened, with the store's own message.
    pub async fn open(config: &Config) -> anyhow::Result<Self> {
        Self::open_with(config, &AwsSettings::default()).await
    }

    /// Opens what `config` names, with `aws` overriding the AWS environment (DynamoDB).
    ///
    /// # Errors
    /// As [`Stores::open`].
    pub async fn open_with(config: &Config, aws: &AwsSettings) -> anyhow::Result<Self> {
        Self::open_inner(config, aws, false).await
    }

    /// Creates what the stores need (the DynamoDB tables) and opens them: `vodsource setup`.
    ///
    /// # Errors
    /// As [`Stores::open`].
    pub async fn create(config: &Config, aws: &AwsSettings) -> anyhow::Result<Self> {
        Self::open_inner(config, aws, true).await
    }

    async fn open_inner(config: &Config, aws: &AwsSettings, create: bool) -> anyhow::Result<Self> {
        let log = open_event_log(&config.event_store_url())
            .await
            .context("opening the event store")?;
        let views = open_view_store(&config.view_store_url(), aws, create)
            .await
            .context("opening the view store")?;
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into());
        Ok(Self {
            log,
            views,
            clock: Arc::new(SystemClock),
            policy: Policy::default(),
            supervision: SupervisorConfig::default(),
            owner: format!(
                "{host}-{}-{}",
                std::process::id(),
                &uuid::Uuid::now_v7().simple().to_string()[20..]
            ),
        })
    }

    /// Command handling over the event store.
    pub fn commands(&self) -> VideoCommands {
        let store = VideoStore::new(self.log.clone(), self.clock.clone(), 100_000);
        let mut services = VideoServices::new(self.clock.clone());
        services.policy = self.policy.clone();
        VideoCommands::new(store, services)
    }

    /// The encoding supervisor.
    pub fn supervisor(&self) -> EncodingSupervisor {
        EncodingSupervisor::new(
            self.commands(),
            self.log.clone(),
            self.views.clone(),
            self.views.clone(),
            self.views.clone(),
            self.views.clone(),
            self.clock.clone(),
            self.owner.clone(),
            self.supervision.clone(),
        )
    }

    /// The ingest of sources named by URL, into `objects` through `fetcher`.
    pub fn ingest(
        &self,
        objects: Arc<dyn ObjectStore>,
        fetcher: Arc<dyn vodsource_commands::ports::Fetcher>,
        config: vodsource_app::ingest::IngestConfig,
    ) -> vodsource_app::ingest::SourceIngest {
        vodsource_app::ingest::SourceIngest::new(
            self.commands(),
            self.log.clone(),
            self.views.clone(),
            self.views.clone(),
            objects,
            fetcher,
            self.clock.clone(),
            self.owner.clone(),
            config,
        )
    }

    /// The webhook dispatcher, sending through `sender` with secrets derived by `signer`.
    pub fn dispatcher(
        &self,
        sender: Arc<dyn vodsource_commands::ports::WebhookSender>,
        signer: vodsource_app::Signer,
        config: vodsource_app::webhooks::dispatch::DispatchConfig,
    ) -> vodsource_app::webhooks::dispatch::Dispatcher {
        vodsource_app::webhooks::dispatch::Dispatcher::new(
            self.commands(),
            self.log.clone(),
            self.views.clone(),
            self.views.clone(),
            self.views.clone(),
            sender,
            signer,
            self.clock.clone(),
            self.owner.clone(),
            config,
        )
    }

    /// An encoding worker over these stores and `objects`.
    pub fn worker(&self, objects: Arc<dyn ObjectStore>, config: WorkerConfig) -> Worker {
        Worker::new(self.commands(), self.views.clone(), objects, self.clock.clone(), config)
    }

    /// A runner for `projector`.
    pub fn runner<P: Projector>(&self, projector: P) -> Runner<P> {
        Runner::new(
            projector,
            self.log.clone(),
            self.views.clone(),
            self.views.clone(),
            self.clock.clone(),
            self.owner.clone(),
            RunnerConfig::default(),
        )
    }
}

impl Stores {
    /// Who keeps Kinesis consumers' shard leases and checkpoints: the view store.
    pub fn coordination(&self) -> ShardCoordination {
        ShardCoordination {
            checkpoints: self.views.clone(),
            leases: self.views.clone(),
            clock: self.clock.clone(),
            owner: self.owner.clone(),
        }
    }

    /// Opens the stream `url` names (Kinesis with `aws`) and makes sure its topics exist.
    ///
    /// # Errors
    /// The stream cannot be opened or its topics created.
    pub async fn open_stream(&self, url: &StreamUrl, aws: &AwsSettings) -> anyhow::Result<Streams> {
        let streams = Streams::open(url, self.coordination(), aws)
            .await
            .context("opening the stream")?;
        for topic in [QOE_TOPIC, VIDEO_EVENTS_TOPIC] {
            streams
                .ensure_topic(topic)
                .await
                .with_context(|| format!("creating the {topic} topic on {}", streams.describe()))?;
        }
        Ok(streams)
    }
}

/// The lake sinks: `qoe-events` into `qoe_events`, `video-events` into `video_events`.
///
/// # Errors
/// A consumer group member that cannot be made; a work folder that cannot be created.
pub fn lake_sinks(
    streams: &Streams,
    objects: &Arc<dyn ObjectStore>,
    settings: &SinkSettings,
) -> anyhow::Result<Vec<LakeSink<Box<dyn StreamConsumer>>>> {
    [
        (QOE_TOPIC, &tables::QOE_EVENTS),
        (VIDEO_EVENTS_TOPIC, &tables::VIDEO_EVENTS),
    ]
    .into_iter()
    .map(|(topic, table)| {
        let consumer = streams
            .consumer(topic, SINK_GROUP)
            .with_context(|| format!("opening the lake sink of {topic}"))?;
        LakeSink::new(consumer, topic, table, objects.clone(), settings.clone())
            .with_context(|| format!("starting the lake sink of {topic}"))
    })
    .collect()
}

/// Checks a projection name.
///
/// # Errors
/// When no projection has that name; the message lists the names.
pub fn check_projection(name: &str) -> anyhow::Result<()> {
    if PROJECTIONS.contains(&name) {
        Ok(())
    } else {
        bail!(
            "no projection named {name:?}; the projections are: {}",
            PROJECTIONS.join(", ")
        )
    }
}

/// Rebuilds the projection `name` into a shadow and swaps it in.
///
/// # Errors
/// An unknown name, a lease held by a running projector, an unreadable event, a store failure.
pub async fn rebuild_named(
    stores: &Stores,
    name: &str,
    progress: impl FnMut(RebuildProgress),
) -> Result<u64, RunnerError> {
    match name {
        CatalogProjector::NAME => rebuild_with(stores.runner(CatalogProjector), progress).await,
        StatusProjector::NAME => rebuild_with(stores.runner(StatusProjector), progress).await,
        _ => rebuild_with(stores.runner(DeadLetterProjector), progress).await,
    }
}

async fn rebuild_with<P: Projector>(
    mut runner: Runner<P>,
    progress: impl FnMut(RebuildProgress),
) -> Result<u64, RunnerError> {
    let result = rebuild(&mut runner, progress).await;
    let _ = runner.release().await;
    result
}
