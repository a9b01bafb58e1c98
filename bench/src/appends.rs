use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use cqrs_es::{CqrsFramework, EventStore};
use vodsource_commands::ports::{EventLog, SystemClock};
use vodsource_commands::VideoStore;
use vodsource_domain::{Video, VideoCommand, VideoServices};
use vodsource_infra::postgres::PgEventLog;
use vodsource_infra::sqlite::{SqliteEventLog, SqliteSettings};

#[derive(clap::Args)]
pub struct Args {
    /// Stores to measure: sqlite, sqlite-normal, postgres, postgres-es.
    #[arg(long, value_delimiter = ',', default_value = "sqlite,postgres,postgres-es")]
    stores: Vec<String>,
    /// Concurrent writers, each on its own video.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    writers: Vec<usize>,
    /// Measured window in seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Warm-up before the window in seconds.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// PostgreSQL server.
    #[arg(
        long,
        env = "VODSOURCE_BENCH_PG_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pg_url: String,
}

impl Default for Args {
    fn default() -> Self {
        Self {
            stores: vec!["sqlite".into(), "postgres".into(), "postgres-es".into()],
            writers: vec![1, 8, 64],
            seconds: 10,
            warmup: 2,
            pg_url: "postgres://postgres@127.0.0.1:5432/postgres".into(),
        }
    }
}

/// The command every writer repeats: a description change of about 180 characters, so the
/// stored event is about as large as the baseline's 238 bytes.
fn command(n: u64) -> VideoCommand {
    let filler = if n.is_multiple_of(2) { 'a' } else { 'b' };
    VideoCommand::UpdateMetadata {
        title: None,
        description: Some(std::iter::repeat_n(filler, 180).collect()),
        tags: None,
    }
}

struct Outcome {
    commands: u64,
    latencies_us: Vec<u64>,
    per_second: Vec<u64>,
}

async fn drive<ES>(framework: Arc<CqrsFramework<Video, ES>>, writers: usize, args: &Args) -> anyhow::Result<Outcome>
where
    ES: EventStore<Video> + 'static,
    ES::AC: Send,
{
    let run = uuid::Uuid::now_v7().simple().to_string();
    for w in 0..writers {
        framework
            .execute(&format!("{run}-{w}"), vodsource_api::seed::register("bench"))
            .await
            .map_err(|e| anyhow::anyhow!("register: {e}"))?;
    }
    let start = Instant::now();
    let warm = Duration::from_secs(args.warmup);
    let end = warm + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for w in 0..writers {
        let framework = framework.clone();
        let id = format!("{run}-{w}");
        tasks.push(tokio::spawn(async move {
            let mut samples: Vec<(Duration, u64)> = Vec::new();
            let mut n = 0u64;
            loop {
                let began = start.elapsed();
                if began >= end {
                    break;
                }
                framework
                    .execute(&id, command(n))
                    .await
                    .map_err(|e| anyhow::anyhow!("command: {e}"))?;
                n += 1;
                let took = start.elapsed() - began;
                if began >= warm {
                    samples.push((began - warm, u64::try_from(took.as_micros()).unwrap_or(u64::MAX)));
                }
            }
            Ok::<_, anyhow::Error>(samples)
        }));
    }
    let mut latencies = Vec::new();
    let mut per_second = vec![0u64; usize::try_from(args.seconds).unwrap_or(0)];
    for task in tasks {
        for (at, us) in task.await.context("writer panicked")?? {
            latencies.push(us);
            if let Some(bucket) = per_second.get_mut(usize::try_from(at.as_secs()).unwrap_or(usize::MAX)) {
                *bucket += 1;
            }
        }
    }
    latencies.sort_unstable();
    Ok(Outcome {
        commands: latencies.len() as u64,
        latencies_us: latencies,
        per_second,
    })
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index] as f64 / 1000.0
}

async fn pg_pool(base: &str, schema: &str, connections: u32) -> anyhow::Result<sqlx::PgPool> {
    use std::str::FromStr;
    let options = sqlx::postgres::PgConnectOptions::from_str(base)?;
    let admin = sqlx::PgPool::connect_with(options.clone())
        .await
        .context("connecting to PostgreSQL")?;
    sqlx::query(&format!("CREATE SCHEMA {schema}")).execute(&admin).await?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(connections)
        .connect_with(options.options([("search_path", schema)]))
        .await?;
    sqlx::raw_sql(
        "CREATE TABLE events (aggregate_type text NOT NULL, aggregate_id text NOT NULL, sequence bigint CHECK (sequence >= 0) NOT NULL, event_type text NOT NULL, event_version text NOT NULL, payload json NOT NULL, metadata json NOT NULL, PRIMARY KEY (aggregate_type, aggregate_id, sequence));
         CREATE TABLE snapshots (aggregate_type text NOT NULL, aggregate_id text NOT NULL, last_sequence bigint CHECK (last_sequence >= 0) NOT NULL, current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL, payload json NOT NULL, PRIMARY KEY (aggregate_type, aggregate_id, last_sequence));",
    )
    .execute(&pool)
    .await?;
    Ok(pool)
}

async fn measure(store: &str, writers: usize, args: &Args) -> anyhow::Result<Outcome> {
    let clock = Arc::new(SystemClock);
    let services = VideoServices::new(clock.clone());
    let schema = format!("bench_{}", uuid::Uuid::now_v7().simple());
    match store {
        "sqlite" | "sqlite-normal" => {
            let dir = std::env::temp_dir().join(format!("vodsource-bench-{schema}"));
            let query = if store == "sqlite" { "" } else { "synchronous=normal" };
            let log = SqliteEventLog::open(dir.join("events.db"), &SqliteSettings::from_query(query)?).await?;
            let log: Arc<dyn EventLog> = Arc::new(log);
            let framework = Arc::new(CqrsFramework::new(
                VideoStore::new(log, clock, 100_000),
                vec![],
                services,
            ));
            let outcome = drive(framework, writers, args).await;
            let _ = std::fs::remove_dir_all(dir);
            outcome
        }
        "postgres" => {
            let log = PgEventLog::connect(&format!("{}?schema={schema}", args.pg_url)).await?;
            let log: Arc<dyn EventLog> = Arc::new(log);
            let framework = Arc::new(CqrsFramework::new(
                VideoStore::new(log, clock, 100_000),
                vec![],
                services,
            ));
            drive(framework, writers, args).await
        }
        "postgres-es" => {
            let connections = u32::try_from(writers.clamp(10, 64)).unwrap_or(64);
            let pool = pg_pool(&args.pg_url, &schema, connections).await?;
            let framework = Arc::new(postgres_es::postgres_cqrs(pool, vec![], services));
            drive(framework, writers, args).await
        }
        other => anyhow::bail!("unknown store {other:?}"),
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    println!(
        "## Appends: one event per command, each writer on its own video, {} s window after {} s warm-up",
        args.seconds, args.warmup
    );
    println!("| store | writers | commands/s | p50 ms | p99 ms | first s | last s |");
    println!("|---|---|---|---|---|---|---|");
    for writers in &args.writers {
        for store in &args.stores {
            let outcome = measure(store, *writers, &args)
                .await
                .with_context(|| format!("{store} × {writers}"))?;
            #[allow(clippy::cast_precision_loss)]
            let rate = outcome.commands as f64 / args.seconds as f64;
            println!(
                "| {store} | {writers} | {rate:.0} | {:.2} | {:.2} | {} | {} |",
                percentile(&outcome.latencies_us, 0.50),
                percentile(&outcome.latencies_us, 0.99),
                outcome.per_second.first().copied().unwrap_or(0),
                outcome.per_second.last().copied().unwrap_or(0),
            );
        }
    }
    Ok(())
}
