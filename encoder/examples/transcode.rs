//! Transcodes one file into a folder: `cargo run --release -p vodsource-encoder --example transcode -- <source> <out_dir>`.
use std::sync::atomic::AtomicBool;

use vodsource_encoder::ladder::LadderConfig;
use vodsource_encoder::media::{probe, transcode, Job, Progress};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(source), Some(out)) = (args.next(), args.next()) else {
        return Err("usage: transcode <source> <out_dir>".into());
    };
    let source = std::path::PathBuf::from(source);
    let out = std::path::PathBuf::from(out);
    std::fs::create_dir_all(&out)?;
    let probed = probe(&source)?;
    println!("{:?}", probed);
    let started = std::time::Instant::now();
    let config = LadderConfig::default();
    let cancel = AtomicBool::new(false);
    let progress = Progress::default();
    let packaged = transcode(&Job {
        source: &source,
        probed: &probed,
        out_dir: &out,
        config: &config,
        cancel: &cancel,
        progress: &progress,
    })?;
    println!(
        "{} files in {:.2?}; {:?}",
        packaged.files.len(),
        started.elapsed(),
        packaged
            .rungs
            .iter()
            .map(|(r, t)| (r.name.clone(), t.average_bandwidth()))
            .collect::<Vec<_>>()
    );
    Ok(())
}
