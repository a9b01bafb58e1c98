//! `vodsource projector`: the projection runners and the encoding supervisor, without the
//! HTTP API, until SIGTERM or Ctrl-C; with a Kafka or Kinesis stream, the watch-state consumer
//! group too.

use anyhow::Context;
use vodsource_infra::aws::AwsSettings;
use vodsource_infra::StreamUrl;

use crate::config::Config;
use crate::http::control::Control;
use crate::roles::Stores;
use vodsource_qoe::QOE_TOPIC;

/// `vodsource projector` flags.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    supervision: super::encoding::SupervisionArgs,
}

/// Runs the components until a shutdown signal; a component that stops with an error does not
/// stop the others, and makes the exit status a failure.
///
/// # Errors
/// The stores cannot be opened, or a component stopped with an error.
pub async fn run(config: &Config, args: Args) -> anyhow::Result<()> {
    let mut stores = Stores::open(config).await?;
    stores.supervision = args.supervision.config();
    tracing::info!(event_store = %stores.log.describe(), owner = %stores.owner, "projector starting");
    let url = config.stream_url()?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let watch_state = if matches!(url, StreamUrl::Embedded(_)) {
        None // the embedded stream belongs to `serve`, which folds the watch state itself
    } else {
        let streams = stores.open_stream(&url, &AwsSettings::default()).await?;
        let consumer = streams
            .consumer(QOE_TOPIC, "watch-state")
            .context("opening the watch-state consumer group")?;
        let runner = vodsource_projections::WatchStateRunner::new(
            consumer,
            stores.views.clone(),
            stores.views.clone(),
            stores.clock.clone(),
            stores.owner.clone(),
        );
        let mut stopped = stopped.clone();
        Some(tokio::spawn(runner.run(async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        })))
    };
    let control = Control::start(stores);
    crate::cli::shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = stop.send(true);
    let mut failures = control.shutdown().await;
    if let Some(task) = watch_state {
        if let Err(e) = task
            .await
            .map_err(anyhow::Error::from)
            .and_then(|r| r.map_err(anyhow::Error::from))
        {
            tracing::error!(error = %e, "the watch-state runner stopped with an error");
            failures += 1;
        }
    }
    if failures > 0 {
        anyhow::bail!("{failures} component(s) stopped with errors; see `vodsource projections`");
    }
    Ok(())
}
