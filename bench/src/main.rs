//! `vodsource-bench`: the speed figures of issue 2, each measured beside its baseline in the
//! same run.
//!
//! - `appends`: commands/s and p50/p99 latency at 1, 8 and 64 concurrent writers, one event per
//!   command, each writer on its own aggregate, through cqrs-es's `CqrsFramework` — on
//!   vodsource's SQLite and PostgreSQL stores and on postgres-es (the reference store).
//! - `replay`: events/s rebuilding the views from a 1,000,000-event SQLite log.
//! - `webhooks`: webhook deliveries/s and append-to-delivery latency, beside reqwest alone
//!   (issue 19).
//! - `lake`: QoE events/s from stream records to a Parquet file, and bytes per event, beside
//!   duckdb on the same events (issue 5).

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod appends;
mod lake;
mod replay;
mod webhooks;

use clap::{Parser, Subcommand};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Append throughput and latency.
    Appends(appends::Args),
    /// Replay throughput.
    Replay(replay::Args),
    /// QoE events to Parquet, beside duckdb.
    Lake(lake::Args),
    /// Webhook deliveries/s and append-to-delivery latency.
    Webhooks(webhooks::Args),
    /// Both, with defaults.
    All,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Appends(args) => appends::run(args).await,
        Command::Replay(args) => replay::run(args).await,
        Command::Lake(args) => lake::run(args).await,
        Command::Webhooks(args) => webhooks::run(args).await,
        Command::All => {
            appends::run(appends::Args::default()).await?;
            replay::run(replay::Args::default()).await
        }
    }
}
