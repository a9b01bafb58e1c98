use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use vodsource_commands::ports::{EventLog, SystemClock};
use vodsource_commands::{VideoCommands, VideoStore};
use vodsource_domain::VideoServices;
use vodsource_infra::dynamodb::DynamoViewStore;
use vodsource_infra::sqlite::{SqliteEventLog, SqliteSettings, SqliteViewStore};
use vodsource_projections::{
    rebuild, CatalogProjector, DeadLetterProjector, Projector, Runner, RunnerConfig, StatusProjector,
};

#[derive(clap::Args)]
pub struct Args {
    /// Events in the log to replay (generated once and kept under ~/.cache/vodsource/bench).
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Only read and decode the log (no projection), to see what reading costs.
    #[arg(long)]
    read_only: bool,
    /// Projections to rebuild.
    #[arg(long, value_delimiter = ',', default_value = "catalog,status,dead_letters")]
    projections: Vec<String>,
    /// Also replay into DynamoDB views (fresh tables; the AWS environment says where:
    /// `AWS_ENDPOINT_URL` for an emulator), in the same run as SQLite.
    #[arg(long)]
    dynamodb: bool,
}

impl Default for Args {
    fn default() -> Self {
        Self {
            events: 1_000_000,
            read_only: false,
            projections: vec!["catalog".into(), "status".into(), "dead_letters".into()],
            dynamodb: false,
        }
    }
}

async fn log_with(events: u64) -> anyhow::Result<(Arc<dyn EventLog>, PathBuf)> {
    let home = std::env::var("HOME").unwrap_or_else(|_| ".".into());
    let dir = PathBuf::from(home).join(".cache/vodsource/bench");
    let path = dir.join(format!("replay-{events}.db"));
    let settings = SqliteSettings::from_query("synchronous=normal")?;
    let log: Arc<dyn EventLog> = Arc::new(SqliteEventLog::open(&path, &settings).await?);
    let head = log.head().await?;
    if head < events {
        eprintln!(
            "generating {events} events through the command path into {} ...",
            path.display()
        );
        let clock = Arc::new(SystemClock);
        let commands = VideoCommands::new(
            VideoStore::new(log.clone(), clock.clone(), 200_000),
            VideoServices::new(clock),
        );
        let started = Instant::now();
        let mut next = 0usize;
        while log.head().await? < events {
            let mut tasks = tokio::task::JoinSet::new();
            for i in next..next + 2000 {
                let commands = commands.clone();
                tasks
                    .spawn(async move { vodsource_api::seed::lifecycle(&commands, &format!("bench-{i:08}"), i).await });
            }
            while let Some(done) = tasks.join_next().await {
                done.context("seed task")?.map_err(|e| anyhow::anyhow!("seed: {e}"))?;
            }
            next += 2000;
        }
        eprintln!(
            "generated {} events in {:.1} s",
            log.head().await?,
            started.elapsed().as_secs_f64()
        );
    }
    Ok((log, dir))
}

/// Where a rebuild writes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Sqlite,
    Dynamodb,
}

async fn time_rebuild<P: Projector>(
    projector: P,
    log: &Arc<dyn EventLog>,
    dir: &std::path::Path,
    target: Target,
) -> anyhow::Result<(u64, f64)> {
    let path = dir.join(format!("views-{}.db", uuid::Uuid::now_v7().simple()));
    let views: Arc<dyn vodsource_infra::Views> = match target {
        Target::Sqlite => Arc::new(SqliteViewStore::open(&path, &SqliteSettings::from_query("synchronous=normal")?).await?),
        Target::Dynamodb => {
            let config = vodsource_infra::aws::load(&vodsource_infra::aws::AwsSettings::default())
                .await
                .map_err(anyhow::Error::msg)?;
            let store = DynamoViewStore::new(&config, &format!("bench-{}-", uuid::Uuid::now_v7().simple()));
            store.create_tables().await?;
            Arc::new(store)
        }
    };
    let mut runner = Runner::new(
        projector,
        log.clone(),
        views.clone(),
        views,
        Arc::new(SystemClock),
        "bench",
        RunnerConfig {
            batch: 5000,
            ..RunnerConfig::default()
        },
    );
    let started = Instant::now();
    let reached = rebuild(&mut runner, |_| {}).await?;
    let seconds = started.elapsed().as_secs_f64();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    Ok((reached, seconds))
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let (log, dir) = log_with(args.events).await?;
    if args.read_only {
        let decoder = vodsource_commands::codec::Decoder::new();
        let started = Instant::now();
        let (mut after, mut n, mut decode_time) = (0u64, 0u64, std::time::Duration::ZERO);
        loop {
            let page = log.read_all(after, 5000).await?;
            let Some(last) = page.last() else { break };
            after = last.position;
            n += page.len() as u64;
            let t = Instant::now();
            for event in &page {
                let _ = decoder.decode(event);
            }
            decode_time += t.elapsed();
        }
        eprintln!(
            "read+decode {n} events in {:.2} s, of which decode {:.2} s",
            started.elapsed().as_secs_f64(),
            decode_time.as_secs_f64()
        );
        return Ok(());
    }
    let mut targets = vec![(Target::Sqlite, "SQLite")];
    if args.dynamodb {
        targets.push((Target::Dynamodb, "DynamoDB"));
    }
    println!("## Replay into fresh views (shadow generation, then swap)");
    println!("| store | projection | events | seconds | events/s |");
    println!("|---|---|---|---|---|");
    for (target, label) in targets {
        for name in &args.projections {
            let (events, seconds) = match name.as_str() {
                "catalog" => time_rebuild(CatalogProjector, &log, &dir, target).await?,
                "status" => time_rebuild(StatusProjector, &log, &dir, target).await?,
                "dead_letters" => time_rebuild(DeadLetterProjector, &log, &dir, target).await?,
                other => anyhow::bail!("unknown projection {other:?}"),
            };
            #[allow(clippy::cast_precision_loss)]
            let rate = events as f64 / seconds;
            println!("| {label} | {name} | {events} | {seconds:.2} | {rate:.0} |");
        }
    }
    Ok(())
}
