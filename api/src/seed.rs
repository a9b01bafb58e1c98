//! Sample lifecycles driven through the real command path, for demos, tests and benchmarks.

use vodsource_commands::{CommandContext, CommandError, VideoCommands};
use vodsource_domain::{EncodeStage, EncodingCost, Manifests, Rendition, VideoCommand};

/// The declared size of every sample source.
pub const SAMPLE_SOURCE_BYTES: u64 = 1000;

/// A `Register` command for a sample video.
pub fn register(title: &str) -> VideoCommand {
    VideoCommand::Register {
        owner: "alice".into(),
        title: title.into(),
        description: String::new(),
        tags: vec!["sample".into()],
        filename: "clip.mp4".into(),
        content_type: "video/mp4".into(),
        size_bytes: SAMPLE_SOURCE_BYTES,
        source_url: None,
        publish_when_playable: false,
    }
}

/// A `CompleteUpload` matching [`register`].
pub fn upload() -> VideoCommand {
    VideoCommand::CompleteUpload {
        object_key: "sources/clip".into(),
        size_bytes: SAMPLE_SOURCE_BYTES,
        checksum: None,
    }
}

fn rendition(name: &str, width: u32, height: u32, bitrate_bps: u64) -> Rendition {
    Rendition {
        name: name.into(),
        width,
        height,
        bitrate_bps,
        codecs: "avc1.64001f,mp4a.40.2".into(),
        playlist_key: format!("media/{name}.m3u8"),
        bytes: bitrate_bps / 8 * 20,
    }
}

/// Drives video `id` through a lifecycle chosen by `i % 7`: 0 published, 1 registered only,
/// 2 queued, 3 failed for good, 4 encoded, 5 published and renamed, 6 published then
/// deleted. A worker is simulated. Returns the number of commands sent.
///
/// # Errors
/// The first command that fails.
pub async fn lifecycle(commands: &VideoCommands, id: &str, i: usize) -> Result<usize, CommandError> {
    let ctx = CommandContext::actor("seed");
    let mut sent = 0;
    let mut run = |cmd: VideoCommand| {
        sent += 1;
        let commands = commands.clone();
        let ctx = ctx.clone();
        let id = id.to_owned();
        async move { commands.execute(&id, cmd, &ctx).await }
    };
    run(register(&format!("video {i}"))).await?;
    if i % 7 == 1 {
        return Ok(1);
    }
    run(upload()).await?;
    run(VideoCommand::RequestEncoding).await?;
    if i % 7 == 2 {
        return Ok(3);
    }
    let worker = format!("worker-{}", i % 3);
    run(VideoCommand::ClaimEncoding {
        worker_id: worker.clone(),
        attempt: 1,
        lease_secs: 60,
    })
    .await?;
    for (step, (name, width, height, bitrate)) in [("360p", 640, 360, 800_000), ("720p", 1280, 720, 2_800_000)]
        .into_iter()
        .enumerate()
    {
        run(VideoCommand::RecordProgress {
            worker_id: worker.clone(),
            attempt: 1,
            stage: EncodeStage::Encode,
            rendition: Some(name.into()),
            percent: 50.0 * (f64::from(u8::try_from(step).unwrap_or(0)) + 1.0),
            fps: Some(90.0),
            eta_seconds: Some(3),
            lease_secs: 60,
        })
        .await?;
        run(VideoCommand::RecordRendition {
            worker_id: worker.clone(),
            attempt: 1,
            rendition: rendition(name, width, height, bitrate),
        })
        .await?;
    }
    if i % 7 == 3 {
        run(VideoCommand::FailEncoding {
            worker_id: worker,
            attempt: 1,
            reason: "source is not a video".into(),
            retryable: false,
        })
        .await?;
        return Ok(sent);
    }
    run(VideoCommand::CompleteEncoding {
        worker_id: worker,
        attempt: 1,
        manifests: Manifests {
            hls_master_key: format!("media/{id}/1/master.m3u8"),
            dash_mpd_key: format!("media/{id}/1/manifest.mpd"),
        },
        poster_key: Some(format!("media/{id}/1/poster.jpg")),
        thumbnails_key: None,
        duration_ms: 20_000,
        cost: EncodingCost::default(),
    })
    .await?;
    if i % 7 != 4 {
        run(VideoCommand::Publish).await?;
    }
    if i % 7 == 5 {
        run(VideoCommand::UpdateMetadata {
            title: Some(format!("renamed {i}")),
            description: Some("now with a description".into()),
            tags: None,
        })
        .await?;
    }
    if i % 7 == 6 {
        run(VideoCommand::Delete { reason: None }).await?;
    }
    Ok(sent)
}
