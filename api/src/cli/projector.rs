//! `vodsource projector`: the projection runners and the encoding supervisor, without the
//! HTTP API, until SIGTERM or Ctrl-C.

use crate::config::Config;
use crate::http::control::Control;
use crate::roles::Stores;

/// `vodsource projector` takes no flags of its own.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the components until a shutdown signal; a component that stops with an error does not
/// stop the others, and makes the exit status a failure.
///
/// # Errors
/// The stores cannot be opened, or a component stopped with an error.
pub async fn run(config: &Config, _args: Args) -> anyhow::Result<()> {
    let stores = Stores::open(config).await?;
    tracing::info!(event_store = %stores.log.describe(), owner = %stores.owner, "projector starting");
    let control = Control::start(stores);
    crate::cli::shutdown_signal().await;
    tracing::info!("shutting down");
    let failures = control.shutdown().await;
    if failures > 0 {
        anyhow::bail!("{failures} component(s) stopped with errors; see `vodsource projections`");
    }
    Ok(())
}
