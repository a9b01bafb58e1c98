//! `vodsource relay`: publishes every event of the event store to the `video-events` stream
//! (keyed by video id, at least once) until SIGTERM or Ctrl-C. Any number may run: one holds
//! the relay's lease and the others wait to take over.

use anyhow::Context;
use vodsource_infra::aws::AwsSettings;
use vodsource_infra::StreamUrl;

use crate::config::Config;
use crate::roles::Stores;

/// Runs the relay until a shutdown signal.
///
/// # Errors
/// The stores or the stream cannot be opened (the embedded stream belongs to `serve`), or the
/// relay stopped with an error.
pub async fn run(config: &Config) -> anyhow::Result<()> {
    let url = config.stream_url()?;
    anyhow::ensure!(
        !matches!(url, StreamUrl::Embedded(_)),
        "the embedded stream belongs to `vodsource serve`; `vodsource relay` needs VODSOURCE_STREAM=kafka://… or kinesis://"
    );
    let stores = Stores::open(config).await?;
    let streams = stores.open_stream(&url, &AwsSettings::default()).await?;
    tracing::info!(event_store = %stores.log.describe(), stream = %streams.describe(), owner = %stores.owner, "relay starting");
    let relay = vodsource_commands::process::Relay::new(
        stores.log.clone(),
        streams.producer(),
        stores.views.clone(),
        stores.views.clone(),
        stores.clock.clone(),
        stores.owner.clone(),
    );
    relay
        .run(crate::cli::shutdown_signal())
        .await
        .context("the video-events relay stopped")
}
