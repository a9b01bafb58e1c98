//! One suite, run against every event store: versions, conflicts, global order, paging,
//! idempotent appends, metadata, live subscriptions, upcasting, and cqrs-es use.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use cqrs_es::{CqrsFramework, EventStore as _};
use serde_json::json;
use uuid::Uuid;
use vodsource_commands::codec::{DecodeError, Decoder};
use vodsource_commands::ports::{
    AppendRequest, Appended, EventLog, EventMetadata, ExpectedVersion, NewEvent, StoreError, SystemClock,
};
use vodsource_commands::{Subscription, VideoStore};
use vodsource_domain::{VideoEvent, VideoServices};

use crate::helpers::register;

pub fn event(kind: &str, payload: serde_json::Value) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: kind.into(),
        schema_version: 1,
        payload: payload.to_string(),
        metadata: EventMetadata::default(),
        occurred_at: Utc::now().trunc_subsecs(6),
    }
}

pub fn published() -> NewEvent {
    event("VideoPublished", json!({"VideoPublished": {}}))
}

pub fn append(stream: &str, expected: ExpectedVersion, events: Vec<NewEvent>) -> AppendRequest {
    AppendRequest {
        stream_id: stream.into(),
        stream_type: "video".into(),
        expected,
        events,
    }
}

pub async fn appends_assign_stream_versions_and_global_positions(log: Arc<dyn EventLog>) {
    let a = log
        .append(append("a", ExpectedVersion::Exact(0), vec![published(), published()]))
        .await
        .expect("append a");
    assert_eq!(
        a,
        Appended {
            first_position: 1,
            last_position: 2,
            version: 2,
            duplicate: false
        }
    );
    let b = log
        .append(append("b", ExpectedVersion::Exact(0), vec![published()]))
        .await
        .expect("append b");
    assert_eq!((b.first_position, b.version), (3, 1));
    let a2 = log
        .append(append("a", ExpectedVersion::Exact(2), vec![published()]))
        .await
        .expect("append a again");
    assert_eq!((a2.first_position, a2.version), (4, 3));
    let stream = log.read_stream("a", 0, 100).await.expect("read a");
    assert_eq!(
        stream.iter().map(|e| (e.version, e.position)).collect::<Vec<_>>(),
        vec![(1, 1), (2, 2), (3, 4)]
    );
    assert_eq!(log.read_stream("a", 2, 100).await.expect("read a after 2").len(), 1);
    assert!(log
        .read_stream("missing", 0, 100)
        .await
        .expect("read missing")
        .is_empty());
    assert_eq!(log.head().await.expect("head"), 4);
}

pub async fn a_long_stream_reads_in_pages_interleaved_with_others(log: Arc<dyn EventLog>) {
    for chunk in 0..50u64 {
        log.append(append(
            "long",
            ExpectedVersion::Exact(chunk * 50),
            (0..50).map(|_| published()).collect(),
        ))
        .await
        .expect("append long");
        log.append(append("other", ExpectedVersion::Any, vec![published()]))
            .await
            .expect("append other");
    }
    let versions = |events: Vec<vodsource_commands::ports::RecordedEvent>| -> Vec<u64> {
        events.into_iter().map(|e| e.version).collect()
    };
    assert_eq!(
        versions(log.read_stream("long", 0, 1000).await.expect("page 1")),
        (1..=1000).collect::<Vec<u64>>()
    );
    assert_eq!(
        versions(log.read_stream("long", 1000, 1000).await.expect("page 2")),
        (1001..=2000).collect::<Vec<u64>>()
    );
    assert_eq!(
        versions(log.read_stream("long", 2000, 1000).await.expect("page 3")),
        (2001..=2500).collect::<Vec<u64>>()
    );
    assert_eq!(
        versions(log.read_stream("long", 2499, 10).await.expect("tail")),
        vec![2500]
    );
    assert!(log
        .read_stream("long", 2500, 10)
        .await
        .expect("past the end")
        .is_empty());
    let store = VideoStore::new(log.clone(), Arc::new(SystemClock), 0);
    let loaded = store.load("other").await.expect("load other");
    assert_eq!(loaded.version, 50);
}

pub async fn a_stale_expected_version_is_a_conflict_and_writes_nothing(log: Arc<dyn EventLog>) {
    log.append(append("s", ExpectedVersion::Exact(0), vec![published(), published()]))
        .await
        .expect("seed");
    let err = log
        .append(append("s", ExpectedVersion::Exact(1), vec![published()]))
        .await
        .expect_err("stale version must conflict");
    assert_eq!(
        err,
        StoreError::Conflict {
            stream_id: "s".into(),
            expected: 1,
            actual: 2
        }
    );
    let err = log
        .append(append("s", ExpectedVersion::Exact(0), vec![published()]))
        .await
        .expect_err("exists");
    assert!(matches!(err, StoreError::Conflict { actual: 2, .. }), "{err:?}");
    assert_eq!(log.head().await.expect("head"), 2);
    let any = log
        .append(append("s", ExpectedVersion::Any, vec![published()]))
        .await
        .expect("any");
    assert_eq!(any.version, 3);
}

pub async fn resending_the_same_events_does_not_duplicate_them(log: Arc<dyn EventLog>) {
    let request = append("r", ExpectedVersion::Exact(0), vec![published(), published()]);
    let first = log.append(request.clone()).await.expect("first");
    let again = log.append(request.clone()).await.expect("re-send is accepted");
    assert_eq!(
        again,
        Appended {
            duplicate: true,
            ..first
        }
    );
    assert_eq!(log.head().await.expect("head"), 2);
    // A request that reuses one stored id among new ones is refused, not half-applied.
    let mut mixed = append(
        "r",
        ExpectedVersion::Exact(2),
        vec![published(), request.events[0].clone()],
    );
    mixed.events.swap(0, 1);
    let err = log.append(mixed).await.expect_err("mixed");
    assert_eq!(
        err,
        StoreError::DuplicateEventId {
            event_id: request.events[0].event_id
        }
    );
    // The same id in another stream is refused.
    let elsewhere = append("other", ExpectedVersion::Any, vec![request.events[1].clone()]);
    assert!(matches!(
        log.append(elsewhere).await,
        Err(StoreError::DuplicateEventId { .. })
    ));
    assert_eq!(log.head().await.expect("head"), 2);
}

pub async fn malformed_appends_are_refused_with_the_reason(log: Arc<dyn EventLog>) {
    let empty = log
        .append(append("m", ExpectedVersion::Any, vec![]))
        .await
        .expect_err("empty");
    assert!(
        matches!(empty, StoreError::Invalid(ref m) if m.contains("at least one event")),
        "{empty:?}"
    );
    let mut bad = published();
    bad.payload = "{broken".into();
    let bad = log
        .append(append("m", ExpectedVersion::Any, vec![bad]))
        .await
        .expect_err("bad json");
    assert!(
        matches!(bad, StoreError::Invalid(ref m) if m.contains("not JSON")),
        "{bad:?}"
    );
    // A bad request in a group does not fail the good ones committed with it.
    let outcomes = log
        .append_many(vec![
            append("m", ExpectedVersion::Any, vec![]),
            append("m", ExpectedVersion::Exact(0), vec![published()]),
        ])
        .await
        .expect("append many");
    assert!(outcomes[0].is_err());
    assert_eq!(outcomes[1].as_ref().map(|a| a.version), Ok(1));
}

pub async fn metadata_and_timestamps_round_trip(log: Arc<dyn EventLog>) {
    let occurred_at: DateTime<Utc> = "2026-11-22T12:34:56.789012Z".parse().expect("time");
    let mut e = published();
    e.occurred_at = occurred_at;
    e.metadata = EventMetadata {
        correlation_id: Some(Uuid::now_v7()),
        causation_id: Some(Uuid::now_v7()),
        actor: Some("user:alice".into()),
        extra: BTreeMap::from([("request_id".into(), "r-1".into())]),
    };
    log.append(append("meta", ExpectedVersion::Exact(0), vec![e.clone()]))
        .await
        .expect("append");
    let stored = &log.read_all(0, 10).await.expect("read")[0];
    assert_eq!(stored.event_id, e.event_id);
    assert_eq!(stored.event_type, "VideoPublished");
    assert_eq!(stored.schema_version, 1);
    assert_eq!(stored.stream_type, "video");
    assert_eq!(stored.occurred_at, occurred_at);
    assert_eq!(stored.metadata, e.metadata);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&stored.payload).expect("json"),
        json!({"VideoPublished": {}})
    );
}

pub async fn the_global_log_reads_in_pages_from_any_position(log: Arc<dyn EventLog>) {
    for i in 0..25 {
        log.append(append(&format!("p{}", i % 4), ExpectedVersion::Any, vec![published()]))
            .await
            .expect("append");
    }
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let page = log.read_all(after, 7).await.expect("page");
        if page.is_empty() {
            break;
        }
        after = page.last().map(|e| e.position).unwrap_or(after);
        seen.extend(page.into_iter().map(|e| e.position));
    }
    assert_eq!(seen, (1..=25).collect::<Vec<u64>>());
    let tail = log.read_all(20, 100).await.expect("tail");
    assert_eq!(
        tail.iter().map(|e| e.position).collect::<Vec<_>>(),
        vec![21, 22, 23, 24, 25]
    );
}

pub async fn concurrent_writers_on_one_stream_never_lose_an_update(log: Arc<dyn EventLog>) {
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut won = 0u64;
            for _ in 0..20 {
                let version = log.read_stream("hot", 0, 10_000).await.expect("read").len() as u64;
                match log
                    .append(append("hot", ExpectedVersion::Exact(version), vec![published()]))
                    .await
                {
                    Ok(_) => won += 1,
                    Err(StoreError::Conflict { .. }) => {}
                    Err(e) => panic!("unexpected {e}"),
                }
            }
            won
        }));
    }
    let mut won = 0;
    for task in tasks {
        won += task.await.expect("task");
    }
    let stream = log.read_stream("hot", 0, 10_000).await.expect("read");
    assert_eq!(
        stream.len() as u64,
        won,
        "every successful append is stored, nothing else"
    );
    assert_eq!(
        stream.iter().map(|e| e.version).collect::<Vec<_>>(),
        (1..=won).collect::<Vec<_>>()
    );
}

pub async fn concurrent_writers_on_many_streams_get_dense_positions(log: Arc<dyn EventLog>) {
    let mut tasks = Vec::new();
    for w in 0..32 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            for v in 0..25 {
                log.append(append(&format!("w{w}"), ExpectedVersion::Exact(v), vec![published()]))
                    .await
                    .expect("append");
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    let all = log.read_all(0, 10_000).await.expect("read all");
    assert_eq!(
        all.iter().map(|e| e.position).collect::<Vec<_>>(),
        (1..=800).collect::<Vec<u64>>()
    );
    for w in 0..32 {
        let versions: Vec<u64> = all
            .iter()
            .filter(|e| e.stream_id == format!("w{w}"))
            .map(|e| e.version)
            .collect();
        assert_eq!(versions, (1..=25).collect::<Vec<u64>>());
    }
}

pub async fn a_subscription_catches_up_then_follows_live_appends(log: Arc<dyn EventLog>) {
    for _ in 0..5 {
        log.append(append("sub", ExpectedVersion::Any, vec![published()]))
            .await
            .expect("before");
    }
    let mut subscription = Subscription::new(log.clone(), 2).with_page(2);
    let reader = tokio::spawn(async move {
        let mut seen = Vec::new();
        while seen.len() < 13 {
            let batch = tokio::time::timeout(Duration::from_secs(10), subscription.next_batch())
                .await
                .expect("live events arrive")
                .expect("batch");
            assert!(batch.len() <= 2);
            seen.extend(batch.into_iter().map(|e| e.position));
        }
        seen
    });
    for _ in 0..10 {
        log.append(append("sub", ExpectedVersion::Any, vec![published()]))
            .await
            .expect("after");
    }
    let seen = reader.await.expect("reader");
    assert_eq!(seen, (3..=15).collect::<Vec<u64>>());
}

pub async fn old_schema_versions_are_upcast_on_read(log: Arc<dyn EventLog>) {
    // Version 0 of MetadataUpdated named the title field "name".
    let mut old = event("MetadataUpdated", json!({"MetadataUpdated": {"name": "Old title"}}));
    old.schema_version = 0;
    let mut newer = published();
    newer.schema_version = 9;
    log.append(append("up", ExpectedVersion::Exact(0), vec![old, newer]))
        .await
        .expect("append");
    let stored = log.read_all(0, 10).await.expect("read");
    let plain = Decoder::new();
    let err = plain.decode(&stored[0]).expect_err("no upcaster");
    assert!(
        matches!(err, DecodeError::BadPayload { position: 1, ref event_type, .. } if event_type == "MetadataUpdated")
    );
    let upcasting = Decoder::new().with_upcaster("MetadataUpdated", 0, |mut value| {
        let inner = value
            .get_mut("MetadataUpdated")
            .and_then(|v| v.as_object_mut())
            .ok_or("not an object")?;
        let name = inner.remove("name").unwrap_or(serde_json::Value::Null);
        inner.insert("title".into(), name);
        inner.insert("description".into(), serde_json::Value::Null);
        inner.insert("tags".into(), serde_json::Value::Null);
        Ok(value)
    });
    assert_eq!(
        upcasting.decode(&stored[0]).expect("upcast"),
        VideoEvent::MetadataUpdated {
            title: Some("Old title".into()),
            description: None,
            tags: None
        }
    );
    let err = upcasting.decode(&stored[1]).expect_err("newer");
    assert_eq!(
        err,
        DecodeError::NewerSchema {
            position: 2,
            event_type: "VideoPublished".into(),
            version: 9,
            supported: 1
        }
    );
}

pub async fn the_store_is_usable_by_cqrs_es(log: Arc<dyn EventLog>) {
    let clock = Arc::new(SystemClock);
    let store = VideoStore::new(log.clone(), clock.clone(), 0);
    let framework = CqrsFramework::new(store.clone(), vec![], VideoServices::new(clock));
    framework
        .execute("cq", register("through cqrs-es"))
        .await
        .expect("register");
    framework
        .execute("cq", vodsource_domain::VideoCommand::Publish)
        .await
        .expect_err("not encoded");
    let envelopes = store.load_events("cq").await.expect("load events");
    assert_eq!(envelopes.len(), 1);
    assert_eq!(envelopes[0].sequence, 1);
    assert!(matches!(envelopes[0].payload, VideoEvent::VideoRegistered { .. }));
    let loaded = store.load_aggregate("cq").await.expect("load aggregate");
    assert_eq!(loaded.video.metadata.title, "through cqrs-es");
    // A conflicting commit from a stale context is cqrs-es's AggregateConflict.
    let stale = vodsource_commands::VideoContext { version: 0, ..loaded };
    let err = store
        .commit(vec![VideoEvent::VideoPublished {}], stale, Default::default())
        .await
        .expect_err("stale");
    assert!(matches!(err, cqrs_es::AggregateError::AggregateConflict));
    let ids: HashSet<_> = log
        .read_all(0, 10)
        .await
        .expect("read")
        .into_iter()
        .map(|e| e.event_id)
        .collect();
    assert_eq!(ids.len(), 1);
}

/// Reads anywhere in a long stream (interleaved with another) find their place, by version
/// and by global position, past the marks SQLite keeps every 64 versions.
pub async fn reads_in_a_long_stream_find_their_place_by_version_and_position(log: Arc<dyn EventLog>) {
    let mut positions = Vec::new();
    for chunk in 0..10 {
        let appended = log
            .append(append(
                "long",
                ExpectedVersion::Exact(chunk * 30),
                (0..30).map(|_| published()).collect(),
            ))
            .await
            .expect("append long");
        positions.extend(appended.first_position..=appended.last_position);
        log.append(append("other", ExpectedVersion::Any, vec![published()]))
            .await
            .expect("append other");
    }
    assert_eq!(positions.len(), 300);
    for (after, limit) in [
        (0, 1),
        (0, 300),
        (63, 2),
        (64, 64),
        (127, 1),
        (250, 100),
        (299, 5),
        (300, 5),
    ] {
        let read = log.read_stream("long", after, limit).await.expect("read");
        let versions: Vec<u64> = read.iter().map(|e| e.version).collect();
        let expected: Vec<u64> = (after + 1..=300).take(limit).collect();
        assert_eq!(versions, expected, "after {after}, limit {limit}");
        assert!(read.iter().all(|e| positions[(e.version - 1) as usize] == e.position));
    }
    assert_eq!(log.stream_version_at("long", 0).await.expect("version"), 0);
    assert_eq!(log.stream_version_at("nothing", 10).await.expect("version"), 0);
    for (i, position) in positions.iter().enumerate() {
        let version = i as u64 + 1;
        assert_eq!(
            log.stream_version_at("long", *position).await.expect("version"),
            version
        );
        // A position of another stream's event answers the version before it.
        if !positions.contains(&(position + 1)) {
            assert_eq!(
                log.stream_version_at("long", position + 1).await.expect("version"),
                version
            );
        }
    }
    assert_eq!(log.stream_version_at("long", u64::MAX / 2).await.expect("version"), 300);
}

macro_rules! conformance {
    ($module:ident, $open:expr) => {
        mod $module {
            use super::*;

            conformance!(@tests $open;
                appends_assign_stream_versions_and_global_positions,
                a_stale_expected_version_is_a_conflict_and_writes_nothing,
                a_long_stream_reads_in_pages_interleaved_with_others,
                resending_the_same_events_does_not_duplicate_them,
                malformed_appends_are_refused_with_the_reason,
                metadata_and_timestamps_round_trip,
                the_global_log_reads_in_pages_from_any_position,
                concurrent_writers_on_one_stream_never_lose_an_update,
                concurrent_writers_on_many_streams_get_dense_positions,
                a_subscription_catches_up_then_follows_live_appends,
                old_schema_versions_are_upcast_on_read,
                the_store_is_usable_by_cqrs_es,
                reads_in_a_long_stream_find_their_place_by_version_and_position,
            );
        }
    };
    (@tests $open:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (log, _guard) = $open;
                super::$name(log).await;
            }
        )*
    };
}

conformance!(sqlite, {
    let (log, dir) = crate::helpers::sqlite_log().await;
    (Arc::new(log) as Arc<dyn EventLog>, dir)
});

#[cfg(feature = "distributed")]
conformance!(postgres, {
    let log = crate::helpers::pg_log().await;
    (Arc::new(log) as Arc<dyn EventLog>, ())
});

/// On SQLite a stream is a chain of rows: a read of a few events of a 50,000-event stream
/// visits a few rows (its walk starts at the nearest mark), not the stream. Counted, not timed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_reads_of_a_50000_event_stream_visit_rows_in_proportion_to_the_answer() {
    let (log, _dir) = crate::helpers::sqlite_log().await;
    let mut last = 0;
    for chunk in 0..50u64 {
        let appended = log
            .append(append(
                "huge",
                ExpectedVersion::Exact(chunk * 1000),
                (0..1000).map(|_| published()).collect(),
            ))
            .await
            .expect("append");
        last = appended.last_position;
    }
    let cost = |before: u64| log.rows_read() - before;
    let before = log.rows_read();
    let first = log.read_stream("huge", 0, 1).await.expect("read");
    assert_eq!(first.iter().map(|e| e.version).collect::<Vec<_>>(), [1]);
    assert!(cost(before) <= 65, "history?limit=1 visited {} rows", cost(before));
    let before = log.rows_read();
    let page = log.read_stream("huge", 25_000, 100).await.expect("read");
    assert_eq!(page.first().map(|e| e.version), Some(25_001));
    assert_eq!(page.len(), 100);
    assert!(cost(before) <= 100 + 64, "a page of 100 visited {} rows", cost(before));
    // Resuming a live stream from a position near the end.
    let before = log.rows_read();
    assert_eq!(log.stream_version_at("huge", last - 10).await.expect("version"), 49_990);
    assert!(cost(before) <= 64, "finding a position visited {} rows", cost(before));
    let before = log.rows_read();
    let tail = log.read_stream("huge", 49_990, 100).await.expect("read");
    assert_eq!(tail.len(), 10);
    assert!(cost(before) <= 11, "the tail visited {} rows", cost(before));
}
