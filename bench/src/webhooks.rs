//! Webhook deliveries (issue 19): deliveries/s from a backlog to a local receiver that answers
//! at once, at 1 and 100 endpoints, and the latency from a command's append to the receiver
//! reading the request (p50/p99) while events are appended one by one — also with one
//! endpoint failing beside the others. The baseline, in the same run: the same requests
//! POSTed straight to the same receiver by one reqwest client, 16 at a time (what HTTP alone
//! costs here).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use vodsource_app::webhooks::dispatch::{DispatchConfig, Dispatcher};
use vodsource_app::webhooks::registry::{Created, RegistryEvent};
use vodsource_app::webhooks::RegistryStore;
use vodsource_commands::ports::{Clock, EventLog, SystemClock};
use vodsource_commands::{CommandContext, VideoCommands, VideoStore};
use vodsource_domain::VideoServices;
use vodsource_infra::sqlite::{SqliteEventLog, SqliteSettings, SqliteViewStore};

#[derive(clap::Args, Clone)]
pub struct Args {
    /// Events appended before the dispatcher starts, for the throughput phase.
    #[arg(long, default_value_t = 20_000)]
    pub events: usize,
    /// Endpoint counts measured.
    #[arg(long, value_delimiter = ',', default_value = "1,100")]
    pub endpoints: Vec<usize>,
    /// Appends per second in the latency phase.
    #[arg(long, default_value_t = 200)]
    pub rate: u64,
    /// Events appended in the latency phase.
    #[arg(long, default_value_t = 2000)]
    pub latency_events: usize,
}

/// What the receiver saw: each delivered request's event position and when it was read.
#[derive(Default)]
struct Seen {
    count: AtomicU64,
    arrivals: Mutex<Vec<(u64, Instant)>>,
}

/// An HTTP/1.1 server that answers every request at once (200, or 500 under `/fail/`),
/// keeping connections open, and notes each delivery's position.
async fn receiver() -> anyhow::Result<(u16, Arc<Seen>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let seen = Arc::new(Seen::default());
    let shared = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let seen = shared.clone();
            tokio::spawn(async move {
                let mut buffer = Vec::with_capacity(4096);
                let mut chunk = [0_u8; 8192];
                loop {
                    // One request: the head, then Content-Length bytes.
                    let (head_end, length) = loop {
                        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
                            let length = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse::<usize>().ok())
                                .unwrap_or(0);
                            break (end + 4, length);
                        }
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                    };
                    while buffer.len() < head_end + length {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let at = Instant::now();
                    let failing = buffer.starts_with(b"POST /fail/");
                    if !failing {
                        let body = &buffer[head_end..head_end + length];
                        if let Some(position) = position_of(body) {
                            seen.arrivals.lock().expect("arrivals").push((position, at));
                        }
                        seen.count.fetch_add(1, Ordering::Relaxed);
                    }
                    buffer.drain(..head_end + length);
                    let answer: &[u8] = if failing {
                        b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n"
                    } else {
                        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
                    };
                    if stream.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok((port, seen))
}

/// The `"position":N` of a public event's JSON.
fn position_of(body: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(body).ok()?;
    let start = text.find("\"position\":")? + "\"position\":".len();
    let digits: String = text[start..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

struct Setup {
    log: Arc<dyn EventLog>,
    views: Arc<SqliteViewStore>,
    commands: VideoCommands,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn setup() -> anyhow::Result<Setup> {
    let dir = std::env::temp_dir().join(format!("vodsource-bench-webhooks-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir)?;
    let settings = SqliteSettings::from_query("synchronous=normal")?;
    let log: Arc<dyn EventLog> = Arc::new(SqliteEventLog::open(dir.join("events.db"), &settings).await?);
    let views = Arc::new(SqliteViewStore::open(dir.join("views.db"), &settings).await?);
    let clock = Arc::new(SystemClock);
    let commands = VideoCommands::new(
        VideoStore::new(log.clone(), clock.clone(), 200_000),
        VideoServices::new(clock),
    );
    Ok(Setup {
        log,
        views,
        commands,
        _dir: TempDir(dir),
    })
}

/// Creates `count` endpoints at `port` (`failing` of them under `/fail/`).
async fn endpoints(log: &Arc<dyn EventLog>, port: u16, count: usize, failing: usize) -> anyhow::Result<()> {
    let registry = RegistryStore::new(log.clone());
    let events: Vec<RegistryEvent> = (0..count + failing)
        .map(|i| {
            let path = if i < count { "hook" } else { "fail" };
            RegistryEvent::Created(Created {
                endpoint_id: format!("wh_{i:032x}"),
                owner: None,
                url: format!("http://127.0.0.1:{port}/{path}/{i}"),
                event_types: vec![],
                description: String::new(),
                enabled: true,
                max_per_second: 0,
                key_id: None,
            })
        })
        .collect();
    registry
        .record("bench", SystemClock.now(), |_| Ok::<_, ()>(events.clone()))
        .await
        .map_err(|_| anyhow::anyhow!("recording the endpoints"))?;
    Ok(())
}

fn dispatcher(setup: &Setup) -> anyhow::Result<Dispatcher> {
    let sender = vodsource_infra::egress::HttpSender::new(vodsource_infra::egress::SendSettings {
        policy: vodsource_infra::egress::AddressPolicy {
            allow: vec!["127.0.0.1/32".parse().map_err(anyhow::Error::msg)?],
        },
        allow_http: true,
        ..Default::default()
    })
    .map_err(anyhow::Error::msg)?;
    Ok(Dispatcher::new(
        setup.commands.clone(),
        setup.log.clone(),
        setup.views.clone(),
        setup.views.clone(),
        setup.views.clone(),
        Arc::new(sender),
        vodsource_app::Signer::new(vec![7; 32]),
        Arc::new(SystemClock),
        "bench".into(),
        DispatchConfig {
            refresh: Duration::from_millis(50),
            backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(1),
            ..DispatchConfig::default()
        },
    ))
}

/// Registers `count` videos, `parallel` at a time; returns each registration's position and
/// when its command was sent.
async fn register(commands: &VideoCommands, from: usize, count: usize) -> anyhow::Result<()> {
    let mut next = from;
    while next < from + count {
        let mut tasks = tokio::task::JoinSet::new();
        for i in next..(next + 1000).min(from + count) {
            let commands = commands.clone();
            tasks.spawn(async move {
                commands
                    .execute(
                        &format!("bench-{i:08}"),
                        vodsource_api::seed::register("bench"),
                        &CommandContext::actor("bench"),
                    )
                    .await
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.context("register task")?.map_err(|e| anyhow::anyhow!("register: {e}"))?;
        }
        next += 1000;
    }
    Ok(())
}

async fn until(seen: &Seen, count: u64, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    while seen.count.load(Ordering::Relaxed) < count {
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {count} deliveries within {within:?}",
            seen.count.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// One row: throughput from a backlog, then latency at a steady rate.
async fn measure(args: &Args, count: usize, failing: usize) -> anyhow::Result<()> {
    let setup = setup().await?;
    let (port, seen) = receiver().await?;
    endpoints(&setup.log, port, count, failing).await?;
    let events = if count > 1 { args.events / 10 } else { args.events };
    register(&setup.commands, 0, events).await?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(dispatcher(&setup)?.run(async move {
        let _ = stopped.await;
    }));
    let started = Instant::now();
    let total = (events * count) as u64;
    until(&seen, total, Duration::from_secs(600)).await?;
    let elapsed = started.elapsed();
    // Latency: appends one by one at the rate, each timed from before its command.
    let mut sent = std::collections::HashMap::new();
    let every = Duration::from_secs_f64(1.0 / args.rate as f64);
    let mut tick = tokio::time::interval(every);
    for i in 0..args.latency_events {
        tick.tick().await;
        let at = Instant::now();
        let outcome = setup
            .commands
            .execute(
                &format!("late-{i:08}"),
                vodsource_api::seed::register("late"),
                &CommandContext::actor("bench"),
            )
            .await
            .map_err(|e| anyhow::anyhow!("register: {e}"))?;
        if let Some(position) = outcome.position {
            sent.insert(position, at);
        }
    }
    until(&seen, total + (args.latency_events * count) as u64, Duration::from_secs(120)).await?;
    let mut latencies: Vec<Duration> = seen
        .arrivals
        .lock()
        .expect("arrivals")
        .iter()
        .filter_map(|(position, at)| sent.get(position).map(|sent| at.saturating_duration_since(*sent)))
        .collect();
    latencies.sort();
    let _ = stop.send(());
    running.await?.map_err(|e| anyhow::anyhow!("dispatcher: {e}"))?;
    let label = if failing > 0 {
        format!("{count} + {failing} failing")
    } else {
        count.to_string()
    };
    println!(
        "| {label} | {total} | {:.2} | {:.0} | {:.1} | {:.1} |",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.50).as_secs_f64() * 1000.0,
        percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
    );
    Ok(())
}

/// The baseline: the same number of requests straight to the receiver, 16 at a time.
async fn baseline(requests: usize) -> anyhow::Result<()> {
    let (port, seen) = receiver().await?;
    let client = reqwest::Client::new();
    let body = br#"{"id":"x","type":"video.created","api_version":"2026-12-05","created_at":"2026-12-05T00:00:00Z","position":1,"video_id":"v","data":{}}"#;
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (client, next) = (client.clone(), next.clone());
        tasks.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < requests as u64 {
                client
                    .post(format!("http://127.0.0.1:{port}/hook/0"))
                    .header("content-type", "application/json")
                    .body(&body[..])
                    .send()
                    .await?;
            }
            Ok::<_, reqwest::Error>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let elapsed = started.elapsed();
    anyhow::ensure!(seen.count.load(Ordering::Relaxed) == requests as u64, "baseline requests lost");
    println!(
        "| baseline: reqwest alone, 16 at a time | {requests} | {:.2} | {:.0} | – | – |",
        elapsed.as_secs_f64(),
        requests as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    println!("\n### Webhook deliveries (SQLite log, local receiver answering at once)\n");
    println!("| endpoints | deliveries | seconds | deliveries/s | p50 append→delivery ms | p99 ms |");
    println!("|---|---:|---:|---:|---:|---:|");
    baseline(args.events).await?;
    for count in &args.endpoints {
        measure(&args, *count, 0).await?;
    }
    measure(&args, 10, 0).await?;
    measure(&args, 10, 1).await?;
    Ok(())
}
