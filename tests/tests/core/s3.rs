//! The object store port on S3 (moto's S3 on 127.0.0.1:5000, started by
//! `scripts/services.sh start aws`): single and multipart puts under a key prefix, limits that
//! store nothing, fetch, head and delete; the lake sink uploading there, read back by pyarrow's
//! own S3 client and duckdb, and local SQL reading it in place.

use object_store::signer::Signer;
use tokio::io::AsyncRead;
use vodsource_commands::ports::{Access, ObjectStore, PutError, StoreError, StreamProducer, StreamRecord};
use vodsource_infra::aws::AwsSettings;
use vodsource_infra::s3::{s3_client, S3ObjectStore};
use vodsource_infra::EmbeddedLog;
use vodsource_lake::query::Lake;
use vodsource_lake::sink::{LakeSink, SINK_GROUP};
use vodsource_lake::tables::QOE_EVENTS;
use vodsource_tests::{lake, TempDir};

use crate::lake::{event, settings, sink_until_committed, BASE_MS};

fn endpoint() -> String {
    std::env::var("VODSOURCE_TEST_AWS_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5000".into())
}

/// A new bucket on the emulator, made with a plain HTTP PUT (the emulator does not check
/// signatures); returns the endpoint and the bucket.
async fn bucket() -> (String, String) {
    let endpoint = endpoint();
    let bucket = format!("test-{}", uuid::Uuid::now_v7().simple());
    let created = reqwest::Client::new()
        .put(format!("{endpoint}/{bucket}"))
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!("no S3 emulator at {endpoint} ({e}): start one with `scripts/services.sh start aws`")
        });
    assert!(created.status().is_success(), "create bucket: {}", created.status());
    (endpoint, bucket)
}

fn body(bytes: Vec<u8>) -> Box<dyn AsyncRead + Send + Unpin> {
    Box::new(std::io::Cursor::new(bytes))
}

/// `n` bytes that differ from part to part, so a part out of place shows.
fn bytes(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i / 7 % 251) as u8 ^ (i >> 20) as u8).collect()
}

#[tokio::test]
async fn objects_go_to_s3_whole_or_not_at_all_under_the_prefix() {
    let (endpoint, bucket) = bucket().await;
    let store = S3ObjectStore::open(&format!("s3://{bucket}/vod/"), &AwsSettings::emulator(&endpoint))
        .await
        .expect("store");
    store.check().await.expect("the bucket answers");
    assert_eq!(store.describe(), format!("s3://{bucket}/vod"));

    // A small body is one request, stored under the prefix: a plain GET of a URL presigned
    // by a client of the whole bucket reads it at `vod/…`.
    let small = bytes(1000);
    assert_eq!(
        store
            .put("sources/v1/a.bin", body(small.clone()), 10_000)
            .await
            .expect("put"),
        1000
    );
    let whole_bucket = s3_client(&bucket, &AwsSettings::emulator(&endpoint))
        .await
        .expect("client");
    let url = whole_bucket
        .signed_url(
            reqwest::Method::GET,
            &"vod/sources/v1/a.bin".into(),
            std::time::Duration::from_secs(60),
        )
        .await
        .expect("presigned");
    let plain = reqwest::get(url.as_str()).await.expect("get");
    assert!(plain.status().is_success(), "GET {url}: {}", plain.status());
    assert_eq!(plain.bytes().await.expect("bytes").as_ref(), small.as_slice());
    let meta = store.head("sources/v1/a.bin").await.expect("head").expect("exists");
    assert_eq!(meta.size, 1000);

    // A large one goes in parts (8 MiB each) and comes back byte for byte.
    let large = bytes(20 * 1024 * 1024 + 123);
    let size = store
        .put("sources/v1/b.bin", body(large.clone()), 64 * 1024 * 1024)
        .await
        .expect("multipart put");
    assert_eq!(size, large.len() as u64);
    let local = TempDir::new();
    let dest = local.path().join("b.bin");
    assert_eq!(store.fetch("sources/v1/b.bin", &dest, None).await.expect("fetch"), size);
    assert!(std::fs::read(&dest).expect("read") == large, "the fetched bytes differ");

    // Past the limit, nothing is stored, in one request or in parts.
    let refused = store.put("sources/v1/c.bin", body(bytes(100)), 99).await;
    assert_eq!(refused, Err(PutError::TooLarge { limit: 99 }));
    let refused = store
        .put("sources/v1/d.bin", body(bytes(17 * 1024 * 1024)), 16 * 1024 * 1024)
        .await;
    assert_eq!(
        refused,
        Err(PutError::TooLarge {
            limit: 16 * 1024 * 1024
        })
    );
    for key in ["sources/v1/c.bin", "sources/v1/d.bin"] {
        assert_eq!(store.head(key).await.expect("head"), None, "{key} was stored");
    }

    // Bad keys and missing objects are named.
    let bad = store.head("../escape").await;
    assert!(
        matches!(&bad, Err(StoreError::Invalid(m)) if m.contains("../escape")),
        "{bad:?}"
    );
    let missing = store.fetch("sources/v1/none.bin", &dest, None).await;
    assert!(
        matches!(&missing, Err(StoreError::NotFound(m)) if m.contains("none.bin")),
        "{missing:?}"
    );

    // Deleting a prefix removes what is under it and nothing else.
    store.put("sources/v10/e.bin", body(bytes(5)), 10).await.expect("put");
    assert_eq!(store.delete_prefix("sources/v1").await.expect("delete"), 2);
    assert_eq!(store.head("sources/v1/a.bin").await.expect("head"), None);
    assert!(store.head("sources/v10/e.bin").await.expect("head").is_some());

    // A bucket that does not exist fails the check, naming it.
    let absent = S3ObjectStore::open("s3://vodsource-no-such-bucket", &AwsSettings::emulator(&endpoint))
        .await
        .expect("store");
    let e = absent.check().await.expect_err("no bucket");
    assert!(e.to_string().contains("vodsource-no-such-bucket"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lake_sink_uploads_to_s3_and_local_sql_reads_it_there() {
    let (endpoint, bucket) = bucket().await;
    let dir = TempDir::new();
    let store = std::sync::Arc::new(
        S3ObjectStore::open(&format!("s3://{bucket}/analytics"), &AwsSettings::emulator(&endpoint))
            .await
            .expect("store"),
    );
    let log = EmbeddedLog::open(dir.path().join("streams"), 2).expect("log");
    // 1,500 events over three hours.
    let records: Vec<StreamRecord> = (0..1500).map(|i| event(i, BASE_MS + i as i64 * 7_000)).collect();
    log.publish("qoe-events", records).await.expect("published");
    let consumer = log.consumer("qoe-events", SINK_GROUP).expect("consumer");
    let objects: std::sync::Arc<dyn ObjectStore> = store.clone();
    let mut sink = LakeSink::new(consumer, "qoe-events", &QOE_EVENTS, objects, settings(&dir)).expect("sink");
    sink_until_committed(&mut sink, 1500).await;
    sink.flush_all().await.expect("flush");

    let table = lake::read_s3(&endpoint, &bucket, "analytics", "qoe_events");
    assert_eq!(table.event_ids.len(), 1500);
    assert!(table.event_ids.values().all(|n| *n == 1), "no duplicates");
    assert_eq!(table.misplaced, 0);
    assert!(table
        .files
        .iter()
        .all(|f| f.statistics && f.page_index && f.codecs == ["ZSTD"]));
    assert!(
        table.files.len() >= 3,
        "a file per partition and hour: {}",
        table.files.len()
    );

    let lake = Lake::open_remote(&format!("s3://{bucket}/analytics"), store.client())
        .await
        .expect("lake");
    let batches = lake
        .sql("SELECT count(*) AS n, count(DISTINCT event_id) AS ids FROM qoe_events WHERE event_date = '2026-11-23'")
        .await
        .expect("query");
    let text = vodsource_lake::query::render(&batches, vodsource_lake::query::Format::Csv).expect("csv");
    assert_eq!(text, "n,ids\n1500,1500\n");
    // The partition filter prunes on S3 as on a folder: one hour reads only that hour.
    let batches = lake
        .sql("SELECT count(*) AS n FROM qoe_events WHERE event_hour = '05'")
        .await
        .expect("query");
    let text = vodsource_lake::query::render(&batches, vodsource_lake::query::Format::Csv).expect("csv");
    let in_hour = (0..1500_i64)
        .filter(|i| (BASE_MS + i * 7_000) / 3_600_000 % 24 == 5)
        .count();
    assert_eq!(text, format!("n\n{in_hour}\n"));
    let plan = lake
        .explain("SELECT count(*) FROM qoe_events WHERE event_hour = '05'")
        .await
        .expect("explain");
    assert!(!plan.contains("event_hour=04"), "another hour's file is read: {plan}");
}

/// Runs botocore's SigV4 signer (an independent implementation) over `url` as sent with
/// `content-length: length`: whether S3 would take it.
fn botocore_accepts(url: &str, length: u64) -> bool {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/src/verify_presigned.py");
    let output = std::process::Command::new("python3")
        .args([script, url, "PUT", "vodsource", "vodsource", "us-east-1"])
        .arg(format!("content-length={length}"))
        .output()
        .expect("python3 runs; botocore comes with `scripts/services.sh start aws`");
    assert!(
        output.status.success(),
        "the verifier failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    match String::from_utf8_lossy(&output.stdout).trim() {
        "valid" => true,
        "invalid" => false,
        other => panic!("the verifier said {other:?}"),
    }
}

/// An upload URL fixes its length: its signature covers `content-length`, so S3 refuses a
/// body of any other size (checked by botocore's signer; the emulator checks no signatures).
#[tokio::test]
async fn an_upload_url_signs_its_length() {
    let (endpoint, bucket) = bucket().await;
    let store = S3ObjectStore::open(&format!("s3://{bucket}/vod"), &AwsSettings::emulator(&endpoint))
        .await
        .expect("store");
    let url = store
        .presign(
            "sources/v1/clip one.mp4",
            Access::Write { length: 10 },
            std::time::Duration::from_secs(600),
        )
        .await
        .expect("presign")
        .expect("S3 presigns");
    assert!(url.contains("X-Amz-SignedHeaders=content-length%3Bhost"), "{url}");
    assert!(botocore_accepts(&url, 10), "{url}");
    for other in [9, 11, 5 * 1024 * 1024 * 1024] {
        assert!(
            !botocore_accepts(&url, other),
            "a {other}-byte body would be taken: {url}"
        );
    }
    // And it is the URL S3 is given: the emulator stores the object under the prefix.
    let put = reqwest::Client::new()
        .put(&url)
        .body(vec![1u8; 10])
        .send()
        .await
        .expect("put");
    assert!(put.status().is_success(), "{}", put.status());
    assert_eq!(
        store
            .head("sources/v1/clip one.mp4")
            .await
            .expect("head")
            .map(|m| m.size),
        Some(10)
    );
}

/// A worker reads a source exactly as recorded: its size, its version (ETag), no more bytes.
#[tokio::test]
async fn a_fetch_reads_exactly_the_recorded_object() {
    let (endpoint, bucket) = bucket().await;
    let store = S3ObjectStore::open(&format!("s3://{bucket}/vod"), &AwsSettings::emulator(&endpoint))
        .await
        .expect("store");
    store.put("sources/v/a.bin", body(bytes(100)), 1000).await.expect("put");
    let recorded = store.head("sources/v/a.bin").await.expect("head").expect("exists");
    assert!(recorded.etag.is_some(), "S3 keeps an ETag");
    let local = TempDir::new();
    let dest = local.path().join("a.bin");
    assert_eq!(
        store
            .fetch("sources/v/a.bin", &dest, Some(&recorded))
            .await
            .expect("fetch"),
        100
    );
    // Replaced by other bytes of the same size: another ETag.
    store
        .put("sources/v/a.bin", body(vec![9u8; 100]), 1000)
        .await
        .expect("put");
    let replaced = store.fetch("sources/v/a.bin", &dest, Some(&recorded)).await;
    assert!(
        matches!(&replaced, Err(StoreError::Invalid(m)) if m.contains("replaced")),
        "{replaced:?}"
    );
    // Of another size, and the version not pinned: refused before a byte past the size.
    store
        .put("sources/v/a.bin", body(bytes(5000)), 10_000)
        .await
        .expect("put");
    let unpinned = vodsource_commands::ports::ObjectMeta { etag: None, ..recorded };
    let bigger = store.fetch("sources/v/a.bin", &dest, Some(&unpinned)).await;
    assert!(
        matches!(&bigger, Err(StoreError::Invalid(m)) if m.contains("5000 bytes, not the 100 expected")),
        "{bigger:?}"
    );
}
