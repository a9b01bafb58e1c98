//! `vodsource encoder`: encoding workers without the API, until SIGTERM or Ctrl-C. Run any
//! number of them on any machines that reach the event store, view store and object store.

use anyhow::Context;
use vodsource_infra::open_object_store;

use super::encoding::WorkerArgs;
use crate::config::Config;
use crate::http::control::Tasks;
use crate::roles::Stores;

/// `vodsource encoder` flags.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Workers in this process; each encodes one video at a time with every core [default: 1].
    #[arg(long, env = "VODSOURCE_ENCODERS", default_value_t = 1)]
    pub workers: usize,
    /// Object store URL [default: file://<data dir>/objects].
    #[arg(long, env = "VODSOURCE_OBJECT_STORE")]
    pub object_store: Option<String>,
    #[command(flatten)]
    pub worker: WorkerArgs,
}

/// Runs the workers until a shutdown signal. A job in progress then fails as retryable, so
/// another worker takes it at once.
///
/// # Errors
/// The stores cannot be opened, the ladder file is invalid, or a worker stopped with an error.
pub async fn run(config: &Config, args: Args) -> anyhow::Result<()> {
    let stores = Stores::open(config).await?;
    let objects = open_object_store(
        &config.object_store_url(args.object_store),
        &vodsource_infra::aws::AwsSettings::default(),
    )
    .await
    .context("opening the object store")?;
    let configs = args.worker.configs(config, &stores.owner, args.workers.max(1))?;
    tracing::info!(
        event_store = %stores.log.describe(),
        object_store = %objects.describe(),
        workers = configs.len(),
        "encoder starting"
    );
    let mut workers = Tasks::default();
    workers.workers(configs.into_iter().map(|c| stores.worker(objects.clone(), c)).collect());
    crate::cli::shutdown_signal().await;
    tracing::info!("shutting down: failing jobs in progress as retryable");
    let failures = workers.shutdown().await;
    anyhow::ensure!(failures == 0, "{failures} worker(s) stopped with errors");
    Ok(())
}
