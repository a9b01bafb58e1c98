//! The lake sink over the embedded log and a local object store, read back by pyarrow and
//! duckdb: every record lands once, in the UTC hour of its event time, as standard Parquet
//! with the declared schema; a flush cut short by a failure is redone with the same files.

use std::sync::Arc;
use std::time::{Duration, Instant};

use vodsource_analytics::lake::QOE_EVENTS;
use vodsource_analytics::sink::{LakeSink, SinkSettings, SINK_GROUP};
use vodsource_commands::ports::{ObjectStore, StreamConsumer, StreamProducer, StreamRecord};
use vodsource_infra::{open_object_store, EmbeddedLog};
use vodsource_tests::{lake, TempDir};

/// 2026-11-23T04:30:00Z.
const BASE_MS: i64 = 1_795_408_200_000;

fn event(i: u64, ts: i64) -> StreamRecord {
    let sid = format!("s-{}", i % 7);
    let value = serde_json::json!({
        "event_id": uuid::Uuid::now_v7(),
        "event_type": if i.is_multiple_of(5) { "session_start" } else { "heartbeat" },
        "sid": sid,
        "cid": format!("video-{}", i % 3),
        "viewer_id": "ann",
        "ts": ts,
        "received_at": ts + 40,
        "position_ms": i * 1000,
        "br": 2800,
        "su": i.is_multiple_of(5),
        "player_name": "hls.js",
        "error_message": "quote \" and \u{e9}",
    });
    StreamRecord {
        key: sid,
        value: serde_json::to_vec(&value).expect("json"),
    }
}

async fn sink_until_committed<C: StreamConsumer>(sink: &mut LakeSink<C>, rows: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while sink.stats().rows < rows {
        assert!(
            Instant::now() < deadline,
            "the sink wrote {:?} of {rows} rows",
            sink.stats()
        );
        sink.step(Duration::from_millis(50)).await.expect("step");
    }
}

fn settings(dir: &TempDir) -> SinkSettings {
    let mut settings = SinkSettings::new(dir.path().join("sink"));
    settings.max_age = Duration::from_millis(300);
    settings.poll_records = 100;
    settings
}

#[tokio::test]
async fn every_record_lands_once_in_the_hour_of_its_event_time_as_standard_parquet() {
    let dir = TempDir::new();
    let log = EmbeddedLog::open(dir.path().join("streams"), 3).expect("log");
    let objects = open_object_store(&format!("file://{}", dir.path().join("objects").display()))
        .await
        .expect("objects");
    // 600 events over three UTC hours (04, 05, 06), plus one record that is not an event.
    let records: Vec<StreamRecord> = (0..600).map(|i| event(i, BASE_MS + i as i64 * 15_000)).collect();
    log.publish("qoe-events", records).await.expect("published");
    log.publish(
        "qoe-events",
        vec![StreamRecord {
            key: "s-1".into(),
            value: b"{\"not\":\"an event\"}".to_vec(),
        }],
    )
    .await
    .expect("published");

    let consumer = log.consumer("qoe-events", SINK_GROUP).expect("consumer");
    let mut sink = LakeSink::new(consumer, "qoe-events", &QOE_EVENTS, objects.clone(), settings(&dir)).expect("sink");
    sink_until_committed(&mut sink, 600).await;
    assert_eq!(
        sink.stats().skipped,
        1,
        "the record that is not an event is skipped, not written"
    );

    let table = lake::read(&dir.path().join("objects"), "qoe_events");
    assert_eq!(table.event_ids.len(), 600, "every event is in the lake");
    assert!(table.event_ids.values().all(|n| *n == 1), "and only once");
    assert_eq!(table.misplaced, 0, "each row sits in the UTC hour of its ts");
    let hours: std::collections::BTreeSet<&str> = table
        .files
        .iter()
        .map(|f| f.path.rsplit_once('/').map_or("", |(dir, _)| dir))
        .collect();
    assert_eq!(
        hours.into_iter().collect::<Vec<_>>(),
        [
            "lake/qoe_events/event_date=2026-11-23/event_hour=04",
            "lake/qoe_events/event_date=2026-11-23/event_hour=05",
            "lake/qoe_events/event_date=2026-11-23/event_hour=06",
        ]
    );
    for file in &table.files {
        let name = file.path.rsplit('/').next().unwrap_or_default();
        let parts: Vec<&str> = name.trim_end_matches(".parquet").rsplitn(4, '-').collect();
        assert_eq!(parts.len(), 4, "{name} is <stream>-<partition>-<first>-<last>");
        assert_eq!(parts[3], "qoe-events");
        let (first, last): (u64, u64) = (parts[1].parse().expect("first"), parts[0].parse().expect("last"));
        assert!(
            first <= last && file.rows as u64 <= last - first + 1,
            "{name}: {} rows",
            file.rows
        );
        assert_eq!(file.codecs, ["ZSTD"]);
        assert!(
            file.statistics && file.page_index,
            "{name} has statistics and the page index"
        );
        assert!(
            file.key_encodings.iter().any(|e| e == "RLE_DICTIONARY"),
            "{name}: cid is dictionary-encoded ({:?})",
            file.key_encodings
        );
        let ty = |column: &str| {
            file.schema
                .iter()
                .find(|(name, _)| name == column)
                .map(|(_, ty)| ty.as_str())
                .unwrap_or_default()
        };
        assert_eq!(ty("ts"), "timestamp[ms, tz=UTC]");
        assert_eq!(ty("br"), "int32");
        assert_eq!(ty("position_ms"), "int64");
        assert_eq!(ty("su"), "bool");
        assert_eq!(ty("error_message"), "string");
        let names: Vec<&str> = file.schema.iter().map(|(n, _)| n.as_str()).collect();
        let declared: Vec<&str> = QOE_EVENTS.columns.iter().map(|c| c.name).collect();
        assert_eq!(names, declared, "the declared columns, in order");
    }

    // Nothing is left uncommitted: a new member of the group reads nothing.
    let mut again = log.consumer("qoe-events", SINK_GROUP).expect("consumer");
    assert!(again
        .poll(10, Duration::from_millis(20))
        .await
        .expect("poll")
        .is_empty());
}

#[tokio::test]
async fn a_flush_cut_short_is_redone_with_the_same_files_and_no_duplicates() {
    let dir = TempDir::new();
    let log = EmbeddedLog::open(dir.path().join("streams"), 1).expect("log");
    let root = dir.path().join("objects");
    let objects: Arc<dyn ObjectStore> = open_object_store(&format!("file://{}", root.display()))
        .await
        .expect("objects");
    let records: Vec<StreamRecord> = (0..300).map(|i| event(i, BASE_MS + i as i64 * 30_000)).collect();
    log.publish("qoe-events", records).await.expect("published");

    // A first run reads everything and flushes it at once (one range, files in three hours),
    // then "crashes" before its commit: it reads as another group, whose commit the real
    // group never sees, and one of its uploads is lost.
    let consumer = log.consumer("qoe-events", "crashed-run").expect("consumer");
    let mut settings_first = settings(&dir);
    settings_first.max_age = Duration::from_secs(3600);
    settings_first.poll_records = 1000;
    let mut first = LakeSink::new(consumer, "qoe-events", &QOE_EVENTS, objects.clone(), settings_first).expect("sink");
    assert_eq!(first.step(Duration::from_secs(1)).await.expect("step"), 300);
    first.flush_all().await.expect("flush");
    drop(first);
    let before = lake::read(&root, "qoe_events");
    assert_eq!(before.event_ids.len(), 300);
    assert_eq!(before.files.len(), 3, "one file per hour");
    assert!(
        root.join("lake/_sink/qoe-sink/qoe-events-0.json").exists(),
        "a flush records its range before uploading"
    );
    std::fs::remove_file(root.join(&before.files[1].path)).expect("lose one upload");

    // The real group has committed nothing; its sink reads the marker and redoes the range,
    // with other limits (a size limit that would cut much earlier).
    let consumer = log.consumer("qoe-events", SINK_GROUP).expect("consumer");
    let mut settings = settings(&dir);
    settings.max_file_bytes = 1;
    settings.max_age = Duration::from_secs(3600);
    let mut second = LakeSink::new(consumer, "qoe-events", &QOE_EVENTS, objects.clone(), settings).expect("sink");
    sink_until_committed(&mut second, 300).await;
    let after = lake::read(&root, "qoe_events");
    let names = |t: &lake::LakeTable| t.files.iter().map(|f| f.path.clone()).collect::<Vec<_>>();
    assert_eq!(names(&after), names(&before), "the same files, replaced");
    assert_eq!(after.event_ids.len(), 300);
    assert!(after.event_ids.values().all(|n| *n == 1), "no duplicates");
}
