//! Encoding workers as separate `vodsource encoder` processes sharing one data folder with a
//! `vodsource projector` (the supervisor): the worker holding a claim is killed with SIGKILL
//! mid-encode; its lease lapses, the supervisor requeues the job, and the other worker
//! encodes it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{clip, completion, encoding_worker, history, process_of, until, video_packet_flags, Children, BIN};
use vodsource_api::config::{Config, Options};
use vodsource_api::roles::Stores;
use vodsource_commands::ports::ObjectStore;
use vodsource_commands::CommandContext;
use vodsource_domain::{VideoCommand, VideoEvent};
use vodsource_infra::open_object_store;

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn spawn(data: &Path, args: &[&str]) -> Child {
    Command::new(BIN)
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env("VODSOURCE_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("vodsource starts")
}

/// The stores of the data folder `data`, as the processes open them.
async fn stores(data: &Path) -> (Stores, Arc<dyn ObjectStore>) {
    let config = Config::resolve(Options {
        data_dir: Some(data.to_owned()),
        ..Options::default()
    });
    let stores = Stores::open(&config).await.expect("stores");
    let objects = open_object_store(
        &format!("file://{}", data.join("objects").display()),
        &vodsource_infra::aws::AwsSettings::default(),
    )
    .await
    .expect("objects");
    (stores, objects)
}

/// Registers `source` as a video titled `title`, stores it and completes its upload: its id.
async fn uploaded(stores: &Stores, objects: &Arc<dyn ObjectStore>, source: &Path, title: &str) -> String {
    let id = uuid::Uuid::now_v7().to_string();
    let size = std::fs::metadata(source).expect("clip").len();
    let commands = stores.commands();
    let context = CommandContext::actor("tester");
    let register = VideoCommand::Register {
        owner: "tester".into(),
        title: title.into(),
        description: String::new(),
        tags: vec![],
        filename: "clip.mp4".into(),
        content_type: "video/mp4".into(),
        size_bytes: size,
        source_url: None,
        publish_when_playable: false,
    };
    commands.execute(&id, register, &context).await.expect("registered");
    let key = format!("sources/{id}/clip.mp4");
    let body = tokio::fs::File::open(source).await.expect("opens");
    objects.put(&key, Box::new(body), u64::MAX).await.expect("stored");
    let complete = VideoCommand::CompleteUpload {
        object_key: key,
        size_bytes: size,
        checksum: None,
    };
    commands.execute(&id, complete, &context).await.expect("uploaded");
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_encode_loses_its_lease_and_the_other_worker_finishes_the_job() {
    let dir = TempDir(std::env::temp_dir().join(format!("vodsource-enc-{}", uuid::Uuid::now_v7().simple())));
    let data = dir.0.join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let source = dir.0.join("clip.mp4");
    clip(&source, 20, "1280x720");

    let (stores, objects) = stores(&data).await;
    let mut children = Children(vec![spawn(&data, &["projector", "--encode-backoff-secs", "1"])]);
    // 6 s leases: progress every 2 s renews them with room to spare on a loaded machine.
    for _ in 0..2 {
        children.0.push(spawn(&data, &["encoder", "--encode-lease-secs", "6"]));
    }

    let id = uploaded(&stores, &objects, &source, "kill test").await;

    // Whoever claimed attempt 1 is encoding: find its process (worker ids carry the pid).
    let holder = until("attempt 1 encoding", Duration::from_secs(60), async || {
        encoding_worker(&*stores.log, &id, 1).await
    })
    .await;
    let victim = process_of(&children, &[1, 2], &holder);
    children.0[victim].kill().expect("SIGKILL");
    let _ = children.0[victim].wait();

    let (attempt, finisher) = until("the other worker to complete", Duration::from_secs(120), async || {
        completion(&*stores.log, &id).await
    })
    .await;
    // Attempt 2, unless a loaded machine let that lease lapse too; never the killed one.
    assert!(attempt >= 2, "the killed attempt never completes");
    assert_ne!(finisher, holder);
    let events = history(&*stores.log, &id).await;
    assert!(
        events.iter().any(|e| matches!(e,
            VideoEvent::EncodingRequeued { attempt: 2, reason, .. } if reason.contains("lease expired"))),
        "the supervisor requeued the lapsed claim: {events:?}"
    );
    assert!(!events
        .iter()
        .any(|e| matches!(e, VideoEvent::EncodingCompleted { attempt: 1, .. })));
    assert!(objects
        .head(&format!("media/{id}/{attempt}/master.m3u8"))
        .await
        .expect("head")
        .is_some());
    assert!(objects
        .head(&format!("media/{id}/1/master.m3u8"))
        .await
        .expect("head")
        .is_none());
}

/// The chunk `worker` holds unwritten and reports the encode stage of, in `events`.
fn chunk_in_progress(events: &[VideoEvent]) -> Option<(String, u32)> {
    let mut held: Vec<(String, u32)> = Vec::new();
    for event in events {
        match event {
            VideoEvent::ChunkClaimed { chunk, worker_id, .. } => held.push((worker_id.clone(), *chunk)),
            VideoEvent::ChunkEncoded { chunk, .. } => held.retain(|(_, c)| c != chunk),
            VideoEvent::EncodingProgressed {
                stage: vodsource_domain::EncodeStage::Encode,
                worker_id,
                percent,
                ..
            } if *percent > 0.0 => {
                // A run of frames (chunk 0 is the audio) well under way.
                if let Some(found) = held.iter().find(|(w, c)| w == worker_id && *c > 0) {
                    return Some(found.clone());
                }
            }
            _ => {}
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_chunk_costs_that_chunk_alone() {
    let dir = TempDir(std::env::temp_dir().join(format!("vodsource-chunks-{}", uuid::Uuid::now_v7().simple())));
    let data = dir.0.join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let source = dir.0.join("clip.mp4");
    clip(&source, 32, "1280x720");

    let (stores, objects) = stores(&data).await;
    let mut children = Children(vec![spawn(&data, &["projector", "--encode-backoff-secs", "1"])]);
    // Chunks of 8 s: the audio and four runs of frames, shared by three encoder processes.
    for _ in 0..3 {
        children.0.push(spawn(
            &data,
            &["encoder", "--encode-lease-secs", "6", "--chunk-seconds", "8"],
        ));
    }
    let id = uploaded(&stores, &objects, &source, "chunk kill test").await;

    let (victim_worker, victim_chunk) = until("a chunk encoding", Duration::from_secs(90), async || {
        chunk_in_progress(&history(&*stores.log, &id).await)
    })
    .await;
    let victim = process_of(&children, &[1, 2, 3], &victim_worker);
    children.0[victim].kill().expect("SIGKILL");
    let _ = children.0[victim].wait();

    let (attempt, _) = until("the others to complete", Duration::from_secs(180), async || {
        completion(&*stores.log, &id).await
    })
    .await;
    let events = history(&*stores.log, &id).await;
    assert_eq!(attempt, 1, "the attempt was not redone");
    assert!(!events.iter().any(|e| matches!(e, VideoEvent::EncodingRequeued { .. })));
    let count = |name: &str| events.iter().filter(|e| e.type_name() == name).count();
    assert_eq!(
        (count("RenditionEncoded"), count("EncodingCompleted")),
        (3, 1),
        "assembled once"
    );
    // Claims per chunk: the killed one twice (the second by another worker), every other once.
    let planned = events
        .iter()
        .find_map(|e| match e {
            VideoEvent::EncodingPlanned { chunks, .. } => Some(chunks.len()),
            _ => None,
        })
        .expect("planned");
    assert_eq!(planned, 5, "the audio and four runs");
    for chunk in 0..planned as u32 {
        let claims: Vec<&str> = events
            .iter()
            .filter_map(|e| match e {
                VideoEvent::ChunkClaimed {
                    chunk: c, worker_id, ..
                } if *c == chunk => Some(worker_id.as_str()),
                _ => None,
            })
            .collect();
        if chunk == victim_chunk {
            assert_eq!(claims.len(), 2, "chunk {chunk} redone once: {claims:?}");
            assert_eq!(claims[0], victim_worker);
            assert_ne!(claims[1], victim_worker);
        } else {
            assert_eq!(claims.len(), 1, "chunk {chunk} encoded once: {claims:?}");
        }
    }
    // Complete and correct: every picture of 32 s, a keyframe every 4 s and at 2 s (the short
    // first segment), read through the master.
    let packets = video_packet_flags(&data.join(format!("objects/media/{id}/1/master.m3u8")).to_string_lossy());
    assert_eq!(packets.len(), 32 * 25, "every picture (25 fps)");
    assert_eq!(
        packets.iter().filter(|f| f.starts_with('K')).count(),
        9,
        "a keyframe every 4 s, and at 2 s"
    );
}
