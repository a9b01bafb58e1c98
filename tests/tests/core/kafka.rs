//! The stream ports on a real Kafka-protocol broker (Tansu on 127.0.0.1:9092, started by
//! `scripts/services.sh start kafka`): key order, consumer groups resuming after their commits,
//! and the lake sink reading through Kafka.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use vodsource_analytics::lake::QOE_EVENTS;
use vodsource_analytics::sink::{LakeSink, SinkSettings, SINK_GROUP};
use vodsource_commands::ports::{Delivery, StreamConsumer, StreamProducer, StreamRecord};
use vodsource_infra::kafka::KafkaStream;
use vodsource_infra::open_object_store;
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
    let objects = open_object_store(&format!("file://{}", root.display()))
        .await
        .expect("objects");
    let base = 1_795_408_200_000_i64;
    let events: Vec<vodsource_analytics::QoeEvent> = (0..200)
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
    let records = events.iter().map(vodsource_analytics::wire::record).collect();
    kafka.publish(&topic, records).await.expect("published");

    let mut settings = SinkSettings::new(dir.path().join("sink"));
    settings.max_age = Duration::from_millis(300);
    let consumer = kafka.consumer(&topic, SINK_GROUP).expect("consumer");
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

    // Everything is committed: a new member of the group gets nothing.
    let mut again = kafka.consumer(&topic, SINK_GROUP).expect("consumer");
    assert!(again.poll(10, Duration::from_secs(8)).await.expect("poll").is_empty());
}
