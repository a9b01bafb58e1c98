use tokio::sync::watch;
use vodsource_projections::{CatalogProjector, DeadLetterProjector, StatusProjector};

use crate::config::Config;
use crate::roles::Stores;

#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs every projection runner and the supervisor until a shutdown signal; each stops
/// after finishing its current batch, so checkpoints are written.
pub async fn run(config: &Config, _args: Args) -> anyhow::Result<()> {
    let stores = Stores::open(config).await?;
    tracing::info!(event_store = %stores.log.describe(), owner = %stores.owner, "projector starting");
    let (stop, stopped) = watch::channel(false);
    let until = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let mut tasks = tokio::task::JoinSet::new();
    {
        let r = stores.runner(CatalogProjector);
        let s = until(stopped.clone());
        tasks.spawn(async move { r.run(s).await.map_err(|e| e.to_string()) });
    }
    {
        let r = stores.runner(StatusProjector);
        let s = until(stopped.clone());
        tasks.spawn(async move { r.run(s).await.map_err(|e| e.to_string()) });
    }
    {
        let r = stores.runner(DeadLetterProjector);
        let s = until(stopped.clone());
        tasks.spawn(async move { r.run(s).await.map_err(|e| e.to_string()) });
    }
    {
        let supervisor = stores.supervisor();
        let s = until(stopped.clone());
        tasks.spawn(async move { supervisor.run(s).await.map_err(|e| e.to_string()) });
    }
    let mut failures = 0;
    tokio::select! {
        () = crate::cli::shutdown_signal() => tracing::info!("shutting down"),
        Some(done) = tasks.join_next() => {
            // A stopped projection does not stop the others; report it and keep waiting.
            if let Ok(Err(e)) = done {
                tracing::error!(error = %e, "a component stopped; the others go on");
                failures += 1;
            }
            crate::cli::shutdown_signal().await;
        }
    }
    let _ = stop.send(true);
    while let Some(done) = tasks.join_next().await {
        if let Ok(Err(e)) = done {
            tracing::error!(error = %e, "stopped with an error");
            failures += 1;
        }
    }
    if failures > 0 {
        anyhow::bail!("{failures} component(s) stopped with errors; see `vodsource projections`");
    }
    Ok(())
}
