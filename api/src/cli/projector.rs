//! `vodsource projector`: the projection runners and the encoding supervisor, without the
//! HTTP API, until SIGTERM or Ctrl-C.

use crate::config::Config;
use crate::http::control::Control;
use crate::roles::Stores;

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
    let control = Control::start(stores);
    crate::cli::shutdown_signal().await;
    tracing::info!("shutting down");
    let failures = control.shutdown().await;
    if failures > 0 {
        anyhow::bail!("{failures} component(s) stopped with errors; see `vodsource projections`");
    }
    Ok(())
}
