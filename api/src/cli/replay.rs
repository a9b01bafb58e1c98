use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use vodsource_projections::PROJECTIONS;

use crate::config::Config;
use crate::roles::{check_projection, rebuild_named, Stores};

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["projection", "all"])))]
pub struct Args {
    /// The projection to rebuild.
    #[arg(long)]
    projection: Option<String>,
    /// Rebuild every projection.
    #[arg(long)]
    all: bool,
}

pub async fn run(config: &Config, args: Args) -> anyhow::Result<()> {
    let names: Vec<String> = match (args.projection, args.all) {
        (Some(name), false) => vec![name],
        (None, true) => PROJECTIONS.iter().map(|s| (*s).to_owned()).collect(),
        _ => bail!("give --projection NAME or --all"),
    };
    for name in &names {
        check_projection(name)?;
    }
    let stores = Stores::open(config).await?;
    for name in names {
        let head = stores.log.head().await.context("reading the log head")?;
        let bar = ProgressBar::new(head.max(1));
        bar.set_style(
            ProgressStyle::with_template("{prefix:>13} [{bar:30}] {pos}/{len} events  {per_sec}  ETA {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(name.clone());
        bar.enable_steady_tick(Duration::from_millis(200));
        let started = Instant::now();
        let reached = rebuild_named(&stores, &name, |p| {
            bar.set_length(p.head.max(p.position).max(1));
            bar.set_position(p.position);
        })
        .await
        .with_context(|| format!("rebuilding {name}"))?;
        bar.finish_and_clear();
        let seconds = started.elapsed().as_secs_f64();
        #[allow(clippy::cast_precision_loss)]
        let rate = if seconds > 0.0 { reached as f64 / seconds } else { 0.0 };
        println!("{name}: rebuilt to position {reached} in {seconds:.2} s ({rate:.0} events/s) and swapped in");
    }
    Ok(())
}
