//! The stream ports on Kinesis (the moto emulator on 127.0.0.1:5000, started by
//! `scripts/services.sh start aws`): key order, offsets that are the same on every read, shard
//! leases that pass to another member only when they lapse, resuming after the checkpoint, and
//! the lake sink reading through Kinesis.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vodsource_commands::ports::{Delivery, ManualClock, StreamConsumer, StreamError, StreamProducer, StreamRecord};
use vodsource_infra::aws::AwsSettings;
use vodsource_infra::kinesis::KinesisStream;
use vodsource_infra::open_object_store;
use vodsource_infra::ShardCoordination;
use vodsource_lake::sink::{LakeSink, SinkSettings, SINK_GROUP};
use vodsource_lake::tables::QOE_EVENTS;
use vodsource_tests::{lake, TempDir};

use crate::helpers::{clock, view_store};

const LEASE: Duration = Duration::from_secs(3);

fn endpoint() -> String {
    std::env::var("VODSOURCE_TEST_AWS_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5000".into())
}

/// A client of the emulator whose consumers are `owner` with leases in `dir`'s view store.
async fn client(dir: &TempDir, owner: &str, clock: Arc<ManualClock>) -> KinesisStream {
    let endpoint = endpoint();
    let address = endpoint.trim_start_matches("http://");
    assert!(
        std::net::TcpStream::connect(address).is_ok(),
        "no AWS emulator at {endpoint}: start one with `scripts/services.sh start aws`"
    );
    let config = vodsource_infra::aws::load(&AwsSettings::emulator(&endpoint))
        .await
        .expect("config");
    let views = Arc::new(view_store(dir.path(), "views.db").await);
    KinesisStream::new(
        &config,
        ShardCoordination {
            checkpoints: views.clone(),
            leases: views,
            clock,
            owner: owner.into(),
        },
        LEASE,
    )
}

fn stream_name() -> String {
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
async fn keys_keep_their_order_and_a_member_that_takes_over_resumes_after_the_checkpoint() {
    let dir = TempDir::new();
    let clock = clock();
    let kinesis = client(&dir, "member-a", clock.clone()).await;
    let stream = stream_name();
    kinesis.create_stream(&stream, 2).await.expect("stream");
    kinesis
        .create_stream(&stream, 2)
        .await
        .expect("creating it again is fine");
    let records: Vec<StreamRecord> = (0..60)
        .map(|i| StreamRecord {
            key: format!("session-{}", i % 6),
            value: format!("{i}").into_bytes(),
        })
        .collect();
    let acks = kinesis.publish(&stream, records).await.expect("acknowledged");
    assert_eq!(acks.len(), 60);
    let mut by_key: HashMap<String, u32> = HashMap::new();
    for (i, (partition, offset)) in acks.iter().enumerate() {
        assert_eq!(*offset, None, "Kinesis does not number records when it takes them");
        let previous = by_key.insert(format!("session-{}", i % 6), *partition);
        assert!(previous.is_none_or(|p| p == *partition), "a key stays on one shard");
    }

    let mut first = kinesis.consumer(&stream, "group-a").expect("consumer");
    let all = drain(&mut first, 60).await;
    assert_eq!(all.len(), 60);
    let mut seen: HashMap<String, Vec<u32>> = HashMap::new();
    let mut offsets: HashMap<u32, Vec<u64>> = HashMap::new();
    for d in &all {
        let n: u32 = String::from_utf8_lossy(&d.value).parse().expect("number");
        seen.entry(d.key.clone()).or_default().push(n);
        offsets.entry(d.partition).or_default().push(d.offset);
        assert_eq!(
            by_key.get(&d.key),
            Some(&d.partition),
            "read from the shard it was stored on"
        );
    }
    for (key, values) in &seen {
        assert!(values.windows(2).all(|w| w[0] < w[1]), "{key} in order: {values:?}");
    }
    for (partition, offsets) in &offsets {
        let dense: Vec<u64> = (0..offsets.len() as u64).collect();
        assert_eq!(offsets, &dense, "partition {partition} is numbered 0, 1, 2, …");
    }

    // Commit half of each shard.
    let commits: Vec<(u32, u64)> = offsets.iter().map(|(p, o)| (*p, o[o.len() / 2])).collect();
    first.commit(&commits).await.expect("commit");
    assert!(
        matches!(
            first.commit(&[(commits[0].0, 10_000)]).await,
            Err(StreamError::Invalid(_))
        ),
        "an offset never delivered is refused"
    );

    // Another member gets nothing while the first one's leases are live …
    let other = client(&dir, "member-b", clock.clone()).await;
    let mut second = other.consumer(&stream, "group-a").expect("consumer");
    assert!(second
        .poll(100, Duration::from_millis(500))
        .await
        .expect("poll")
        .is_empty());
    assert!(second.partitions().is_empty());
    // … and once they lapse (the first member died), it takes the shards and resumes after the
    // checkpoint, with the records numbered as before.
    drop(first);
    clock.advance(chrono::Duration::seconds(2 * LEASE.as_secs() as i64));
    let expected: Vec<(u32, u64, Vec<u8>)> = all
        .iter()
        .filter(|d| commits.iter().any(|(p, o)| *p == d.partition && d.offset > *o))
        .map(|d| (d.partition, d.offset, d.value.clone()))
        .collect();
    let mut rest: Vec<(u32, u64, Vec<u8>)> = drain(&mut second, expected.len())
        .await
        .into_iter()
        .map(|d| (d.partition, d.offset, d.value))
        .collect();
    rest.sort();
    let mut expected = expected;
    expected.sort();
    assert_eq!(
        rest, expected,
        "exactly the records after the checkpoint, at the same offsets"
    );

    let missing = other
        .publish(
            &stream_name(),
            vec![StreamRecord {
                key: "k".into(),
                value: vec![1],
            }],
        )
        .await;
    assert!(
        matches!(&missing, Err(StreamError::Unavailable(m)) if m.contains("ResourceNotFound")),
        "{missing:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lake_sink_reads_through_kinesis_exactly_once() {
    let dir = TempDir::new();
    let kinesis = client(&dir, "sink", clock()).await;
    let stream = stream_name();
    kinesis.create_stream(&stream, 2).await.expect("stream");
    let root = dir.path().join("objects");
    let objects = open_object_store(
        &format!("file://{}", root.display()),
        &vodsource_infra::aws::AwsSettings::default(),
    )
    .await
    .expect("objects");
    let base = 1_795_408_200_000_i64;
    // More than one PutRecords request holds (500 records).
    let events: Vec<vodsource_qoe::QoeEvent> = (0..1200)
        .map(|i| {
            let mut event = vodsource_qoe::QoeEvent::new(
                uuid::Uuid::now_v7(),
                vodsource_qoe::QoeEventType::Heartbeat,
                &format!("s-{}", i % 50),
                "video-1",
                base + i * 3_000,
            );
            event.received_at = base + i * 3_000 + 30;
            event
        })
        .collect();
    let records = events.iter().map(vodsource_qoe::wire::record).collect();
    kinesis.publish(&stream, records).await.expect("published");

    let mut settings = SinkSettings::new(dir.path().join("sink"));
    settings.max_age = Duration::from_millis(300);
    let consumer = kinesis.consumer(&stream, SINK_GROUP).expect("consumer");
    let mut sink = LakeSink::new(consumer, &stream, &QOE_EVENTS, objects.clone(), settings.clone()).expect("sink");
    let deadline = Instant::now() + Duration::from_secs(60);
    while sink.stats().rows < 1200 {
        assert!(Instant::now() < deadline, "the sink wrote {:?}", sink.stats());
        sink.step(Duration::from_millis(200)).await.expect("step");
    }
    sink.flush_all().await.expect("flush");
    drop(sink);
    let table = lake::read(&root, "qoe_events");
    assert_eq!(table.event_ids.len(), 1200);
    assert!(table.event_ids.values().all(|n| *n == 1));
    assert_eq!(table.misplaced, 0);
    assert!(table.files.iter().all(|f| f.path.contains(&format!("/{stream}-"))));

    // Everything is committed: the next member of the group (the same owner after a restart)
    // gets nothing.
    let mut again = kinesis.consumer(&stream, SINK_GROUP).expect("consumer");
    assert!(again.poll(10, Duration::from_secs(2)).await.expect("poll").is_empty());
    assert_eq!(again.partitions().len(), 2, "the restarted member holds both shards");
}
