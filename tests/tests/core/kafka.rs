//! The stream ports on a real Kafka-protocol broker (Tansu on 127.0.0.1:9092, started by
//! `scripts/services.sh start kafka`): key order, consumer groups resuming after their commits,
//! and the lake sink reading through Kafka.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use vodsource_commands::ports::{Delivery, StreamConsumer, StreamProducer, StreamRecord};
use vodsource_infra::kafka::KafkaStream;
use vodsource_infra::open_object_store;
use vodsource_lake::sink::{LakeSink, SinkSettings, SINK_GROUP};
use vodsource_lake::tables::QOE_EVENTS;
use vodsource_tests::{lake, TempDir};

const BROKER: &str = "127.0.0.1:9092";

async fn broker() -> KafkaStream {
    assert!(
        std::net::TcpStream::connect_timeout(&BROKER.parse().expect("address"), Duration::from_secs(2)).is_ok(),
        "no Kafka broker on {BROKER}: start one with `scripts/services.sh start kafka`"
    );
    KafkaStream::connect(BROKER).expect("client")
}

fn topic() -> String {
    format!("test-{}", uuid::Uuid::now_v7().simple())
}

async fn drain(consumer: &mut impl StreamConsumer, want: usize) -> Vec<Delivery> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut all = Vec::new();
    while all.len() < want {
        assert!(Instant::now() < deadline, "read {} of {want} records", all.len());
        all.extend(consumer.poll(500, Duration::from_millis(200)).await.expect("poll"));
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_keep_their_order_and_a_group_resumes_after_its_commit() {
    let kafka = broker().await;
    let topic = topic();
    kafka.create_topic(&topic, 3).await.expect("topic");
    kafka.create_topic(&topic, 3).await.expect("creating it again is fine");
    let records: Vec<StreamRecord> = (0..60)
        .map(|i| StreamRecord {
            key: format!("session-{}", i % 6),
            value: format!("{i}").into_bytes(),
        })
        .collect();
    let acks = kafka.publish(&topic, records).await.expect("acknowledged");
    assert_eq!(acks.len(), 60);
    let mut by_key: HashMap<String, u32> = HashMap::new();
    for (i, (partition, _)) in acks.iter().enumerate() {
        let previous = by_key.insert(format!("session-{}", i % 6), *partition);
        assert!(previous.is_none_or(|p| p == *partition), "a key stays on one partition");
    }

    let mut first = kafka.consumer(&topic, "group-a").expect("consumer");
    let all = drain(&mut first, 60).await;
    assert_eq!(all.len(), 60);
    let mut seen: HashMap<String, Vec<u32>> = HashMap::new();
    for d in &all {
        let n: u32 = String::from_utf8_lossy(&d.value).parse().expect("number");
        seen.entry(d.key.clone()).or_default().push(n);
    }
    for (key, values) in &seen {
        assert!(values.windows(2).all(|w| w[0] < w[1]), "{key} in order: {values:?}");
    }
    // Commit half of each partition, then a new member of the group starts after it.
    let mut cut: HashMap<u32, u64> = HashMap::new();
    for d in &all {
        let entry = cut.entry(d.partition).or_insert(0);
        *entry = (*entry).max(d.offset);
    }
    let commits: Vec<(u32, u64)> = cut.iter().map(|(p, last)| (*p, last / 2)).collect();
    first.commit(&commits).await.expect("commit");
    drop(first);
    let expected: usize = all
        .iter()
        .filter(|d| commits.iter().any(|(p, o)| *p == d.partition && d.offset > *o))
        .count();
    let mut second = kafka.consumer(&topic, "group-a").expect("consumer");
    let rest = drain(&mut second, expected).await;
    assert_eq!(rest.len(), expected, "exactly the uncommitted records");
    assert!(rest
        .iter()
        .all(|d| commits.iter().any(|(p, o)| *p == d.partition && d.offset > *o)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lake_sink_reads_through_kafka_exactly_once() {
    let kafka = broker().await;
    let topic = topic();
    kafka.create_topic(&topic, 2).await.expect("topic");
    let dir = TempDir::new();
    let root = dir.path().join("objects");
    let objects = open_object_store(
        &format!("file://{}", root.display()),
        &vodsource_infra::aws::AwsSettings::default(),
    )
    .await
    .expect("objects");
    let base = 1_795_408_200_000_i64;
    let events: Vec<vodsource_qoe::QoeEvent> = (0..200)
        .map(|i| {
            serde_json::from_value(serde_json::json!({
                "event_id": uuid::Uuid::now_v7(),
                "event_type": "heartbeat",
                "sid": format!("s-{}", i % 5),
                "cid": "video-1",
                "ts": base + i * 20_000,
                "received_at": base + i * 20_000 + 30,
                "position_ms": i * 1000,
            }))
            .expect("event")
        })
        .collect();
    let records = events.iter().map(vodsource_qoe::wire::record).collect();
    kafka.publish(&topic, records).await.expect("published");

    let mut settings = SinkSettings::new(dir.path().join("sink"));
    settings.max_age = Duration::from_millis(300);
    let consumer = kafka
        .consumer(&topic, &format!("{topic}-{SINK_GROUP}"))
        .expect("consumer");
    let mut sink = LakeSink::new(consumer, &topic, &QOE_EVENTS, objects.clone(), settings.clone()).expect("sink");
    let deadline = Instant::now() + Duration::from_secs(60);
    while sink.stats().rows < 200 {
        assert!(Instant::now() < deadline, "the sink wrote {:?}", sink.stats());
        sink.step(Duration::from_millis(200)).await.expect("step");
    }
    drop(sink);
    let table = lake::read(&root, "qoe_events");
    assert_eq!(table.event_ids.len(), 200);
    assert!(table.event_ids.values().all(|n| *n == 1));
    assert_eq!(table.misplaced, 0);
    assert!(table.files.iter().all(|f| f.path.contains(&format!("/{topic}-"))));

    // Everything is committed: a new member of the group gets nothing of it. An empty poll
    // alone would also pass for a member that never joined, so a record sent now must be the
    // first (and only) thing it gets.
    let mut again = kafka
        .consumer(&topic, &format!("{topic}-{SINK_GROUP}"))
        .expect("consumer");
    assert!(again.poll(10, Duration::from_secs(8)).await.expect("poll").is_empty());
    let marker = StreamRecord {
        key: "s-marker".into(),
        value: b"after everything".to_vec(),
    };
    kafka.publish(&topic, vec![marker.clone()]).await.expect("published");
    let after = drain(&mut again, 1).await;
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(
        (after[0].key.as_str(), after[0].value.as_slice()),
        ("s-marker", marker.value.as_slice())
    );
}

/// Runs `sink` until `stop`, as `serve` does.
fn run_sink(
    mut sink: LakeSink<vodsource_infra::kafka::KafkaConsumer>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<vodsource_lake::sink::SinkStats> {
    tokio::spawn(async move {
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            if let Err(e) = sink.step(Duration::from_millis(100)).await {
                eprintln!("sink step: {e}");
            }
        }
        sink.flush_all().await.expect("last flush");
        sink.stats()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sinks_in_one_group_split_the_partitions_and_write_each_record_once() {
    let kafka = broker().await;
    let topic = topic();
    kafka.create_topic(&topic, 4).await.expect("topic");
    let dir = TempDir::new();
    let root = dir.path().join("objects");
    let objects = open_object_store(
        &format!("file://{}", root.display()),
        &vodsource_infra::aws::AwsSettings::default(),
    )
    .await
    .expect("objects");
    let base = 1_795_408_200_000_i64;
    let publish = |from: i64, n: i64| {
        let records = (from..from + n)
            .map(|i| {
                vodsource_qoe::wire::record(&vodsource_qoe::QoeEvent::new(
                    uuid::Uuid::now_v7(),
                    vodsource_qoe::QoeEventType::Heartbeat,
                    &format!("s-{}", i % 40),
                    "video-1",
                    base + i * 1_000,
                ))
            })
            .collect();
        let kafka = kafka.clone();
        let topic = topic.clone();
        async move { kafka.publish(&topic, records).await.expect("published") }
    };
    let sink = |name: &str| {
        let mut settings = SinkSettings::new(dir.path().join(name));
        settings.max_age = Duration::from_secs(4);
        let consumer = kafka
            .consumer(&topic, &format!("{topic}-{SINK_GROUP}"))
            .expect("consumer");
        LakeSink::new(consumer, &topic, &QOE_EVENTS, objects.clone(), settings).expect("sink")
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));

    // One member alone, with records in flight: it has joined (and holds every partition)
    // once its first files are in the lake …
    let first = run_sink(sink("a"), stop.clone());
    let mut sent = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while lake::read(&root, "qoe_events").event_ids.is_empty() {
        assert!(Instant::now() < deadline, "the first sink wrote nothing");
        publish(sent, 100).await;
        sent += 100;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // … then a second joins: the group takes partitions from the first, whose unflushed
    // records of them go to the second.
    let second = run_sink(sink("b"), stop.clone());
    for _ in 0..30 {
        publish(sent, 100).await;
        sent += 100;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let want = usize::try_from(sent).expect("count");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let table = lake::read(&root, "qoe_events");
        if table.event_ids.len() == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {want} events in the lake",
            table.event_ids.len()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (a, b) = (first.await.expect("first"), second.await.expect("second"));
    let table = lake::read(&root, "qoe_events");
    let doubled = table.event_ids.values().filter(|n| **n > 1).count();
    assert_eq!(
        doubled, 0,
        "events written twice ({} rows by a, {} by b)",
        a.rows, b.rows
    );
    assert_eq!(table.event_ids.len(), want);
    assert!(
        a.rows > 0 && b.rows > 0,
        "both members wrote: {} and {} rows",
        a.rows,
        b.rows
    );
}
