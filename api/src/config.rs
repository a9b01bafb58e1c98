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

    /// The QoE and video-events stream: `embedded` (a log in `<data>/streams`, one process),
    /// `kafka://host:port[,host:port][?partitions=N]` or `kinesis://[?shards=N&lease_secs=S]`
    /// (with the AWS environment: AWS_REGION, credentials, AWS_ENDPOINT_URL for an emulator).
    #[arg(long, env = "VODSOURCE_STREAM", default_value = "embedded", global = true)]
    pub stream: String,
}

impl Config {
    /// The event store URL in force.
    pub fn event_store_url(&self) -> String {
        self.event_store
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("events.db").display()))
    }

    /// The object store URL in force: `configured`, or the folder `<data>/objects`.
    pub fn object_store_url(&self, configured: Option<String>) -> String {
        configured.unwrap_or_else(|| format!("file://{}", self.data_dir.join("objects").display()))
    }

    /// The stream in force.
    ///
    /// # Errors
    /// A URL that does not parse, with the reason.
    pub fn stream_url(&self) -> anyhow::Result<vodsource_infra::StreamUrl> {
        Ok(vodsource_infra::StreamUrl::parse(
            &self.stream,
            self.data_dir.join("streams"),
        )?)
    }

    /// The view store URL in force.
    pub fn view_store_url(&self) -> String {
        self.view_store
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("views.db").display()))
    }
}
