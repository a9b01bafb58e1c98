//! Configuration: embedded defaults, overridden by `VODSOURCE_*` environment variables or flags.

use std::path::PathBuf;

use clap::Args;

/// Where vodsource keeps its state.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Folder of the embedded stores.
    #[arg(long, env = "VODSOURCE_DATA_DIR", default_value = "./data", global = true)]
    pub data_dir: PathBuf,

    /// Event store URL: `sqlite://<file>` (default `<data>/events.db`) or `postgres://…`.
    #[arg(long, env = "VODSOURCE_EVENT_STORE", global = true)]
    pub event_store: Option<String>,

    /// View store URL: `sqlite://<file>` (default `<data>/views.db`).
    #[arg(long, env = "VODSOURCE_VIEW_STORE", global = true)]
    pub view_store: Option<String>,
}

impl Config {
    /// The event store URL in force.
    pub fn event_store_url(&self) -> String {
        self.event_store
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("events.db").display()))
    }

    /// The view store URL in force.
    pub fn view_store_url(&self) -> String {
        self.view_store
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("views.db").display()))
    }
}
