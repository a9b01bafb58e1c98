//! `vodsource transcode <source> <out_dir>`: the encoder's ladder on one local file, without
//! any store: for trying a ladder file, checking a troublesome upload, and the benchmark.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::Context;
use vodsource_encoder::media::{lead_rungs, probe, transcode, Job, Progress};
use vodsource_encoder::worker::process_cpu_seconds;

use crate::config::Config;

/// `vodsource transcode` arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The source file.
    pub source: PathBuf,
    /// The folder that receives the ladder (created; must be empty or absent).
    pub out_dir: PathBuf,
    /// Encode the low rungs ahead of the others, as a progressively published video does
    /// (`lead_max_height` and `lead_buffer_mib` of the ladder), to see what that costs.
    #[arg(long)]
    pub lead: bool,
}

/// Probes and transcodes; prints what it made and what it cost.
///
/// # Errors
/// An unreadable source or ladder file, a non-empty output folder, or the transcode's reason.
pub fn run(config: &Config, args: &Args) -> anyhow::Result<()> {
    // The configured ladder file and x264 settings, as for `serve` and `encoder`.
    let mut ladder = crate::settings::ladder(config)?;
    // Unset: the memory available now, as an encoder alone in its process takes it.
    let buffer_mib = *ladder.lead_buffer_mib.get_or_insert_with(|| {
        vodsource_encoder::ladder::auto_lead_buffer_mib(vodsource_encoder::memory::available(), 1)
    });
    if args.out_dir.read_dir().is_ok_and(|mut d| d.next().is_some()) {
        anyhow::bail!("{} is not empty", args.out_dir.display());
    }
    std::fs::create_dir_all(&args.out_dir).with_context(|| format!("creating {}", args.out_dir.display()))?;
    let started = Instant::now();
    let cpu = process_cpu_seconds();
    let of_source = |e: vodsource_encoder::media::MediaError| anyhow::anyhow!("{}: {e}", args.source.display());
    let probed = probe(&args.source).map_err(of_source)?;
    println!("source: {:?}", probed.probe);
    if args.lead {
        let lead = lead_rungs(&probed, &ladder).map_err(of_source)?;
        if lead.is_empty() {
            println!("lead: none (no larger rung would remain, or the source is past 1080p60)");
        } else {
            println!(
                "lead: {} ahead, {}",
                lead.join(", "),
                if buffer_mib == 0 {
                    "from a decode of their own".to_owned()
                } else {
                    format!(
                        "on the one decode; the larger rungs' pictures up to {} MiB in memory (a queue of at most 10 s, past it when the lead must go on), then {} MiB on disk",
                        buffer_mib, ladder.lead_spill_mib
                    )
                }
            );
        }
    }
    let packaged = transcode(&Job {
        source: &args.source,
        probed: &probed,
        out_dir: &args.out_dir,
        config: &ladder,
        limits: &vodsource_encoder::SourceLimits::default(),
        cancel: &AtomicBool::new(false),
        progress: &Progress::default(),
        lead: args.lead,
    })
    .map_err(of_source)?;
    for (rung, track) in &packaged.rungs {
        println!(
            "{:>6} {:>4}x{:<4} target {:>5} kbit/s  average {:>5} kbit/s  peak {:>5} kbit/s  {} segments",
            rung.name,
            rung.width,
            rung.height,
            rung.bitrate_bps / 1000,
            track.average_bandwidth() / 1000,
            track.peak_bandwidth() / 1000,
            track.segments.len()
        );
    }
    if args.lead {
        match packaged.second_decode_from {
            None => println!("decodes: one"),
            Some(picture) => println!("decodes: two, the larger rungs' own from picture {picture}"),
        }
        if let Some(spilled) = packaged.spilled {
            println!(
                "past the queue: {} pictures of the larger rungs from picture {}, {} of them on disk; at most {} MiB in memory, {} MiB on disk",
                spilled.pictures,
                spilled.from,
                spilled.on_disk,
                spilled.peak_held_bytes.div_ceil(1 << 20),
                spilled.peak_bytes.div_ceil(1 << 20)
            );
        }
    }
    let cpu = match (cpu, process_cpu_seconds()) {
        (Some(before), Some(after)) => format!("{:.2}", after - before),
        _ => "?".into(),
    };
    println!(
        "{} files, {:.1} s of media, wall {:.2} s, cpu {cpu} s -> {}",
        packaged.files.len(),
        packaged.duration_ms as f64 / 1000.0,
        started.elapsed().as_secs_f64(),
        args.out_dir.join(&packaged.hls_master).display()
    );
    Ok(())
}
