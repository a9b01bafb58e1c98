//! End to end in the distributed shape, each role its own process: events on PostgreSQL, views
//! on DynamoDB, objects on S3 (moto), streams on Kafka (Tansu). `vodsource setup` creates the
//! stores; then register → upload through the presigned URL with a plain HTTP PUT →
//! upload-complete → a `vodsource encoder` process encodes a real clip → publish → the master
//! playlist, a rendition playlist and a segment through the playback URLs → beacons → the lake
//! on S3 holds them → `vodsource qoe query` counts them there.
//!
//! Then a second clip is encoding when the encoder holding its claim and the projector running
//! the encoding supervisor are both killed with SIGKILL: the standby projector takes the
//! supervisor over, requeues the lapsed claim, the other encoder finishes it, once. Then the
//! remaining projector is killed too, `vodsource replay --all` rebuilds every DynamoDB view
//! from the events (a new generation; the old one's items are deleted) and the rebuilt views
//! equal the ones kept live through the kills, item for item and index entry for index entry;
//! a new projector process carries on.
#![cfg(all(
    feature = "postgres",
    feature = "dynamodb",
    feature = "kafka",
    feature = "s3",
    feature = "lake-sql"
))]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{
    clip, completion, encoding_worker, history, process_of, ready, serve_on_any_port, until, upload,
    video_packet_flags, Children, BIN, LOG_WITH_ADDRESS,
};
use serde_json::{json, Value};
use vodsource_domain::VideoEvent;

// Where each role's process is in `Children` (the API is 0, the relay 3, the sink 4).
const PROJECTORS: [usize; 2] = [1, 2];
const ENCODERS: [usize; 2] = [5, 6];

/// The settings every process of the deployment shares.
struct Deployment {
    env: Vec<(String, String)>,
    data: std::path::PathBuf,
    prefix: String,
}

impl Deployment {
    fn new() -> Self {
        let id = uuid::Uuid::now_v7().simple().to_string();
        let pg = std::env::var("VODSOURCE_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let sep = if pg.contains('?') { '&' } else { '?' };
        let aws = std::env::var("VODSOURCE_TEST_AWS_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5000".into());
        let env = [
            ("VODSOURCE_EVENT_STORE", format!("{pg}{sep}schema=t_e2e_{id}")),
            ("VODSOURCE_VIEW_STORE", format!("dynamodb://?prefix=t-e2e-{id}-")),
            ("VODSOURCE_OBJECT_STORE", format!("s3://e2e-{}/vod", &id[..24])),
            (
                "VODSOURCE_STREAM",
                format!("kafka://127.0.0.1:9092?partitions=2&prefix=t-e2e-{id}-"),
            ),
            ("VODSOURCE_LAKE_FLUSH_SECS", "1".into()),
            ("VODSOURCE_LOG", "warn".into()),
            ("AWS_ENDPOINT_URL", aws),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", "vodsource".into()),
            ("AWS_SECRET_ACCESS_KEY", "vodsource".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let data = std::env::temp_dir().join(format!("vodsource-e2e-{id}"));
        std::fs::create_dir_all(&data).expect("data dir");
        Self {
            env,
            data,
            prefix: format!("t-e2e-{id}-"),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command
            .arg("--data-dir")
            .arg(&self.data)
            .args(args)
            .envs(self.env.iter().cloned());
        command
    }

    fn var(&self, name: &str) -> &str {
        self.env
            .iter()
            .find_map(|(k, v)| (k == name).then_some(v.as_str()))
            .unwrap_or_default()
    }

    fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("vodsource starts")
    }

    fn sql(&self, sql: &str) -> String {
        let output = self
            .command(&["qoe", "query", "--format", "csv", sql])
            .output()
            .expect("qoe query runs");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// Publishes `id` and waits for its playback URLs.
async fn published_playback(client: &reqwest::Client, base: &str, id: &str) -> Value {
    let published = client
        .post(format!("{base}/v1/videos/{id}/publish"))
        .send()
        .await
        .expect("publish");
    assert!(published.status().is_success());
    until("playback URLs", Duration::from_secs(30), async || {
        let r = client
            .get(format!("{base}/v1/videos/{id}/playback"))
            .send()
            .await
            .ok()?;
        r.status().is_success().then_some(())?;
        r.json().await.ok()
    })
    .await
}

/// The first URI line of a playlist (`#EXT-X-MAP` URIs included), resolved against `base`.
fn first_uri(playlist: &str, base: &str) -> String {
    let uri = playlist
        .lines()
        .find_map(|line| {
            if let Some(rest) = line.strip_prefix("#EXT-X-MAP:URI=\"") {
                return rest.split('"').next().map(ToOwned::to_owned);
            }
            (!line.starts_with('#') && !line.trim().is_empty()).then(|| line.trim().to_owned())
        })
        .expect("a URI in the playlist");
    let dir = base.rsplit_once('/').map_or(base, |(dir, _)| dir);
    format!("{dir}/{uri}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_video_goes_end_to_end_through_every_role_as_its_own_process() {
    let deployment = Deployment::new();
    let setup = deployment.command(&["setup"]).output().expect("setup runs");
    assert!(
        setup.status.success(),
        "vodsource setup: {} (start the services with `scripts/services.sh start postgres kafka aws`)",
        String::from_utf8_lossy(&setup.stderr)
    );
    let mut api = deployment.command(&["--log-json", "api", "--listen", "127.0.0.1:0"]);
    api.env("VODSOURCE_LOG", LOG_WITH_ADDRESS);
    let (api, base) = serve_on_any_port(api);
    // Two of the roles that scale out: projectors stand by for each other's leases, encoders
    // share the jobs. Short claim leases and backoff, so a killed encoder's job moves on soon
    // (6 s: progress every 2 s renews it with room to spare on a loaded machine).
    let projector = ["projector", "--encode-backoff-secs", "1"];
    // Sources of 24 s or more are split into chunks of 12 s that either encoder may claim.
    let encoder = [
        "encoder",
        "--workers",
        "1",
        "--encode-lease-secs",
        "6",
        "--chunk-seconds",
        "12",
    ];
    let mut roles = Children(vec![
        api,
        deployment.spawn(&projector),
        deployment.spawn(&projector),
        deployment.spawn(&["relay"]),
        deployment.spawn(&["qoe-sink"]),
        deployment.spawn(&encoder),
        deployment.spawn(&encoder),
    ]);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    until("the API answers", Duration::from_secs(30), async || {
        let r = client.get(format!("{base}/v1/health/live")).send().await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;

    // A real clip, uploaded straight to S3 with a plain PUT; an encoder process encodes it and
    // the projectors' catalog says so.
    let first = deployment.data.join("clip.mp4");
    clip(&first, 4, "640x360");
    let (id, url) = upload(&client, &base, "end to end", &first).await;
    assert!(url.contains("X-Amz-Signature="), "a presigned S3 URL: {url}");
    ready(&client, &base, &id, Duration::from_secs(120)).await;
    let playback = published_playback(&client, &base, &id).await;

    // Master playlist → rendition playlist → a segment, as a player walks them.
    let master_url = playback["hls_url"].as_str().expect("hls").to_owned();
    let master = client
        .get(&master_url)
        .send()
        .await
        .expect("master")
        .text()
        .await
        .expect("text");
    assert!(master.starts_with("#EXTM3U"), "{master}");
    let rendition_url = first_uri(&master, &master_url);
    let rendition = client.get(&rendition_url).send().await.expect("rendition");
    assert!(
        rendition.status().is_success(),
        "{rendition_url}: {}",
        rendition.status()
    );
    let rendition = rendition.text().await.expect("text");
    let segment_url = first_uri(&rendition, &rendition_url);
    let segment = client.get(&segment_url).send().await.expect("segment");
    assert!(segment.status().is_success(), "{segment_url}: {}", segment.status());
    assert!(!segment.bytes().await.expect("bytes").is_empty());

    // Beacons of one session reach the lake on S3, where local SQL counts them.
    let now = chrono::Utc::now().timestamp_millis();
    let events: Vec<Value> = ["session_start", "playing", "heartbeat"]
        .iter()
        .enumerate()
        .map(|(i, kind)| {
            let mut event = json!({
                "event_id": uuid::Uuid::now_v7().to_string(),
                "event_type": kind,
                "sid": "e2e-session",
                "cid": id,
                "viewer_id": "viewer-1",
                "ts": now - 3000 + i as i64 * 1000,
                "position_ms": i as u64 * 1000,
            });
            if *kind == "playing" {
                event["startup_ms"] = json!(640);
            }
            event
        })
        .collect();
    let sent: Value = client
        .post(format!("{base}/v1/playback/beacons"))
        .json(&json!({ "events": events }))
        .send()
        .await
        .expect("beacons")
        .json()
        .await
        .expect("json");
    assert_eq!(sent["accepted"], 3, "{sent}");
    let query = format!("SELECT count(*) AS n FROM qoe_events WHERE cid = '{id}'");
    until("the beacons are in the lake", Duration::from_secs(60), async || {
        (deployment.sql(&query) == "n\n3\n").then_some(())
    })
    .await;
    // The relay's video events land there too: the whole lifecycle, in order.
    let lifecycle = format!("SELECT event_type FROM video_events WHERE video_id = '{id}' ORDER BY version");
    until(
        "the lifecycle is in video_events",
        Duration::from_secs(60),
        async || deployment.sql(&lifecycle).contains("VideoPublished").then_some(()),
    )
    .await;
    assert!(deployment
        .sql(&lifecycle)
        .starts_with("event_type\nVideoRegistered\nSourceUploaded\n"));

    let endpoint = std::env::var("VODSOURCE_TEST_AWS_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5000".into());
    let aws = vodsource_infra::aws::load(&vodsource_infra::aws::AwsSettings::emulator(&endpoint))
        .await
        .expect("AWS config");
    let views = vodsource_infra::dynamodb::DynamoViewStore::new(&aws, &deployment.prefix);
    let log = vodsource_infra::open_event_log(deployment.var("VODSOURCE_EVENT_STORE"))
        .await
        .expect("the event store");

    // A clip long enough to be split: the two encoder processes share its chunks, whose
    // segments join into the one ladder (on S3, its events on PostgreSQL, its views on DynamoDB).
    let chunked = deployment.data.join("chunked.mp4");
    clip(&chunked, 36, "640x360");
    let (shared, _) = upload(&client, &base, "chunked", &chunked).await;
    ready(&client, &base, &shared, Duration::from_secs(180)).await;
    let events = history(&*log, &shared).await;
    let planned = events
        .iter()
        .find_map(|e| match e {
            VideoEvent::EncodingPlanned { chunks, .. } => Some(chunks.len()),
            _ => None,
        })
        .expect("the attempt was split");
    assert_eq!(planned, 4, "the audio and three runs of 12 s");
    let written: Vec<(u32, &str)> = events
        .iter()
        .filter_map(|e| match e {
            VideoEvent::ChunkEncoded { chunk, worker_id, .. } => Some((*chunk, worker_id.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(written.len(), 4, "each chunk written once: {written:?}");
    let writers: std::collections::HashSet<&str> = written.iter().map(|(_, w)| *w).collect();
    assert_eq!(writers.len(), 2, "both encoders took part: {written:?}");
    let playback = published_playback(&client, &base, &shared).await;
    let master = playback["hls_url"].as_str().expect("hls").to_owned();
    let flags = video_packet_flags(&master);
    assert_eq!(flags.len(), 36 * 25, "every picture, through the API from S3: {master}");
    assert_eq!(
        flags.iter().filter(|l| l.starts_with('K')).count(),
        10,
        "a keyframe every 4 s, and at 2 s (the short first segment)"
    );

    // A longer clip. While attempt 1 is encoding, SIGKILL the encoder holding the claim and the
    // projector holding the supervisor's lease, at once.
    let long = deployment.data.join("long.mp4");
    clip(&long, 16, "1280x720");
    let (second, _) = upload(&client, &base, "killed mid-encode", &long).await;
    let holder = until("attempt 1 encoding", Duration::from_secs(120), async || {
        encoding_worker(&*log, &second, 1).await
    })
    .await;
    let (supervisor, _) = views
        .lease_holder("encoding-supervisor")
        .await
        .expect("reads the lease")
        .expect("a projector runs the supervisor");
    let killed = [
        process_of(&roles, &ENCODERS, &holder),
        process_of(&roles, &PROJECTORS, &supervisor),
    ];
    for i in killed {
        roles.0[i].kill().expect("SIGKILL");
        let _ = roles.0[i].wait();
    }
    // The standby projector's supervisor requeues the lapsed claim; the other encoder finishes.
    let (attempt, finisher) = until("the other encoder completes", Duration::from_secs(180), async || {
        completion(&*log, &second).await
    })
    .await;
    // Attempt 2, unless a loaded machine let that lease lapse too; never the killed one.
    assert!(attempt >= 2, "the killed attempt never completes");
    assert_ne!(finisher, holder);
    ready(&client, &base, &second, Duration::from_secs(60)).await;
    let events = history(&*log, &second).await;
    assert!(
        events.iter().any(|e| matches!(e,
            VideoEvent::EncodingRequeued { attempt: 2, reason, .. } if reason.contains("lease expired"))),
        "the supervisor requeued the lapsed claim: {events:?}"
    );
    let completions = events
        .iter()
        .filter(|e| matches!(e, VideoEvent::EncodingCompleted { .. }))
        .count();
    assert_eq!(completions, 1, "encoded once: {events:?}");
    let published = client
        .post(format!("{base}/v1/videos/{second}/publish"))
        .send()
        .await
        .expect("publish");
    assert!(published.status().is_success());

    // Kill the other projector too, rebuild every view from the events, and compare item by
    // item with the views kept live through the kills: nothing lost, nothing doubled.
    let dump = async || {
        let mut all = Vec::new();
        for name in vodsource_projections::PROJECTIONS {
            all.push((name, views.dump(name).await.expect("dump")));
        }
        all
    };
    let head = log.head().await.expect("head");
    until("every projection at the head", Duration::from_secs(60), async || {
        for name in vodsource_projections::PROJECTIONS {
            let state = vodsource_projections::ViewStore::projection(&views, name).await.ok()?;
            if state.position < head {
                return None;
            }
        }
        Some(())
    })
    .await;
    for i in PROJECTORS {
        let _ = roles.0[i].kill();
        let _ = roles.0[i].wait();
    }
    let before = dump().await;
    assert!(before.iter().any(|(_, docs)| !docs.is_empty()));
    // The dead projector's leases lapse; until then `replay` is refused, naming the holder.
    let replayed = until(
        "replay --all once the leases lapse",
        Duration::from_secs(60),
        async || {
            let output = deployment.command(&["replay", "--all"]).output().expect("replay runs");
            output
                .status
                .success()
                .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
        },
    )
    .await;
    assert!(replayed.contains("swapped in"), "{replayed}");
    let after = dump().await;
    assert_eq!(after, before, "the rebuilt views equal the ones they replace");
    let state = vodsource_projections::ViewStore::projection(&views, "catalog")
        .await
        .expect("state");
    assert!(state.generation > 1, "a new generation: {state:?}");

    // A new projector carries on from the rebuilt views.
    roles.0[PROJECTORS[0]] = deployment.spawn(&projector);
    let third = client
        .post(format!("{base}/v1/videos"))
        .json(
            &json!({"title": "after the rebuild", "filename": "b.mp4", "content_type": "video/mp4", "size_bytes": 10}),
        )
        .send()
        .await
        .expect("register");
    let third: Value = third.json().await.expect("json");
    let third = third["video_id"].as_str().expect("id").to_owned();
    until(
        "the new projector lists the new video",
        Duration::from_secs(60),
        async || {
            let r = client.get(format!("{base}/v1/videos/{third}")).send().await.ok()?;
            r.status().is_success().then_some(())
        },
    )
    .await;
}
