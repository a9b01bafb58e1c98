//! Media for tests, made at test time with FFmpeg's lavfi sources (nothing committed), and
//! ffprobe as the independent reader of what vodsource wrote.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn tool(name: &str) -> Command {
    let mut command = Command::new(name);
    command.arg("-v").arg("error");
    command
}

fn run(mut command: Command) -> Vec<u8> {
    let output = command.output().unwrap_or_else(|e| {
        panic!("{command:?} did not start ({e}); install FFmpeg with `scripts/services.sh start ffmpeg`")
    });
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// Makes `dir/name` with `ffmpeg -y <args> <dir/name>`.
#[allow(clippy::missing_panics_doc)]
pub fn clip(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let mut command = tool("ffmpeg");
    command.arg("-y").args(args).arg(&path);
    run(command);
    path
}

/// A test-pattern clip with a tone: `size` like `1280x720`, `rate` frames/s, `seconds`.
pub fn pattern(dir: &Path, name: &str, size: &str, rate: u32, seconds: u32) -> PathBuf {
    pattern_with(dir, name, (size, rate, seconds), &[])
}

/// [`pattern`] with more output options (`-g 30`: a keyframe every 30 pictures).
pub fn pattern_with(dir: &Path, name: &str, (size, rate, seconds): (&str, u32, u32), more: &[&str]) -> PathBuf {
    let (input, seconds) = (format!("testsrc2=size={size}:rate={rate}"), seconds.to_string());
    let mut args = vec![
        "-f",
        "lavfi",
        "-i",
        &input,
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=44100",
        "-t",
        &seconds,
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-c:a",
        "aac",
        "-shortest",
    ];
    args.extend_from_slice(more);
    clip(dir, name, &args)
}

/// Sets the display matrix of an MP4's first track to "turn 90° clockwise", as phones record
/// portrait video (FFmpeg 5.1's CLI cannot write it).
pub fn rotate_90(path: &Path) {
    let mut bytes = std::fs::read(path).expect("read mp4");
    let tkhd = bytes.windows(4).position(|w| w == b"tkhd").expect("a tkhd box");
    // version 0 tkhd: the matrix follows 40 bytes of fields after the box type.
    let matrix: [i32; 9] = [0, 65536, 0, -65536, 0, 0, 0, 0, 0x4000_0000];
    for (i, value) in matrix.iter().enumerate() {
        let at = tkhd + 44 + i * 4;
        bytes[at..at + 4].copy_from_slice(&value.to_be_bytes());
    }
    std::fs::write(path, bytes).expect("write mp4");
}

/// ffprobe's JSON for `path` with `args` (such as `-show_streams`).
pub fn ffprobe(path: &Path, args: &[&str]) -> Value {
    let mut command = tool("ffprobe");
    command.args(args).args(["-of", "json"]).arg(path);
    let out = run(command);
    serde_json::from_slice(&out).expect("ffprobe prints JSON")
}

/// The video packets of `path`: (pts seconds, keyframe).
pub fn video_packets(path: &Path) -> Vec<(f64, bool)> {
    let json = ffprobe(
        path,
        &["-select_streams", "v:0", "-show_entries", "packet=pts_time,flags"],
    );
    let mut packets: Vec<(f64, bool)> = json["packets"]
        .as_array()
        .expect("packets")
        .iter()
        .map(|p| {
            let pts: f64 = p["pts_time"].as_str().and_then(|t| t.parse().ok()).expect("pts_time");
            (pts, p["flags"].as_str().is_some_and(|f| f.starts_with('K')))
        })
        .collect();
    packets.sort_by(|a, b| a.0.total_cmp(&b.0));
    packets
}
