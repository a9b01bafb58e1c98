//! The worker over real SQLite stores and a local object store: claims, progress, outputs,
//! cost, races between workers, deletion mid-encode, undecodable uploads.

use std::sync::Arc;
use std::time::Duration;

use vodsource_commands::ports::ObjectStore;
use vodsource_commands::CommandContext;
use vodsource_domain::{EncodeStage, Stage, VideoCommand, VideoEvent};
use vodsource_encoder::{JobOutcome, WorkerConfig};

use crate::helpers::{pattern, worker, worker_with, Running, World};

async fn exists(objects: &Arc<dyn ObjectStore>, key: &str) -> Option<u64> {
    objects.head(key).await.expect("head").map(|m| m.size)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_claims_reports_and_completes_only_after_every_output_is_stored() {
    let world = World::new().await;
    let source = pattern(world.dir.path(), "src.mp4", "854x480", 30, 5);
    let id = world.uploaded(&source).await;

    let outcome = worker(&world, "w1").run_one().await.expect("no store failure");
    assert_eq!(
        outcome,
        Some(JobOutcome::Completed {
            video_id: id.clone(),
            attempt: 1
        })
    );

    let history = world.history(&id).await;
    let names: Vec<&str> = history.iter().map(VideoEvent::type_name).collect();
    let claimed = names.iter().position(|n| *n == "EncodingClaimed").expect("claimed");
    let probed = names.iter().position(|n| *n == "SourceProbed").expect("probed");
    let completed = names.iter().position(|n| *n == "EncodingCompleted").expect("completed");
    assert!(claimed < probed && probed < completed, "{names:?}");
    assert_eq!(
        names.iter().filter(|n| **n == "RenditionEncoded").count(),
        2,
        "480p and 360p: {names:?}"
    );
    let probe = history.iter().find_map(|e| match e {
        VideoEvent::SourceProbed { probe, .. } => Some(probe.clone()),
        _ => None,
    });
    let probe = probe.expect("probe");
    assert_eq!((probe.width, probe.height, probe.rotation), (854, 480, 0));
    assert_eq!((probe.frame_rate, probe.variable_frame_rate), (30.0, false));
    assert_eq!(probe.video_codec.as_deref(), Some("h264"));
    assert_eq!(probe.audio_codec.as_deref(), Some("aac"));
    assert!((4900..=5100).contains(&probe.duration_ms), "{}", probe.duration_ms);

    let Some(VideoEvent::EncodingCompleted {
        manifests,
        poster_key,
        thumbnails_key,
        duration_ms,
        cost,
        worker_id,
        ..
    }) = history
        .iter()
        .find(|e| matches!(e, VideoEvent::EncodingCompleted { .. }))
        .cloned()
    else {
        panic!("no completion");
    };
    assert_eq!(worker_id, "w1");
    assert_eq!(duration_ms, 5000);
    assert_eq!(manifests.hls_master_key, format!("media/{id}/1/master.m3u8"));
    assert_eq!(manifests.dash_mpd_key, format!("media/{id}/1/manifest.mpd"));
    // Everything the events name is in the object store, and bytes_out counts what was stored.
    let objects = world.dir.path().join("data/objects");
    for key in [
        &manifests.hls_master_key,
        &manifests.dash_mpd_key,
        &poster_key.expect("poster"),
        &thumbnails_key.expect("thumbs"),
    ] {
        assert!(exists(&world.objects, key).await.is_some(), "{key} is stored");
    }
    let stored: u64 = walk(&objects.join(format!("media/{id}/1")));
    assert_eq!(cost.bytes_out, stored);
    assert!(cost.cpu_seconds > 0.0 && cost.wall_seconds > 0.0, "{cost:?}");
    for event in &history {
        if let VideoEvent::RenditionEncoded { rendition, .. } = event {
            assert!(exists(&world.objects, &rendition.playlist_key).await.is_some());
            assert!(
                rendition.bytes > 0 && rendition.codecs.ends_with(",mp4a.40.2"),
                "{rendition:?}"
            );
        }
    }
    let progressed: Vec<(EncodeStage, f64)> = history
        .iter()
        .filter_map(|e| match e {
            VideoEvent::EncodingProgressed { stage, percent, .. } => Some((*stage, *percent)),
            _ => None,
        })
        .collect();
    assert!(!progressed.is_empty(), "progress is reported while encoding");
    assert!(
        progressed.windows(2).all(|w| w[0].1 <= w[1].1 || w[1].0 != w[0].0),
        "{progressed:?}"
    );
    // The scratch folder is gone; the job is no longer offered.
    assert_eq!(std::fs::read_dir(world.work_dir()).map(Iterator::count).unwrap_or(0), 0);
    world.supervise().await;
    assert_eq!(worker(&world, "w2").run_one().await.expect("no store failure"), None);
    let video = world.stores.commands().store().load(&id).await.expect("loads").video;
    assert_eq!(video.stage, Stage::Ready);
}

fn walk(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| {
                    let path = e.path();
                    if path.is_dir() {
                        walk(&path)
                    } else {
                        e.metadata().map_or(0, |m| m.len())
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_starts_on_an_offer_made_in_its_process_without_waiting_for_its_poll() {
    let world = World::new().await;
    let source = pattern(world.dir.path(), "short.mp4", "320x240", 30, 1);
    // Idle from the start: the next poll would come in an hour.
    let running = Running::spawn(worker_with(&world, "idle", |c| {
        c.poll_every = Duration::from_secs(3600)
    }));
    let id = world.uploaded(&source).await;
    world
        .wait_for_event(
            &id,
            "the idle worker's claim",
            |e| matches!(e, VideoEvent::EncodingClaimed { worker_id, .. } if worker_id == "idle"),
        )
        .await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_racing_for_one_job_encode_it_once() {
    let world = World::new().await;
    let source = pattern(world.dir.path(), "src.mp4", "640x360", 25, 2);
    let id = world.uploaded(&source).await;
    let (a, b) = (worker(&world, "a"), worker(&world, "b"));
    let (ra, rb) = tokio::join!(a.run_one(), b.run_one());
    let outcomes = [ra.expect("a"), rb.expect("b")];
    let completed: Vec<&JobOutcome> = outcomes.iter().flatten().collect();
    assert_eq!(completed.len(), 1, "{outcomes:?}");
    let claims = world
        .history(&id)
        .await
        .iter()
        .filter(|e| matches!(e, VideoEvent::EncodingClaimed { .. }))
        .count();
    assert_eq!(claims, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_video_mid_encode_stops_the_encode_and_removes_partial_outputs() {
    let world = World::new().await;
    let source = pattern(world.dir.path(), "long.mp4", "1280x720", 30, 30);
    let id = world.uploaded(&source).await;
    let job = {
        let worker = worker(&world, "w1");
        tokio::spawn(async move { worker.run_one().await })
    };
    world
        .wait_for_event(&id, "progress while encoding", |e| {
            matches!(e, VideoEvent::EncodingProgressed { stage: EncodeStage::Encode, percent, .. } if *percent > 0.0)
        })
        .await;
    world
        .stores
        .commands()
        .execute(
            &id,
            VideoCommand::Delete { reason: None },
            &CommandContext::actor("owner"),
        )
        .await
        .expect("deleted");
    let outcome = tokio::time::timeout(Duration::from_secs(20), job)
        .await
        .expect("the encode stops within seconds")
        .expect("joins")
        .expect("no store failure");
    match outcome {
        Some(JobOutcome::Abandoned { reason, attempt: 1, .. }) => assert!(reason.contains("deleted"), "{reason}"),
        other => panic!("expected an abandoned job, got {other:?}"),
    }
    assert!(exists(&world.objects, &format!("media/{id}/1/master.m3u8"))
        .await
        .is_none());
    assert_eq!(walk(&world.dir.path().join(format!("data/objects/media/{id}"))), 0);
    assert_eq!(std::fs::read_dir(world.work_dir()).map(Iterator::count).unwrap_or(0), 0);
    let last = world.history(&id).await.last().cloned();
    assert!(
        matches!(last, Some(VideoEvent::VideoDeleted { .. })),
        "nothing after the deletion: {last:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_upload_is_a_terminal_failure_with_its_reason() {
    let world = World::new().await;
    let source = world.dir.path().join("notes.mp4");
    std::fs::write(&source, "not a video at all\n".repeat(50)).expect("write");
    let id = world.uploaded(&source).await;
    let outcome = worker(&world, "w1").run_one().await.expect("no store failure");
    match outcome {
        Some(JobOutcome::Failed {
            retryable: false,
            reason,
            ..
        }) => assert!(reason.contains("not a media file"), "{reason}"),
        other => panic!("expected a terminal failure, got {other:?}"),
    }
    world.supervise().await;
    let video = world.stores.commands().store().load(&id).await.expect("loads").video;
    assert_eq!(video.stage, Stage::Failed);
    assert_eq!(video.attempt, 1, "bad media is not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stopped_mid_encode_fails_the_attempt_as_retryable_and_another_worker_finishes() {
    let world = World::new().await;
    let source = pattern(world.dir.path(), "long.mp4", "1280x720", 30, 20);
    let id = world.uploaded(&source).await;
    let first = Running::spawn(worker(&world, "first"));
    world
        .wait_for_event(&id, "progress while encoding", |e| {
            matches!(
                e,
                VideoEvent::EncodingProgressed {
                    stage: EncodeStage::Encode,
                    ..
                }
            )
        })
        .await;
    first.stop().await;
    world.supervise().await;
    let history = world.history(&id).await;
    assert!(
        history.iter().any(|e| matches!(e,
        VideoEvent::EncodingFailed { attempt: 1, retryable: true, reason, .. } if reason.contains("shut down"))),
        "{history:?}"
    );
    assert!(history
        .iter()
        .any(|e| matches!(e, VideoEvent::EncodingRequeued { attempt: 2, .. })));
    let outcome = worker(&world, "second").run_one().await.expect("no store failure");
    assert_eq!(
        outcome,
        Some(JobOutcome::Completed {
            video_id: id.clone(),
            attempt: 2
        })
    );
    assert!(exists(&world.objects, &format!("media/{id}/2/master.m3u8"))
        .await
        .is_some());
    assert_eq!(walk(&world.dir.path().join(format!("data/objects/media/{id}/1"))), 0);
}

/// The failure `outcome` must be: terminal, with a reason containing `needle`.
fn terminal(outcome: Option<JobOutcome>, needle: &str) -> String {
    match outcome {
        Some(JobOutcome::Failed {
            retryable: false,
            reason,
            ..
        }) => {
            assert!(reason.contains(needle), "{reason}");
            reason
        }
        other => panic!("expected a terminal failure naming {needle}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_past_a_limit_fails_for_good_naming_the_limit() {
    let world = World::new().await;
    let source = pattern(world.dir.path(), "two.mp4", "320x240", 30, 2);
    for (limit, configure) in [
        (
            "max_source_duration_secs",
            Box::new(|c: &mut WorkerConfig| c.limits.max_duration = Duration::from_secs(1))
                as Box<dyn Fn(&mut WorkerConfig)>,
        ),
        (
            "max_source_pixels",
            Box::new(|c: &mut WorkerConfig| c.limits.max_pixels = 320 * 200),
        ),
        (
            "max_source_fps",
            Box::new(|c: &mut WorkerConfig| c.limits.max_frame_rate = 25.0),
        ),
        // No time at all: the heartbeat stops the attempt at its first beat.
        (
            "encode_time_factor",
            Box::new(|c: &mut WorkerConfig| {
                c.limits.wall_time_factor = 0.0;
                c.limits.wall_time_floor = Duration::ZERO;
            }),
        ),
    ] {
        let id = world.uploaded(&source).await;
        let mut config = WorkerConfig::new("limited", world.work_dir());
        config.progress_every = Duration::from_millis(100);
        configure(&mut config);
        let outcome = world
            .stores
            .worker(world.objects.clone(), config)
            .run_one()
            .await
            .expect("no store failure");
        let reason = terminal(outcome, limit);
        world.supervise().await;
        let video = world.stores.commands().store().load(&id).await.expect("loads").video;
        assert_eq!((video.stage, video.attempt), (Stage::Failed, 1), "{limit}: not retried");
        assert_eq!(
            walk(&world.dir.path().join(format!("data/objects/media/{id}/1"))),
            0,
            "{limit}: nothing left behind ({reason})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_replaced_after_its_upload_was_recorded_is_refused() {
    let world = World::new().await;
    let source = pattern(world.dir.path(), "short.mp4", "320x240", 30, 1);
    let id = world.uploaded(&source).await;
    // The bytes behind the recorded source change size (an upload link used again).
    let key = format!("sources/{id}/clip.mp4");
    let bigger = [std::fs::read(&source).expect("source"), vec![0u8; 4096]].concat();
    world
        .objects
        .put(&key, Box::new(std::io::Cursor::new(bigger)), u64::MAX)
        .await
        .expect("replaced");
    let outcome = worker(&world, "w1").run_one().await.expect("no store failure");
    terminal(outcome, "not the");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_enough_encode_is_recorded_playable_before_its_end_unless_progressive_is_off() {
    let world = World::new().await;
    // 40 s: the first segments are stored long before the last one is encoded.
    let source = pattern(world.dir.path(), "src.mp4", "640x360", 30, 40);
    let progressive = world.uploaded(&source).await;
    let outcome = worker(&world, "w1").run_one().await.expect("no store failure");
    assert!(matches!(outcome, Some(JobOutcome::Completed { .. })), "{outcome:?}");
    let history = world.history(&progressive).await;
    let names: Vec<&str> = history.iter().map(VideoEvent::type_name).collect();
    let playable = names.iter().position(|n| *n == "VideoPlayable").expect("playable");
    let rendition = names.iter().position(|n| *n == "RenditionEncoded").expect("rendition");
    let completed = names.iter().position(|n| *n == "EncodingCompleted").expect("completed");
    assert!(playable < rendition && rendition < completed, "{names:?}");
    let manifests = |event: &VideoEvent| match event {
        VideoEvent::VideoPlayable { manifests, .. } | VideoEvent::EncodingCompleted { manifests, .. } => {
            Some(manifests.clone())
        }
        _ => None,
    };
    assert_eq!(
        manifests(&history[playable]),
        manifests(&history[completed]),
        "the manifests that played are the ones completed"
    );

    // The earlier path: everything stored at the end, nothing playable before.
    world.supervise().await;
    let whole = world.uploaded(&source).await;
    let outcome = worker_with(&world, "w2", |config| config.progressive = false)
        .run_one()
        .await
        .expect("no store failure");
    assert!(matches!(outcome, Some(JobOutcome::Completed { .. })), "{outcome:?}");
    let names: Vec<String> = world
        .history(&whole)
        .await
        .iter()
        .map(|e| e.type_name().to_owned())
        .collect();
    assert!(!names.iter().any(|n| n == "VideoPlayable"), "{names:?}");
    assert!(names.iter().any(|n| n == "EncodingCompleted"), "{names:?}");
}

/// Chunk indexes of `history`'s claims, in order.
fn chunk_claims(history: &[VideoEvent]) -> Vec<u32> {
    history
        .iter()
        .filter_map(|e| match e {
            VideoEvent::ChunkClaimed { chunk, .. } => Some(*chunk),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stopped_mid_chunk_gives_the_chunk_back_and_another_writes_it_without_waiting_for_its_lease() {
    let world = World::new().await;
    let source = pattern(world.dir.path(), "src.mp4", "640x360", 30, 16);
    let id = world.uploaded(&source).await;
    // Leases of an hour: a chunk that is not given back stays held past the test's deadline.
    let chunked = |c: &mut WorkerConfig| {
        c.chunk_seconds = 8;
        c.lease_secs = 3600;
    };
    let first = Running::spawn(worker_with(&world, "first", chunked));
    // A run of frames (chunk 0 is the audio, done in a moment): seconds of work, so the stop
    // lands in it.
    world
        .wait_for_event(
            &id,
            "the first worker's run of frames",
            |e| matches!(e, VideoEvent::ChunkClaimed { chunk, worker_id, .. } if *chunk > 0 && worker_id == "first"),
        )
        .await;
    first.stop().await;
    let history = world.history(&id).await;
    let held: Vec<u32> = history
        .iter()
        .filter_map(|e| match e {
            VideoEvent::ChunkClaimed { chunk, worker_id, .. } if worker_id == "first" => Some(*chunk),
            _ => None,
        })
        .collect();
    let written: Vec<u32> = history
        .iter()
        .filter_map(|e| match e {
            VideoEvent::ChunkEncoded { chunk, .. } => Some(*chunk),
            _ => None,
        })
        .collect();
    let released: Vec<u32> = history
        .iter()
        .filter_map(|e| match e {
            VideoEvent::ChunkReleased { chunk, worker_id, .. } if worker_id == "first" => Some(*chunk),
            _ => None,
        })
        .collect();
    let unwritten: Vec<u32> = held.iter().copied().filter(|c| !written.contains(c)).collect();
    assert!(!unwritten.is_empty(), "stopped mid-chunk: {history:?}");
    assert_eq!(released, unwritten, "every chunk it held unwritten is given back");

    world.supervise().await;
    let outcome = worker_with(&world, "second", chunked)
        .run_one()
        .await
        .expect("no store failure");
    assert_eq!(
        outcome,
        Some(JobOutcome::Completed {
            video_id: id.clone(),
            attempt: 1
        }),
        "{:?}",
        world.history(&id).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_share_a_chunked_attempt_and_its_playlists_are_a_single_encodes() {
    let world = World::new().await;
    let source = pattern(world.dir.path(), "src.mp4", "854x480", 30, 24);
    // The same source encoded whole by one worker, for comparison.
    let single = world.uploaded(&source).await;
    let outcome = worker(&world, "single").run_one().await.expect("no store failure");
    assert!(matches!(outcome, Some(JobOutcome::Completed { .. })), "{outcome:?}");

    let id = world.uploaded(&source).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let workers: Vec<_> = ["w1", "w2", "w3"]
        .into_iter()
        .map(|name| {
            let worker = worker_with(&world, name, |c| {
                c.chunk_seconds = 8;
                c.poll_every = Duration::from_millis(50);
            });
            let mut stopped = stopped.clone();
            tokio::spawn(worker.run(async move {
                let _ = stopped.wait_for(|s| *s).await;
            }))
        })
        .collect();
    // The supervisor offers the planned attempt again, for the idle workers to find.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        world.supervise().await;
        let history = world.history(&id).await;
        if history
            .iter()
            .any(|e| matches!(e, VideoEvent::EncodingCompleted { .. }))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not completed: {:?}",
            history.iter().map(VideoEvent::type_name).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop.send(true);
    for worker in workers {
        worker.await.expect("joins").expect("no error");
    }

    let history = world.history(&id).await;
    let plan = history.iter().find_map(|e| match e {
        VideoEvent::EncodingPlanned { chunks, .. } => Some(chunks.clone()),
        _ => None,
    });
    let plan = plan.expect("planned");
    assert_eq!(plan.len(), 4, "the audio and three runs of 8 s: {plan:?}");
    let mut claims = chunk_claims(&history);
    claims.sort_unstable();
    assert_eq!(claims, [0, 1, 2, 3], "each chunk claimed once");
    let writers: std::collections::HashSet<String> = history
        .iter()
        .filter_map(|e| match e {
            VideoEvent::ChunkEncoded { worker_id, .. } => Some(worker_id.clone()),
            _ => None,
        })
        .collect();
    assert!(writers.len() >= 2, "the chunks were shared: {writers:?}");
    // Assembled once, by the writer of the last chunk.
    let count = |name: &str| history.iter().filter(|e| e.type_name() == name).count();
    assert_eq!((count("RenditionEncoded"), count("EncodingCompleted")), (2, 1));
    // The cost sums every chunk's.
    let chunk_cpu: f64 = history
        .iter()
        .filter_map(|e| match e {
            VideoEvent::ChunkEncoded { output, .. } => Some(output.cost.cpu_seconds),
            _ => None,
        })
        .sum();
    let Some(VideoEvent::EncodingCompleted { cost, duration_ms, .. }) = history
        .iter()
        .find(|e| matches!(e, VideoEvent::EncodingCompleted { .. }))
        .cloned()
    else {
        panic!("completed")
    };
    // Costs are recorded to the millisecond; the sum of the chunks' may carry float noise.
    assert!(
        cost.cpu_seconds + 0.0005 >= chunk_cpu && chunk_cpu > 0.0,
        "{cost:?} against {chunk_cpu}"
    );
    assert_eq!(duration_ms, 24_000);

    // The media playlists are the single encode's, byte for byte; so is every segment's
    // timing, and the MPD's timelines.
    let objects = world.dir.path().join("data/objects/media");
    let read = |video: &str, file: &str| {
        std::fs::read_to_string(objects.join(video).join("1").join(file))
            .unwrap_or_else(|e| panic!("{video}/{file}: {e}"))
    };
    for track in ["480p", "360p", "audio"] {
        let file = format!("{track}/index.m3u8");
        assert_eq!(read(&id, &file), read(&single, &file), "{file}");
    }
    let timelines = |mpd: String| -> Vec<String> {
        mpd.lines()
            .filter(|l| l.trim_start().starts_with("<S ") || l.contains("SegmentTemplate"))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        timelines(read(&id, "manifest.mpd")),
        timelines(read(&single, "manifest.mpd"))
    );
    assert!(
        read(&id, "thumbs/thumbnails.vtt").matches("#xywh=").count() == 12,
        "a tile every 2 s"
    );
    let packets = |video: &str| crate::helpers::video_packets(&objects.join(video).join("1").join("master.m3u8"));
    assert_eq!(
        packets(&id),
        packets(&single),
        "timestamps and keyframes, read through the master"
    );
}
