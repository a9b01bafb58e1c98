//! The `vodsource` binary as separate processes: a projector killed with SIGKILL while
//! another process appends, restarted, ends with the same views as a fresh replay.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vodsource_commands::ports::EventLog;
use vodsource_infra::sqlite::{SqliteEventLog, SqliteSettings, SqliteViewStore};
use vodsource_projections::{ViewStore, PROJECTIONS};

const BIN: &str = env!("CARGO_BIN_EXE_vodsource");

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let path = std::env::temp_dir().join(format!("vodsource-cli-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&path).expect("temp dir");
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn vodsource(data: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env("VODSOURCE_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    command
}

fn run(mut command: Command) {
    let status = command.status().expect("run vodsource");
    assert!(status.success(), "{command:?} failed: {status}");
}

async fn positions(views: &Path) -> Vec<u64> {
    let store = SqliteViewStore::open(views, &SqliteSettings::default())
        .await
        .expect("views");
    let mut out = Vec::new();
    for name in PROJECTIONS {
        out.push(store.projection(name).await.expect("state").position);
    }
    out
}

async fn wait_for(what: &str, deadline: Duration, mut check: impl AsyncFnMut() -> bool) {
    let until = Instant::now() + deadline;
    while !check().await {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn terminate(child: &mut Child) {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("kill");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_killed_mid_stream_and_restarted_ends_equal_to_a_fresh_replay() {
    let dir = TempDir::new();
    let data = dir.0.join("data");
    let views = data.join("views.db");
    run(vodsource(&data, &["seed", "--videos", "1500"]));

    // More appends arrive from another process while the projector runs and dies.
    let mut seeder = vodsource(&data, &["seed", "--videos", "3000"]).spawn().expect("seeder");
    let mut projector = vodsource(&data, &["projector"]).spawn().expect("projector");
    wait_for("the projector to make progress", Duration::from_secs(60), async || {
        views.exists() && positions(&views).await.iter().all(|p| *p > 0)
    })
    .await;
    projector.kill().expect("SIGKILL");
    let _ = projector.wait();
    assert!(seeder.wait().expect("seeder").success());

    let log = SqliteEventLog::open(data.join("events.db"), &SqliteSettings::default())
        .await
        .expect("log");
    let head = log.head().await.expect("head");
    let at_kill = positions(&views).await;
    assert!(
        at_kill.iter().any(|p| *p < head),
        "the kill landed mid-stream: {at_kill:?} of {head}"
    );

    // The restarted projector waits out the dead one's lease, then resumes from the checkpoints.
    let mut projector = vodsource(&data, &["projector"]).spawn().expect("projector again");
    wait_for(
        "the restarted projector to catch up",
        Duration::from_secs(90),
        async || positions(&views).await.iter().all(|p| *p == head),
    )
    .await;
    terminate(&mut projector);
    assert!(
        projector.wait().expect("wait").success(),
        "SIGTERM stops the projector cleanly"
    );

    let fresh = dir.0.join("fresh-views.db");
    let mut replay = vodsource(&data, &["replay", "--all"]);
    replay.arg("--view-store").arg(format!("sqlite://{}", fresh.display()));
    run(replay);
    let (after_crash, rebuilt) = (
        SqliteViewStore::open(&views, &SqliteSettings::default())
            .await
            .expect("views"),
        SqliteViewStore::open(&fresh, &SqliteSettings::default())
            .await
            .expect("fresh"),
    );
    for name in PROJECTIONS {
        let (a, b) = (
            after_crash.dump(name).await.expect("dump"),
            rebuilt.dump(name).await.expect("dump"),
        );
        assert!(!b.is_empty() || name == "dead_letters");
        assert_eq!(a, b, "{name} after a SIGKILL and restart equals a fresh replay");
    }
}

#[test]
fn a_locked_event_store_is_named_and_the_command_fails() {
    let dir = TempDir::new();
    let data = dir.0.join("data");
    run(vodsource(&data, &["seed", "--videos", "1"]));
    let events = data.join("events.db");
    let mut holder = Command::new("python3")
        .arg("-c")
        .arg("import sqlite3, sys; c = sqlite3.connect(sys.argv[1], isolation_level=None); c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); sys.stdin.read()")
        .arg(&events)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 holds the lock from another process");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("read");
    let output = Command::new(BIN)
        .arg("--data-dir")
        .arg(&data)
        .arg("--event-store")
        .arg(format!("sqlite://{}?busy_timeout_ms=200", events.display()))
        .args(["seed", "--videos", "1"])
        .output()
        .expect("run");
    drop(holder.stdin.take());
    let _ = holder.wait();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(&events.display().to_string()) && stderr.contains("locked by another process"),
        "{stderr}"
    );
}
