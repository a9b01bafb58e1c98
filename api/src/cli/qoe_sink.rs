//! `vodsource qoe-sink`: the lake sink of the QoE and video-events streams in its own process
//! (the distributed shape; `serve --no-qoe-sink` leaves it to these), until SIGTERM or Ctrl-C.
//! Members of one consumer group share the partitions; a member killed at any moment loses
//! nothing and duplicates nothing (see `vodsource_lake::sink`).

use anyhow::Context;
use vodsource_infra::open_object_store;

use crate::config::Config;
use crate::roles::{lake_sinks, Stores};

/// `vodsource qoe-sink` flags.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Object store URL of the lake [default: file://<data dir>/objects].
    #[arg(long, env = "VODSOURCE_OBJECT_STORE")]
    object_store: Option<String>,
    /// Flush a lake file when it reaches this many bytes [default: 134217728 (128 MiB)].
    #[arg(long, env = "VODSOURCE_LAKE_FLUSH_BYTES")]
    lake_flush_bytes: Option<u64>,
    /// Flush a lake file when its oldest record is this many seconds old [default: 60].
    #[arg(long, env = "VODSOURCE_LAKE_FLUSH_SECS")]
    lake_flush_secs: Option<u64>,
}

/// Runs the sinks until a shutdown signal, then flushes what they have read.
///
/// # Errors
/// Stores, stream or object store that cannot be opened; a flush at shutdown that failed.
pub async fn run(config: &Config, args: Args) -> anyhow::Result<()> {
    let stores = Stores::open(config).await?;
    let settings = super::serve::lake_settings(config, args.lake_flush_bytes, args.lake_flush_secs)?;
    let objects = open_object_store(
        &config.object_store_url(args.object_store),
        &vodsource_infra::aws::AwsSettings::default(),
    )
    .await
    .context("opening the object store")?;
    let streams = stores
        .open_stream(&config.stream_url()?, &vodsource_infra::aws::AwsSettings::default())
        .await?;
    tracing::info!(stream = %streams.describe(), object_store = %objects.describe(), owner = %stores.owner, "qoe-sink starting");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    for sink in lake_sinks(&streams, &objects, &settings)? {
        let mut stopped = stopped.clone();
        tasks.spawn(sink.run(async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }));
    }
    crate::cli::shutdown_signal().await;
    tracing::info!("shutting down: flushing what was read");
    let _ = stop.send(true);
    let mut failures = 0;
    while let Some(result) = tasks.join_next().await {
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                failures += 1;
                tracing::error!(error = %e, "a lake sink's last flush failed; its records will be read again");
            }
            Err(e) => {
                failures += 1;
                tracing::error!(error = %e, "a lake sink task failed");
            }
        }
    }
    anyhow::ensure!(failures == 0, "{failures} lake sink(s) stopped with errors");
    Ok(())
}
