//! The commands that run vodsource's long-lived roles, each the composition root's one call
//! with different [`Roles`]: `serve` (all of them, the embedded default), `api`, `projector`,
//! `encoder`, `relay` and `qoe-sink`. They run until SIGTERM or Ctrl-C, or until every
//! component has stopped by itself.

use anyhow::Context;
use vodsource_infra::open_object_store;

use crate::config::Config;
use crate::roles::Stores;
use crate::runtime::{self, Roles};
use crate::settings::{self, Settings};

/// `vodsource serve`: everything in one process, less what the configuration hands to other
/// processes (`no_projectors`, `encoders = 0`, `no_qoe_sink`).
///
/// # Errors
/// Configuration, stores, listeners, or a component that stopped with an error.
pub async fn run(config: &Config) -> anyhow::Result<()> {
    let o = config.options();
    let roles = Roles {
        projectors: !o.no_projectors.unwrap_or(false),
        encoders: o.encoders.unwrap_or_default() > 0,
        lake_sink: !o.no_qoe_sink.unwrap_or(false),
        ..Roles::SERVE
    };
    play(config, "serve", roles).await
}

/// `vodsource api`: the HTTP API alone (any number of processes behind a load balancer).
/// Beacons still go to the stream; projections, the supervisor, the watch state and the relay
/// are `vodsource projector` and `vodsource relay`, encoding is `vodsource encoder`, the lake
/// sink is `vodsource qoe-sink`.
///
/// # Errors
/// As [`run`].
pub async fn run_api(config: &Config) -> anyhow::Result<()> {
    play(config, "api", Roles::API).await
}

/// `vodsource projector`: the projection runners and the encoding supervisor; with a Kafka or
/// Kinesis stream, the watch-state consumer group too.
///
/// # Errors
/// As [`run`].
pub async fn run_projector(config: &Config) -> anyhow::Result<()> {
    play(config, "projector", Roles::PROJECTOR).await
}

/// `vodsource encoder`: encoding workers. A job in progress at shutdown fails as retryable,
/// so another worker takes it at once.
///
/// # Errors
/// As [`run`]; `encoders = 0`.
pub async fn run_encoder(config: &Config) -> anyhow::Result<()> {
    anyhow::ensure!(
        config.options().encoders.unwrap_or_default() > 0,
        "`vodsource encoder` runs at least one worker; encoders is 0"
    );
    play(config, "encoder", Roles::ENCODER).await
}

/// `vodsource relay`: every event of the store to the `video-events` stream (keyed by video
/// id, at least once). Any number may run: one holds the relay's lease, the others wait to
/// take over.
///
/// # Errors
/// As [`run`]; the embedded stream (it belongs to `serve`).
pub async fn run_relay(config: &Config) -> anyhow::Result<()> {
    play(config, "relay", Roles::RELAY).await
}

/// `vodsource qoe-sink`: the lake sink of the QoE and video-events streams. Members of one
/// consumer group share the partitions; a member killed at any moment loses nothing and
/// duplicates nothing (see `vodsource_lake::sink`).
///
/// # Errors
/// As [`run`]; a flush at shutdown that failed.
pub async fn run_qoe_sink(config: &Config) -> anyhow::Result<()> {
    play(config, "qoe-sink", Roles::QOE_SINK).await
}

async fn play(config: &Config, command: &str, roles: Roles) -> anyhow::Result<()> {
    let mut stores = Stores::open(config).await?;
    stores.supervision = settings::supervision(config);
    if let Some(max) = config.options().max_upload_bytes {
        stores.policy.max_source_bytes = max;
    }
    let settings = Settings::from_config(config, &stores.owner, roles)?;
    let objects = open_object_store(&config.object_store_url(), &settings.aws)
        .await
        .context("opening the object store")?;
    tracing::info!(
        command,
        event_store = %stores.log.describe(),
        object_store = %objects.describe(),
        stream = ?config.options().stream,
        owner = %stores.owner,
        ?roles,
        encoders = settings.workers.len(),
        "starting"
    );
    let running = runtime::start(stores, objects, settings, roles).await?;
    running.until_stopped_or(crate::cli::shutdown_signal()).await
}
