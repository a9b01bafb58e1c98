//! The lake sink over the embedded log and a local object store, read back by pyarrow and
//! duckdb: every record lands once, in the UTC hour of its event time, as standard Parquet
//! with the declared schema; a flush cut short by a failure is redone with the same files.

use std::sync::Arc;
use std::time::{Duration, Instant};

use vodsource_commands::ports::{ObjectStore, StreamConsumer, StreamProducer, StreamRecord};
use vodsource_infra::{open_object_store, EmbeddedLog};
use vodsource_lake::sink::{LakeSink, SinkSettings, SINK_GROUP};
use vodsource_lake::tables::QOE_EVENTS;
use vodsource_tests::{lake, TempDir};

/// 2026-11-23T04:30:00Z.
pub(crate) const BASE_MS: i64 = 1_795_408_200_000;

pub(crate) fn event(i: u64, ts: i64) -> StreamRecord {
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

pub(crate) async fn sink_until_committed<C: StreamConsumer>(sink: &mut LakeSink<C>, rows: u64) {
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

pub(crate) fn settings(dir: &TempDir) -> SinkSettings {
    let mut settings = SinkSettings::new(dir.path().join("sink"));
    settings.max_age = Duration::from_millis(300);
    settings.poll_records = 100;
    settings
}

#[tokio::test]
async fn every_record_lands_once_in_the_hour_of_its_event_time_as_standard_parquet() {
    let dir = TempDir::new();
    let log = EmbeddedLog::open(dir.path().join("streams"), 3).expect("log");
    let objects = open_object_store(
        &format!("file://{}", dir.path().join("objects").display()),
        &vodsource_infra::aws::AwsSettings::default(),
    )
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
    let objects: Arc<dyn ObjectStore> = open_object_store(
        &format!("file://{}", root.display()),
        &vodsource_infra::aws::AwsSettings::default(),
    )
    .await
    .expect("objects");
    let mut records: Vec<StreamRecord> = (0..300).map(|i| event(i, BASE_MS + i as i64 * 30_000)).collect();
    // Resends among them: a redone range must drop exactly what the first run dropped.
    let resent: Vec<StreamRecord> = records[100..150].to_vec();
    records.extend(resent);
    log.publish("qoe-events", records).await.expect("published");

    // A first run reads everything and flushes it at once (one range, files in three hours),
    // then "crashes" before its commit: it reads as another group, whose commit the real
    // group never sees, and one of its uploads is lost.
    let consumer = log.consumer("qoe-events", "crashed-run").expect("consumer");
    let mut settings_first = settings(&dir);
    settings_first.max_age = Duration::from_secs(3600);
    settings_first.poll_records = 1000;
    let mut first = LakeSink::new(consumer, "qoe-events", &QOE_EVENTS, objects.clone(), settings_first).expect("sink");
    assert_eq!(first.step(Duration::from_secs(1)).await.expect("step"), 350);
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

/// A resent event is the same record again (same id, same session, so the same partition):
/// the lake holds it once — within a flush, and across a committed flush and a restart (the
/// window comes back from the marker). The redo test below resends too.
#[tokio::test]
async fn resent_events_land_once_within_a_flush_and_across_a_restart() {
    let dir = TempDir::new();
    let log = EmbeddedLog::open(dir.path().join("streams"), 1).expect("log");
    let root = dir.path().join("objects");
    let objects: Arc<dyn ObjectStore> = open_object_store(
        &format!("file://{}", root.display()),
        &vodsource_infra::aws::AwsSettings::default(),
    )
    .await
    .expect("objects");
    let first: Vec<StreamRecord> = (0..100).map(|i| event(i, BASE_MS + i as i64 * 1_000)).collect();
    // The batch, and its first half again (a player whose answer was lost).
    let mut sent = first.clone();
    sent.extend(first[..50].iter().cloned());
    log.publish("qoe-events", sent).await.expect("published");
    let consumer = log.consumer("qoe-events", SINK_GROUP).expect("consumer");
    let mut sink = LakeSink::new(consumer, "qoe-events", &QOE_EVENTS, objects.clone(), settings(&dir)).expect("sink");
    sink_until_committed(&mut sink, 100).await;
    sink.flush_all().await.expect("flush");
    assert_eq!(sink.stats().duplicates, 50);
    drop(sink);
    let once = |what: &str| {
        let table = lake::read(&root, "qoe_events");
        assert_eq!(table.event_ids.len(), 100, "{what}");
        assert!(
            table.event_ids.values().all(|n| *n == 1),
            "{what}: {:?}",
            table.event_ids
        );
    };
    once("within a flush");

    // After the commit, a restarted sink gets the rest of the resends: its window comes from
    // the marker of the committed flush.
    log.publish("qoe-events", first[50..].to_vec())
        .await
        .expect("published");
    let consumer = log.consumer("qoe-events", SINK_GROUP).expect("consumer");
    let mut restarted =
        LakeSink::new(consumer, "qoe-events", &QOE_EVENTS, objects.clone(), settings(&dir)).expect("sink");
    let deadline = Instant::now() + Duration::from_secs(30);
    while restarted.stats().records < 50 {
        assert!(Instant::now() < deadline, "{:?}", restarted.stats());
        restarted.step(Duration::from_millis(50)).await.expect("step");
    }
    restarted.flush_all().await.expect("flush");
    assert_eq!(restarted.stats().duplicates, 50, "{:?}", restarted.stats());
    drop(restarted);
    once("across a restart");
}

#[cfg(feature = "lake-sql")]
/// One player event for the report's sessions.
fn play(sid: &str, kind: vodsource_qoe::QoeEventType, at_s: i64) -> vodsource_qoe::QoeEvent {
    let ts = BASE_MS + at_s * 1000;
    vodsource_qoe::QoeEvent {
        viewer_id: Some("ann".into()),
        received_at: ts + 50,
        ..vodsource_qoe::QoeEvent::new(uuid::Uuid::now_v7(), kind, sid, "video-9", ts)
    }
}

#[cfg(feature = "lake-sql")]
#[tokio::test]
async fn local_sql_and_the_qoe_report_read_what_the_sink_wrote() {
    use vodsource_lake::query::Lake;
    use vodsource_lake::report::{self, ReportFilter};
    use vodsource_qoe::QoeEventType as T;

    let dir = TempDir::new();
    let log = EmbeddedLog::open(dir.path().join("streams"), 2).expect("log");
    let root = dir.path().join("objects");
    let objects = open_object_store(
        &format!("file://{}", root.display()),
        &vodsource_infra::aws::AwsSettings::default(),
    )
    .await
    .expect("objects");
    let with = |mut e: vodsource_qoe::QoeEvent, f: &dyn Fn(&mut vodsource_qoe::QoeEvent)| {
        f(&mut e);
        e
    };
    let events = vec![
        // A: starts in 800 ms, plays 60 s at 3000 kbit/s, one 2 s stall, one switch.
        play("a", T::SessionStart, 0),
        with(play("a", T::Playing, 1), &|e| {
            e.startup_ms = Some(800);
            e.br = Some(3000);
        }),
        with(play("a", T::Heartbeat, 10), &|e| e.br = Some(3000)),
        with(play("a", T::Heartbeat, 20), &|e| e.br = Some(3000)),
        with(play("a", T::Heartbeat, 30), &|e| e.br = Some(3000)),
        play("a", T::RebufferStart, 31),
        with(play("a", T::RebufferEnd, 33), &|e| e.rebuffer_ms = Some(2000)),
        play("a", T::BitrateChange, 40),
        play("a", T::SessionEnd, 60),
        // B: fails before its first frame.
        play("b", T::SessionStart, 0),
        with(play("b", T::Error, 2), &|e| {
            e.error_code = Some("MEDIA_ERR_DECODE".into())
        }),
        // C: the viewer leaves while it starts.
        play("c", T::SessionStart, 0),
        play("c", T::SessionEnd, 4),
        // D: starts in 1200 ms, plays 20 s at 1000 kbit/s, then fails.
        play("d", T::SessionStart, 0),
        with(play("d", T::Playing, 1), &|e| {
            e.startup_ms = Some(1200);
            e.br = Some(1000);
        }),
        with(play("d", T::Heartbeat, 10), &|e| e.br = Some(1000)),
        with(play("d", T::Error, 20), &|e| e.error_code = Some("NETWORK".into())),
    ];
    let records = events.iter().map(vodsource_qoe::wire::record).collect();
    log.publish("qoe-events", records).await.expect("published");
    let consumer = log.consumer("qoe-events", SINK_GROUP).expect("consumer");
    let mut sink = LakeSink::new(consumer, "qoe-events", &QOE_EVENTS, objects, settings(&dir)).expect("sink");
    sink_until_committed(&mut sink, events.len() as u64).await;

    let lake = Lake::open_local(&root).await.expect("lake");
    let batches = lake
        .sql("SELECT event_type, count(*) AS n FROM qoe_events WHERE event_date = '2026-11-23' GROUP BY event_type ORDER BY event_type")
        .await
        .expect("query");
    let text = vodsource_lake::query::render(&batches, vodsource_lake::query::Format::Csv).expect("csv");
    assert!(
        text.starts_with("event_type,n\nbitrate_change,1\nerror,2\nheartbeat,4\n"),
        "{text}"
    );
    // A filter on the partition columns reads only that hour's files; another day reads none.
    let plan = lake
        .explain("SELECT count(DISTINCT sid) FROM qoe_events WHERE event_date = '2026-11-22'")
        .await
        .expect("explain");
    assert!(!plan.contains(".parquet"), "no file of another day is read: {plan}");
    let plan = lake
        .explain("SELECT count(DISTINCT sid) FROM qoe_events WHERE event_date = '2026-11-23' AND event_hour = '04'")
        .await
        .expect("explain");
    assert!(plan.contains("event_hour=04") && plan.contains(".parquet"), "{plan}");
    let error = lake
        .sql("SELECT nope FROM qoe_events")
        .await
        .expect_err("unknown column");
    assert!(error.to_string().contains("nope"), "{error}");

    let m = report::metrics(&lake, &ReportFilter::default()).await.expect("metrics");
    assert_eq!(m.plays, 4);
    assert_eq!(m.video_start_failures, 1);
    assert_eq!(m.exits_before_video_start, 1);
    let p50 = m.startup_p50_ms.expect("p50");
    assert!((800.0..=1200.0).contains(&p50), "p50 {p50}");
    assert!(m.startup_p95_ms.expect("p95") >= p50);
    assert_eq!(m.watch_ms, 80_000, "60 s of A and 20 s of D");
    let close = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() < 1e-6);
    assert!(close(m.rebuffer_percentage, 2.5), "{:?}", m.rebuffer_percentage);
    assert!(close(m.rebuffers_per_minute, 0.75), "{:?}", m.rebuffers_per_minute);
    assert!(
        close(m.average_bitrate_kbps, 14_000.0 / 6.0),
        "{:?}",
        m.average_bitrate_kbps
    );
    assert!(
        close(m.bitrate_switches_per_hour, 45.0),
        "{:?}",
        m.bitrate_switches_per_hour
    );
    assert!(
        close(m.playback_failure_percentage, 25.0),
        "{:?}",
        m.playback_failure_percentage
    );
    let other_video = ReportFilter {
        video: Some("video-it's-not".into()),
        ..ReportFilter::default()
    };
    assert_eq!(report::metrics(&lake, &other_video).await.expect("metrics").plays, 0);

    let hours = report::hourly(&lake, &ReportFilter::default()).await.expect("hourly");
    assert_eq!(hours.len(), 1);
    assert_eq!(hours[0].hour, "2026-11-23 04");
    assert_eq!(hours[0].plays, 4);
    let chart = dir.path().join("chart.png");
    vodsource_lake::chart::draw(&hours, &chart).expect("chart");
    let png = std::fs::read(&chart).expect("png");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(u32::from_be_bytes([png[16], png[17], png[18], png[19]]), 1200, "width");
}
