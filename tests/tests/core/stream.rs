//! The embedded stream over a real folder: acknowledged records survive a reopen, a torn tail
//! is cut, consumer groups resume after their committed offsets.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use vodsource_commands::ports::{Delivery, StreamConsumer, StreamError, StreamProducer, StreamRecord};
use vodsource_infra::EmbeddedLog;
use vodsource_tests::TempDir;

fn record(key: &str, value: String) -> StreamRecord {
    StreamRecord {
        key: key.into(),
        value: value.into_bytes(),
    }
}

async fn drain(consumer: &mut impl StreamConsumer, max: usize) -> Vec<Delivery> {
    let mut all = Vec::new();
    loop {
        let batch = consumer.poll(max, Duration::from_millis(20)).await.expect("poll");
        if batch.is_empty() {
            return all;
        }
        all.extend(batch);
    }
}

#[tokio::test]
async fn records_keep_their_key_order_and_every_partition_is_consumed() {
    let dir = TempDir::new();
    let log = EmbeddedLog::open(dir.path(), 4).expect("opens");
    for round in 0..3 {
        let batch = (0..100)
            .map(|i| record(&format!("session-{}", i % 10), format!("{round}-{i}")))
            .collect();
        let acks = log.publish("qoe", batch).await.expect("acknowledged");
        assert_eq!(acks.len(), 100);
    }
    let mut consumer = log.consumer("qoe", "sink").expect("consumer");
    let all = drain(&mut consumer, 64).await;
    assert_eq!(all.len(), 300);
    let mut by_key: HashMap<String, Vec<(u32, String)>> = HashMap::new();
    for d in &all {
        by_key
            .entry(d.key.clone())
            .or_default()
            .push((d.partition, String::from_utf8(d.value.clone()).expect("utf8")));
    }
    assert_eq!(by_key.len(), 10);
    for (key, values) in &by_key {
        assert!(
            values.iter().all(|(p, _)| *p == log.partition_of(key)),
            "{key} stays on one partition"
        );
        let order: Vec<&String> = values.iter().map(|(_, v)| v).collect();
        let mut sorted = order.clone();
        sorted.sort_by_key(|v| {
            let (round, i) = v.split_once('-').expect("round-i");
            (round.parse::<u32>().unwrap_or(0), i.parse::<u32>().unwrap_or(0))
        });
        assert_eq!(order, sorted, "{key} in publish order");
    }
    let mut per_partition: HashMap<u32, Vec<u64>> = HashMap::new();
    for d in &all {
        per_partition.entry(d.partition).or_default().push(d.offset);
    }
    for offsets in per_partition.values() {
        assert_eq!(
            *offsets,
            (0..offsets.len() as u64).collect::<Vec<_>>(),
            "dense offsets from 0"
        );
    }
    assert!(per_partition.len() > 1, "keys spread over partitions");
}

#[tokio::test]
async fn a_group_resumes_after_its_committed_offsets_when_the_log_is_reopened() {
    let dir = TempDir::new();
    {
        let log = EmbeddedLog::open(dir.path(), 2).expect("opens");
        let batch = (0..100)
            .map(|i| record(&format!("s{}", i % 7), i.to_string()))
            .collect();
        log.publish("qoe", batch).await.expect("acknowledged");
        let mut consumer = log.consumer("qoe", "sink").expect("consumer");
        let first = consumer.poll(40, Duration::from_millis(20)).await.expect("poll");
        assert_eq!(first.len(), 40);
        let mut last: HashMap<u32, u64> = HashMap::new();
        for d in &first {
            last.insert(d.partition, d.offset);
        }
        let offsets: Vec<(u32, u64)> = last.into_iter().collect();
        consumer.commit(&offsets).await.expect("committed");
    }
    let log = EmbeddedLog::open(dir.path(), 2).expect("reopens");
    let mut consumer = log.consumer("qoe", "sink").expect("consumer");
    let rest = drain(&mut consumer, 1000).await;
    assert_eq!(rest.len(), 60, "exactly what was not committed");
    let mut other = log.consumer("qoe", "watch-state").expect("another group");
    assert_eq!(
        drain(&mut other, 1000).await.len(),
        100,
        "another group reads from the start"
    );
}

#[tokio::test]
async fn a_torn_tail_is_cut_on_open_and_offsets_continue() {
    let dir = TempDir::new();
    let partition = {
        let log = EmbeddedLog::open(dir.path(), 2).expect("opens");
        let batch = (0..10).map(|i| record("k", i.to_string())).collect();
        log.publish("qoe", batch).await.expect("acknowledged");
        log.partition_of("k")
    };
    // A crash mid-write: half a frame after the last acknowledged record.
    let path = dir.path().join(format!("qoe/p{partition}.log"));
    let mut file = std::fs::OpenOptions::new().append(true).open(&path).expect("open");
    file.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 5]).expect("write");
    drop(file);
    let log = EmbeddedLog::open(dir.path(), 2).expect("reopens");
    let acks = log
        .publish("qoe", vec![record("k", "10".into())])
        .await
        .expect("acknowledged");
    assert_eq!(acks, vec![(partition, Some(10))]);
    let mut consumer = log.consumer("qoe", "sink").expect("consumer");
    let values: Vec<String> = drain(&mut consumer, 100)
        .await
        .into_iter()
        .map(|d| String::from_utf8(d.value).expect("utf8"))
        .collect();
    assert_eq!(values, (0..=10).map(|i| i.to_string()).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_second_owner_of_the_folder_is_refused() {
    let dir = TempDir::new();
    let _first = EmbeddedLog::open(dir.path(), 2).expect("opens");
    match EmbeddedLog::open(dir.path(), 2) {
        Err(StreamError::Unavailable(message)) => assert!(message.contains("in use"), "{message}"),
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("a second owner opened the log"),
    }
}

#[tokio::test]
async fn poll_waits_for_a_publish_and_commits_only_what_was_delivered() {
    let dir = TempDir::new();
    let log = EmbeddedLog::open(dir.path(), 1).expect("opens");
    let mut consumer = log.consumer("qoe", "sink").expect("consumer");
    assert!(consumer
        .poll(10, Duration::from_millis(20))
        .await
        .expect("poll")
        .is_empty());
    let waiting = tokio::spawn(async move {
        let batch = consumer.poll(10, Duration::from_secs(10)).await.expect("poll");
        (consumer, batch)
    });
    log.publish("qoe", vec![record("s", "late".into())])
        .await
        .expect("acknowledged");
    let (mut consumer, batch) = waiting.await.expect("joins");
    assert_eq!(batch.len(), 1);
    assert!(matches!(consumer.commit(&[(0, 5)]).await, Err(StreamError::Invalid(_))));
    consumer.commit(&[(0, 0)]).await.expect("commits");
    assert_eq!(consumer.committed(), &[1]);
    assert!(matches!(
        log.publish("bad/topic", vec![]).await,
        Err(StreamError::Invalid(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishes_are_committed_in_groups_with_dense_offsets() {
    let dir = TempDir::new();
    let log = EmbeddedLog::open(dir.path(), 3).expect("opens");
    let tasks: Vec<_> = (0..200)
        .map(|t| {
            let log = log.clone();
            tokio::spawn(async move {
                let batch = (0..10)
                    .map(|i| record(&format!("s{}", (t + i) % 13), format!("{t}-{i}")))
                    .collect();
                log.publish("qoe", batch).await.expect("acknowledged")
            })
        })
        .collect();
    let mut acks = Vec::new();
    for task in tasks {
        acks.extend(task.await.expect("joins"));
    }
    acks.sort_unstable();
    acks.dedup();
    assert_eq!(acks.len(), 2000, "every record has its own (partition, offset)");
    let mut consumer = log.consumer("qoe", "sink").expect("consumer");
    let delivered = drain(&mut consumer, 500).await;
    assert_eq!(delivered.len(), 2000);
    let mut seen: Vec<(u32, Option<u64>)> = delivered.iter().map(|d| (d.partition, Some(d.offset))).collect();
    seen.sort_unstable();
    assert_eq!(seen, acks, "what was acknowledged is what is read");
}

#[tokio::test]
async fn the_relay_publishes_every_event_once_per_checkpoint_keyed_by_video() {
    use std::sync::Arc;

    use vodsource_commands::ports::EventLog;
    use vodsource_commands::process::{Relay, VIDEO_EVENTS_TOPIC};
    use vodsource_commands::CommandContext;
    use vodsource_domain::VideoCommand;

    use crate::helpers::{clock, commands, sqlite_log, view_store};

    let (log, dir) = sqlite_log().await;
    let log: Arc<dyn EventLog> = Arc::new(log);
    let clock = clock();
    let commands = commands(log.clone(), clock.clone());
    let views = Arc::new(view_store(dir.path(), "views.db").await);
    let stream = EmbeddedLog::open(dir.path().join("streams"), 4).expect("stream");
    let relay = || {
        Relay::new(
            log.clone(),
            Arc::new(stream.clone()),
            views.clone(),
            views.clone(),
            clock.clone(),
            "relay-1".into(),
        )
    };
    let register = |title: &str| VideoCommand::Register {
        owner: "alice".into(),
        title: title.into(),
        description: String::new(),
        tags: vec![],
        filename: "a.mp4".into(),
        content_type: "video/mp4".into(),
        size_bytes: 10,
        source_url: None,
        publish_when_playable: false,
    };
    let context = CommandContext::actor("alice");
    for i in 0..5 {
        let id = format!("video-{i}");
        commands
            .execute(&id, register("first"), &context)
            .await
            .expect("registered");
        let update = VideoCommand::UpdateMetadata {
            title: Some(format!("second {i}")),
            description: None,
            tags: None,
        };
        commands.execute(&id, update, &context).await.expect("updated");
    }
    // A webhook endpoint (another stream of the log) is not a video event: not published.
    let registry = vodsource_app::webhooks::RegistryStore::new(log.clone());
    let created = registry
        .record("admin:root", vodsource_domain::Clock::now(&*clock), |_| {
            Ok::<_, ()>(vec![vodsource_app::webhooks::registry::RegistryEvent::Created(
                vodsource_app::webhooks::registry::Created {
                    endpoint_id: "wh_1".into(),
                    owner: None,
                    url: "https://hooks.example.com/secret-path?token=t".into(),
                    event_types: vec![],
                    description: String::new(),
                    enabled: true,
                    max_per_second: 0,
                    key_id: None,
                },
            )])
        })
        .await;
    assert!(created.is_ok(), "the endpoint is recorded");
    assert_eq!(relay().catch_up().await.expect("relayed"), 11);
    assert_eq!(
        relay().catch_up().await.expect("nothing new"),
        11,
        "the checkpoint holds"
    );
    let mut consumer = stream.consumer(VIDEO_EVENTS_TOPIC, "lake").expect("consumer");
    let delivered = drain(&mut consumer, 100).await;
    assert_eq!(delivered.len(), 10, "each video event once, and nothing else");
    for d in &delivered {
        let event: serde_json::Value = serde_json::from_slice(&d.value).expect("json");
        assert_eq!(event["stream_id"], d.key.as_str(), "keyed by video");
        assert!(event["event_id"].is_string() && event["position"].is_u64());
        assert!(event["payload"].is_object(), "the payload is JSON, not a string");
    }
    let mut per_video: HashMap<String, Vec<u64>> = HashMap::new();
    for d in &delivered {
        let event: serde_json::Value = serde_json::from_slice(&d.value).expect("json");
        per_video
            .entry(d.key.clone())
            .or_default()
            .push(event["version"].as_u64().unwrap_or(0));
    }
    assert!(
        per_video.values().all(|v| *v == [1, 2]),
        "a video's events in order: {per_video:?}"
    );
}
