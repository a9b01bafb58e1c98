use std::time::Instant;

use anyhow::Context;

use crate::config::Config;
use crate::roles::Stores;
use crate::seed::lifecycle;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// How many videos.
    #[arg(long, default_value_t = 100)]
    videos: usize,
    /// Concurrent writers.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
}

pub async fn run(config: &Config, args: Args) -> anyhow::Result<()> {
    let stores = Stores::open(config).await?;
    let commands = stores.commands();
    let prefix = uuid::Uuid::now_v7().simple().to_string();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let workers = args.concurrency.max(1);
    for w in 0..workers {
        let commands = commands.clone();
        let prefix = prefix.clone();
        let videos = args.videos;
        tasks.spawn(async move {
            let mut sent = 0;
            for i in (w..videos).step_by(workers) {
                sent += lifecycle(&commands, &format!("{prefix}-{i:07}"), i).await?;
            }
            Ok::<usize, vodsource_commands::CommandError>(sent)
        });
    }
    let mut sent = 0;
    while let Some(done) = tasks.join_next().await {
        sent += done
            .context("a seeding task panicked")?
            .context("a seeding command failed")?;
    }
    let seconds = started.elapsed().as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    let rate = sent as f64 / seconds.max(f64::EPSILON);
    println!(
        "seeded {} videos with {sent} commands in {seconds:.2} s ({rate:.0} commands/s) into {}",
        args.videos,
        stores.log.describe()
    );
    Ok(())
}
