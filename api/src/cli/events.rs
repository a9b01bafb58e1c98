use std::io::Write;

use anyhow::Context;
use clap::Subcommand;
use vodsource_commands::Subscription;

use crate::config::Config;
use crate::roles::Stores;

#[derive(Debug, Subcommand)]
pub enum Events {
    /// Print the global log as JSON lines.
    Tail {
        /// First position to print.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Stop after this many events.
        #[arg(long)]
        limit: Option<u64>,
        /// Keep following new events.
        #[arg(long, short)]
        follow: bool,
    },
}

pub async fn run(config: &Config, events: Events) -> anyhow::Result<()> {
    let Events::Tail { from, limit, follow } = events;
    let stores = Stores::open(config).await?;
    let mut subscription = Subscription::new(stores.log.clone(), from.saturating_sub(1));
    let mut printed = 0u64;
    let stdout = std::io::stdout();
    loop {
        let batch = if follow {
            tokio::select! {
                batch = subscription.next_batch() => batch,
                () = crate::cli::shutdown_signal() => return Ok(()),
            }
        } else {
            subscription.try_next_batch().await
        }
        .context("reading the event log")?;
        if batch.is_empty() {
            return Ok(());
        }
        let mut out = stdout.lock();
        for event in batch {
            if limit.is_some_and(|l| printed >= l) {
                return Ok(());
            }
            serde_json::to_writer(&mut out, &event).context("writing JSON")?;
            if writeln!(out).is_err() {
                return Ok(()); // the reader went away (a closed pipe)
            }
            printed += 1;
        }
        out.flush().ok();
    }
}
