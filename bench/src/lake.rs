//! QoE events to Parquet: vodsource's lake writer (the sink's per-record path: parse the
//! stream record, pick the hour's file, append, close) against duckdb's
//! `COPY (SELECT * FROM read_json(...)) TO ... (FORMAT parquet, COMPRESSION zstd)` on the same
//! NDJSON, duckdb held to one thread. Run it on one core (`scripts/bench-lake.sh` uses
//! `taskset -c 0`), so neither side gets a second one.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::Context;
use vodsource_lake::columnar::Row;
use vodsource_lake::tables::{self, QOE_EVENTS};
use vodsource_lake::writer::LakeFileWriter;

/// `lake` options.
#[derive(clap::Args)]
pub struct Args {
    /// Events to write.
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Runs of each side; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Only vodsource's writer on stream records (for profiling).
    #[arg(long)]
    only_ours: bool,
    /// Also time parsing alone and parsing into Arrow builders.
    #[arg(long)]
    phases: bool,
    /// Folder for the NDJSON and the Parquet files [default: a temp folder].
    #[arg(long)]
    dir: Option<PathBuf>,
}

impl Default for Args {
    fn default() -> Self {
        Self {
            events: 1_000_000,
            runs: 3,
            phases: false,
            only_ours: false,
            dir: None,
        }
    }
}

/// Deterministic pseudo-random numbers (xorshift), so every run writes the same events.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn uuid(&mut self) -> String {
        let (a, b) = (self.next(), self.next());
        format!(
            "{:08x}-{:04x}-7{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            0x8000 | (b >> 48 & 0x3fff),
            b & 0xffff_ffff_ffff
        )
    }
}

const PLAYERS: [(&str, &str); 4] = [
    ("hls.js", "1.6.2"),
    ("dash.js", "5.0.1"),
    ("AVPlayer", "18.1"),
    ("ExoPlayer", "2.19.1"),
];
const DEVICES: [(&str, &str, &str); 5] = [
    ("desktop", "Windows 11", "Chrome 131"),
    ("desktop", "macOS 15.1", "Safari 18.1"),
    ("mobile", "iOS 18.1", "Safari 18.1"),
    ("mobile", "Android 15", "Chrome 131"),
    ("tv", "tvOS 18.1", "AVKit"),
];
const RUNGS: [u32; 4] = [800, 1400, 2800, 5000];

/// Player sessions as the QoE stream carries them: 200 sessions at a time, interleaved in
/// arrival order, each a session_start, playing, heartbeats every 10 s with the odd stall,
/// seek or rung switch, and an end.
fn events(count: usize) -> Vec<u8> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let videos: Vec<String> = (0..1000).map(|_| rng.uuid()).collect();
    let start_ms: i64 = 1_795_406_400_000; // 2026-11-23T04:00:00Z
    struct Session {
        sid: String,
        cid: String,
        viewer: String,
        device: usize,
        player: usize,
        rung: usize,
        position: u64,
        duration: u64,
        step: u32,
    }
    let new_session = |rng: &mut Rng| Session {
        sid: rng.uuid(),
        cid: videos[rng.below(videos.len() as u64) as usize].clone(),
        viewer: format!("viewer-{:06}", rng.below(50_000)),
        device: rng.below(DEVICES.len() as u64) as usize,
        player: rng.below(PLAYERS.len() as u64) as usize,
        rung: 2,
        position: 0,
        duration: 60_000 * (5 + rng.below(90)),
        step: 0,
    };
    let mut sessions: Vec<Session> = (0..200).map(|_| new_session(&mut rng)).collect();
    let mut out = Vec::with_capacity(count * 470);
    let mut line = String::with_capacity(600);
    for i in 0..count {
        let ts = start_ms + (i as i64) * 3; // ~333 events/s over the run
        let slot = rng.below(sessions.len() as u64) as usize;
        let s = &mut sessions[slot];
        let roll = rng.below(100);
        let kind = match s.step {
            0 => "session_start",
            1 => "playing",
            _ if s.position >= s.duration => "ended",
            _ if roll < 2 => "rebuffer_start",
            _ if roll < 4 => "rebuffer_end",
            _ if roll < 6 => "bitrate_change",
            _ if roll < 7 => "seek",
            _ if roll < 8 => "pause",
            _ => "heartbeat",
        };
        if kind == "bitrate_change" {
            s.rung = (s.rung + 1 + rng.below(2) as usize * 2) % RUNGS.len();
        }
        s.step += 1;
        s.position = (s.position + 10_000).min(s.duration);
        let (player, version) = PLAYERS[s.player];
        let (device, os, browser) = DEVICES[s.device];
        line.clear();
        let _ = write!(
            line,
            r#"{{"event_id":"{}","event_type":"{kind}","sid":"{}","cid":"{}","viewer_id":"{}","ts":{ts},"received_at":{},"position_ms":{},"duration_ms":{},"br":{},"bl":{},"mtp":{},"ot":"v","su":{},"bs":{}"#,
            rng.uuid(),
            s.sid,
            s.cid,
            s.viewer,
            ts + 40 + rng.below(200) as i64,
            s.position,
            s.duration,
            RUNGS[s.rung],
            4000 + rng.below(26_000),
            RUNGS[s.rung] * 3 + rng.below(4000) as u32,
            s.step <= 2,
            kind == "rebuffer_start",
        );
        match kind {
            "playing" => {
                let _ = write!(line, r#","startup_ms":{}"#, 300 + rng.below(2500));
            }
            "rebuffer_end" => {
                let _ = write!(line, r#","rebuffer_ms":{}"#, 100 + rng.below(5000));
            }
            _ => {}
        }
        let _ = writeln!(
            line,
            r#","player_name":"{player}","player_version":"{version}","device_type":"{device}","os":"{os}","browser":"{browser}"}}"#
        );
        out.extend_from_slice(line.as_bytes());
        if kind == "ended" {
            *s = new_session(&mut rng);
        }
    }
    out
}

/// The events as the QoE stream carries them: each NDJSON line as the beacon endpoint encodes
/// it ([`vodsource_qoe::wire`]).
fn stream_records(ndjson: &[u8]) -> anyhow::Result<Vec<Vec<u8>>> {
    ndjson
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|line| {
            let event: vodsource_qoe::QoeEvent = serde_json::from_slice(line)?;
            Ok(vodsource_qoe::wire::encode(&event))
        })
        .collect()
}

/// Writes `records` into lake files under `dir`, as the sink does; returns the total size of
/// the files.
fn vodsource<'a>(records: impl Iterator<Item = &'a [u8]>, dir: &Path) -> anyhow::Result<u64> {
    let mut files: BTreeMap<i64, LakeFileWriter> = BTreeMap::new();
    for record in records {
        let row = Row::parse(&QOE_EVENTS, record)?;
        let hour = tables::hour_of(row.time());
        let file = match files.entry(hour) {
            std::collections::btree_map::Entry::Occupied(file) => file.into_mut(),
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(LakeFileWriter::create(&dir.join(format!("vodsource-{hour}.parquet")), &QOE_EVENTS)?)
            }
        };
        file.push(&row)?;
    }
    let mut bytes = 0;
    for file in files.into_values() {
        bytes += file.close()?.1;
    }
    Ok(bytes)
}

const DUCKDB: &str = r#"
import sys, time, os, duckdb
src, dst = sys.argv[1], sys.argv[2]
con = duckdb.connect()
con.execute("SET threads = 1")
con.execute("SET enable_progress_bar = false")
started = time.perf_counter()
con.execute(f"COPY (SELECT * FROM read_json('{src}')) TO '{dst}' (FORMAT parquet, COMPRESSION zstd)")
print(time.perf_counter() - started, os.path.getsize(dst))
"#;

/// duckdb's seconds and Parquet size.
fn duckdb(ndjson: &Path, out: &Path) -> anyhow::Result<(f64, u64)> {
    let _ = std::fs::remove_file(out);
    let output = Command::new("python3")
        .args(["-c", DUCKDB])
        .arg(ndjson)
        .arg(out)
        .output()
        .context("python3 with duckdb runs (scripts/services.sh start lake-readers)")?;
    anyhow::ensure!(
        output.status.success(),
        "duckdb failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    let mut parts = text.lines().last().unwrap_or_default().split_whitespace();
    let seconds = parts.next().context("seconds")?.parse()?;
    let bytes = parts.next().context("bytes")?.parse()?;
    Ok((seconds, bytes))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Runs the comparison and prints the table.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let scratch = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("vodsource-bench-lake-{}", std::process::id()))
    });
    std::fs::create_dir_all(&scratch)?;
    let ndjson_path = scratch.join("events.ndjson");
    let ndjson = events(args.events);
    std::fs::File::create(&ndjson_path)?.write_all(&ndjson)?;
    let n = args.events as f64;
    println!(
        "{} events, {:.0} bytes each as NDJSON ({:.1} MiB)",
        args.events,
        ndjson.len() as f64 / n,
        ndjson.len() as f64 / 1_048_576.0
    );
    let records = stream_records(&ndjson)?;
    let record_bytes: usize = records.iter().map(Vec::len).sum();
    println!("as stream records: {:.0} bytes each", record_bytes as f64 / n);
    let lines: Vec<&[u8]> = ndjson.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
    if args.phases {
        let started = Instant::now();
        let mut sum = 0i64;
        for line in &records {
            sum = sum.wrapping_add(Row::parse(&QOE_EVENTS, line)?.time());
        }
        println!("phase: parse only {:.3} s ({sum})", started.elapsed().as_secs_f64());
        let started = Instant::now();
        let mut rows = vodsource_lake::columnar::Rows::new(&QOE_EVENTS, 8192);
        for line in &records {
            rows.push(&Row::parse(&QOE_EVENTS, line)?)?;
            if rows.len() == 8192 {
                rows.finish()?;
            }
        }
        println!("phase: parse + Arrow builders {:.3} s", started.elapsed().as_secs_f64());
    }
    // The sides take turns, so a slow spell of the machine falls on all of them.
    let mut ours = Vec::new();
    let mut ours_json = Vec::new();
    let mut theirs = Vec::new();
    let (mut our_bytes, mut their_bytes) = (0, 0);
    let dir = scratch.join("vodsource");
    let fresh = |dir: &Path| -> anyhow::Result<()> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir)?;
        Ok(())
    };
    for _ in 0..args.runs {
        fresh(&dir)?;
        let started = Instant::now();
        our_bytes = vodsource(records.iter().map(Vec::as_slice), &dir)?;
        ours.push(started.elapsed().as_secs_f64());
        if args.only_ours {
            continue;
        }
        fresh(&dir)?;
        let started = Instant::now();
        vodsource(lines.iter().copied(), &dir)?;
        ours_json.push(started.elapsed().as_secs_f64());
        let (seconds, bytes) = duckdb(&ndjson_path, &scratch.join("duckdb.parquet"))?;
        theirs.push(seconds);
        their_bytes = bytes;
    }
    if args.only_ours {
        println!("vodsource: {:.3} s median, {our_bytes} bytes", median(ours));
        return Ok(());
    }
    let (ours, ours_json, theirs) = (median(ours), median(ours_json), median(theirs));
    println!("| writer | seconds | events/s | bytes/event in Parquet |");
    println!("|---|---|---|---|");
    println!(
        "| duckdb 2.0, 1 thread | {theirs:.2} | {:.0} | {:.2} |",
        n / theirs,
        their_bytes as f64 / n
    );
    println!(
        "| vodsource lake writer, 1 thread | {ours:.2} | {:.0} | {:.2} |",
        n / ours,
        our_bytes as f64 / n
    );
    println!(
        "| vodsource lake writer on JSON records, 1 thread | {ours_json:.2} | {:.0} | {:.2} |",
        n / ours_json,
        our_bytes as f64 / n
    );
    println!("speed-up {:.2}x, size {:.3}x duckdb's", theirs / ours, our_bytes as f64 / their_bytes as f64);
    if args.dir.is_none() {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    Ok(())
}
