//! The view store on DynamoDB (moto on 127.0.0.1:5000, started by
//! `scripts/services.sh start aws`): views built there equal views built on SQLite, index
//! for index and page for page; a runner aborted at random moments ends at the same views;
//! writes are conditional on versions and fenced by leases; a rebuild fills a shadow that
//! readers never see and removes the old generation.

use std::sync::Arc;

use vodsource_commands::ports::{CheckpointStore, LeaseStore, ShardCheckpoint, ShardCheckpointStore, StoreError};
use vodsource_infra::aws::AwsSettings;
use vodsource_infra::dynamodb::DynamoViewStore;
use vodsource_projections::{rebuild, CatalogProjector, Doc, DocChange, IndexKey, StatusProjector, ViewStore};

use crate::helpers::{clock, commands, lifecycle};
use crate::projections::{build_fresh, runner, seeded};

fn endpoint() -> String {
    std::env::var("VODSOURCE_TEST_AWS_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5000".into())
}

/// A store on fresh tables of its own.
async fn store() -> DynamoViewStore {
    let endpoint = endpoint();
    assert!(
        std::net::TcpStream::connect(endpoint.trim_start_matches("http://")).is_ok(),
        "no AWS emulator at {endpoint}: start one with `scripts/services.sh start aws`"
    );
    let config = vodsource_infra::aws::load(&AwsSettings::emulator(&endpoint))
        .await
        .expect("config");
    let store = DynamoViewStore::new(&config, &format!("test-{}-", uuid::Uuid::now_v7().simple()));
    store.create_tables().await.expect("tables");
    store.create_tables().await.expect("creating them again is harmless");
    store
}

fn doc(key: &str, version: u64, body: &str, index: &[(&str, &str)]) -> Doc {
    Doc {
        key: key.into(),
        version,
        body: body.into(),
        index: Some(
            index
                .iter()
                .map(|(partition, sort)| IndexKey {
                    partition: (*partition).into(),
                    sort: (*sort).into(),
                })
                .collect(),
        ),
        unindex: Vec::new(),
    }
}

/// Every entry of a catalog partition, walked in pages of 7.
async fn all_pages(store: &dyn ViewStore, partition: &str) -> Vec<vodsource_projections::IndexedDoc> {
    let mut all = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .query("catalog", partition, cursor.as_ref(), 7)
            .await
            .expect("query");
        cursor = page.last().map(|d| d.cursor());
        let done = page.len() < 7;
        all.extend(page);
        if done {
            return all;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_built_on_dynamodb_equal_views_built_on_sqlite() {
    let (log, dir) = seeded(40).await;
    let store = store().await;
    let views = Arc::new(store.clone());
    let clock = clock();
    for name in ["catalog", "status"] {
        let built = if name == "catalog" {
            let mut r = runner(
                CatalogProjector,
                log.clone(),
                views.clone(),
                views.clone(),
                clock.clone(),
                "p",
                9,
            );
            r.catch_up().await.expect("catch up");
            build_fresh(CatalogProjector, &log, &dir, "catalog.db").await
        } else {
            let mut r = runner(
                StatusProjector,
                log.clone(),
                views.clone(),
                views.clone(),
                clock.clone(),
                "p",
                9,
            );
            r.catch_up().await.expect("catch up");
            build_fresh(StatusProjector, &log, &dir, "status.db").await
        };
        assert!(!built.is_empty());
        assert_eq!(store.dump(name).await.expect("dump"), built, "{name}");
    }

    // Listing pages through an index the same way on both stores.
    let sqlite = crate::helpers::view_store(dir.path(), "catalog.db").await;
    for partition in ["all", "published:true", "status:ready"] {
        let ours = all_pages(&store, partition).await;
        let theirs = all_pages(&sqlite, partition).await;
        assert_eq!(ours, theirs, "{partition}");
    }
    let first = store.scan("catalog", None, 5).await.expect("scan");
    let next = store.scan("catalog", Some(&first[4].key), 5).await.expect("scan");
    assert_eq!(
        first.iter().chain(&next).map(|d| d.key.clone()).collect::<Vec<_>>(),
        sqlite
            .scan("catalog", None, 10)
            .await
            .expect("scan")
            .iter()
            .map(|d| d.key.clone())
            .collect::<Vec<_>>(),
        "key order across shards"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_aborted_at_random_moments_on_dynamodb_ends_at_the_same_views() {
    let (log, dir) = seeded(25).await;
    let store = store().await;
    let views = Arc::new(store.clone());
    let clock = clock();
    for round in 0..12u64 {
        let mut r = runner(
            CatalogProjector,
            log.clone(),
            views.clone(),
            views.clone(),
            clock.clone(),
            "p",
            4,
        );
        let task = tokio::spawn(async move { r.catch_up().await });
        // Abort after a varying time: between batches, or with a commit's requests in flight.
        tokio::time::sleep(std::time::Duration::from_millis(round * 15)).await;
        task.abort();
        let _ = task.await;
    }
    runner(CatalogProjector, log.clone(), views.clone(), views, clock, "p", 4)
        .catch_up()
        .await
        .expect("final");
    let fresh = build_fresh(CatalogProjector, &log, &dir, "fresh.db").await;
    assert_eq!(store.dump("catalog").await.expect("dump"), fresh);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_conditional_on_versions_and_fenced_by_leases() {
    let store = store().await;
    let now = chrono::Utc::now();
    let later = now + chrono::Duration::seconds(30);
    assert!(store.acquire_lease("catalog", "one", now, later).await.expect("lease"));
    assert!(
        !store.acquire_lease("catalog", "two", now, later).await.expect("lease"),
        "held"
    );
    assert!(store.acquire_lease("catalog", "one", now, later).await.expect("renew"));
    store.projection("catalog").await.expect("state");

    let put = |version: u64, body: &str, index: &[(&str, &str)]| DocChange::Put(doc("v1", version, body, index));
    store
        .commit(
            "catalog",
            1,
            "one",
            vec![put(3, "{\"v\":3}", &[("all", "t3"), ("status:ready", "t3")])],
            10,
        )
        .await
        .expect("commit");
    // An older or equal version changes nothing, index entries included.
    store
        .commit(
            "catalog",
            1,
            "one",
            vec![put(2, "{\"v\":2}", &[("status:uploaded", "t2")])],
            11,
        )
        .await
        .expect("replayed commit");
    let stored = store.get("catalog", "v1").await.expect("get").expect("doc");
    assert_eq!((stored.version, stored.body.as_str()), (3, "{\"v\":3}"));
    assert!(store
        .query("catalog", "status:uploaded", None, 10)
        .await
        .expect("query")
        .is_empty());
    assert_eq!(
        store
            .query("catalog", "status:ready", None, 10)
            .await
            .expect("query")
            .len(),
        1
    );
    assert_eq!(store.projection("catalog").await.expect("state").position, 11);

    // A newer version moves the entries it names.
    let mut newer = doc("v1", 4, "{\"v\":4}", &[("status:published", "t4")]);
    newer.unindex = vec![IndexKey {
        partition: "status:ready".into(),
        sort: "t3".into(),
    }];
    store
        .commit("catalog", 1, "one", vec![DocChange::Put(newer)], 12)
        .await
        .expect("commit");
    assert!(store
        .query("catalog", "status:ready", None, 10)
        .await
        .expect("query")
        .is_empty());
    assert_eq!(
        store
            .query("catalog", "status:published", None, 10)
            .await
            .expect("query")[0]
            .doc
            .version,
        4
    );

    // Someone without the lease is refused and writes nothing; so is a stale generation.
    let fenced = store
        .commit("catalog", 1, "two", vec![put(9, "{\"v\":9}", &[])], 13)
        .await;
    assert!(matches!(fenced, Err(StoreError::LeaseLost(_))), "{fenced:?}");
    assert_eq!(store.get("catalog", "v1").await.expect("get").expect("doc").version, 4);
    let stale = store.commit("catalog", 7, "one", vec![], 13).await;
    assert!(
        matches!(
            stale,
            Err(StoreError::GenerationConflict {
                generation: 7,
                live: Some(1),
                ..
            })
        ),
        "{stale:?}"
    );

    // Checkpoints: fenced by the lease of the same name when one is held.
    store
        .save_checkpoint("relay", "anyone", 5)
        .await
        .expect("no lease: free");
    assert!(store.acquire_lease("relay", "one", now, later).await.expect("lease"));
    assert!(matches!(
        store.save_checkpoint("relay", "two", 6).await,
        Err(StoreError::LeaseLost(_))
    ));
    store.save_checkpoint("relay", "one", 7).await.expect("holder");
    assert_eq!(store.load_checkpoint("relay").await.expect("load"), 7);
    let shard = ShardCheckpoint {
        sequence: "4960".into(),
        offset: 12,
    };
    assert!(
        store
            .save_shard_checkpoint("kinesis/s/g/0", "one", &shard)
            .await
            .is_err(),
        "needs the lease"
    );
    assert!(store
        .acquire_lease("kinesis/s/g/0", "one", now, later)
        .await
        .expect("lease"));
    store
        .save_shard_checkpoint("kinesis/s/g/0", "one", &shard)
        .await
        .expect("save");
    assert_eq!(
        store.load_shard_checkpoint("kinesis/s/g/0").await.expect("load"),
        Some(shard)
    );

    // A lapsed lease passes to another owner; the old one is fenced off.
    assert!(store
        .acquire_lease(
            "catalog",
            "two",
            later + chrono::Duration::seconds(1),
            later + chrono::Duration::seconds(60)
        )
        .await
        .expect("take over"));
    let fenced = store.commit("catalog", 1, "one", vec![], 14).await;
    assert!(matches!(fenced, Err(StoreError::LeaseLost(_))), "{fenced:?}");
    store
        .release_lease("catalog", "one")
        .await
        .expect("not held: nothing happens");
    assert!(
        !store.acquire_lease("catalog", "one", now, later).await.expect("lease"),
        "still two's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_on_dynamodb_fills_a_shadow_and_swaps_it_in() {
    let (log, _dir) = seeded(15).await;
    let store = store().await;
    let views = Arc::new(store.clone());
    let clock = clock();
    let mut r = runner(
        CatalogProjector,
        log.clone(),
        views.clone(),
        views.clone(),
        clock.clone(),
        "p",
        6,
    );
    r.catch_up().await.expect("catch up");
    let before = store.dump("catalog").await.expect("dump");

    let live_items = store.generation_items("catalog", 1).await.expect("count");
    assert!(
        live_items > 2 * before.len(),
        "documents, their index entries and the partition list: {live_items}"
    );

    let shadow = store.begin_rebuild("catalog", "p").await.expect("begin");
    assert_eq!(shadow, 2);
    // A rebuild that stops here leaves a half-built shadow, index entries included.
    store
        .commit(
            "catalog",
            shadow,
            "p",
            vec![DocChange::Put(doc("half", 1, "{}", &[("all", "1"), ("tag:half", "1")]))],
            3,
        )
        .await
        .expect("partial shadow");
    assert_eq!(store.generation_items("catalog", 2).await.expect("count"), 1 + 2 + 2);
    assert_eq!(
        store.dump("catalog").await.expect("dump"),
        before,
        "a half-built shadow is invisible"
    );

    let reached = rebuild(&mut r, |_| {}).await.expect("rebuild");
    assert_eq!(reached, log.head().await.expect("head"));
    let state = store.projection("catalog").await.expect("state");
    assert_eq!((state.generation, state.position), (3, reached));
    assert_eq!(
        store.dump("catalog").await.expect("dump"),
        before,
        "the rebuilt view equals the old one"
    );
    for (generation, what) in [(1, "the old generation"), (2, "the abandoned shadow")] {
        assert_eq!(
            store.generation_items("catalog", generation).await.expect("count"),
            0,
            "{what} is gone, index entries and partition list included"
        );
    }
    let commands = commands(log.clone(), clock);
    lifecycle(&commands, "late", 0).await;
    r.catch_up().await.expect("after rebuild");
    assert!(store.get("catalog", "late").await.expect("get").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_jobs_and_idempotency_keys_on_dynamodb() {
    use std::time::Duration;
    use vodsource_commands::ports::{IdempotencyStore, JobQueue, Reservation, StoredResponse, TimeoutStore};

    let store = store().await;
    let t0 = chrono::Utc::now();
    let at = |s: i64| t0 + chrono::Duration::seconds(s);

    // Jobs: ready by time, a later attempt replaces an earlier one and is not replaced back.
    store.offer_job("v1", 1, at(10)).await.expect("offer");
    store.offer_job("v2", 1, at(5)).await.expect("offer");
    store.offer_job("v3", 1, at(50)).await.expect("offer");
    store.offer_job("v1", 2, at(1)).await.expect("retry");
    store
        .offer_job("v1", 1, at(99))
        .await
        .expect("stale offer changes nothing");
    let ready = store.ready_jobs(at(20), 10).await.expect("ready");
    let ready: Vec<(String, u32)> = ready.into_iter().map(|(v, a, _)| (v, a)).collect();
    assert_eq!(
        ready,
        [("v1".to_owned(), 2), ("v2".to_owned(), 1)],
        "by time, not yet v3"
    );
    store
        .withdraw_job("v1", 1)
        .await
        .expect("an older attempt withdraws nothing");
    store.withdraw_job("v2", 1).await.expect("withdraw");
    let ready = store.ready_jobs(at(20), 10).await.expect("ready");
    assert_eq!(ready.iter().map(|(v, _, _)| v.as_str()).collect::<Vec<_>>(), ["v1"]);

    // Deadlines are a queue of their own.
    store.set_deadline("v9", 3, at(2)).await.expect("deadline");
    assert_eq!(store.due(at(1), 10).await.expect("due"), []);
    assert_eq!(store.due(at(3), 10).await.expect("due")[0].0, "v9");
    store.clear_deadline("v9", 3).await.expect("clear");
    assert_eq!(store.due(at(3), 10).await.expect("due"), []);

    // Idempotency keys: fresh, in flight, replayed, bound to their request.
    let day = Duration::from_secs(86_400);
    let minute = Duration::from_secs(60);
    let reserve = |fp: &'static str, now| {
        let store = store.clone();
        async move { store.reserve("ann", "k1", fp, now, day, minute).await.expect("reserve") }
    };
    assert_eq!(reserve("a", t0).await, Reservation::Fresh);
    assert_eq!(reserve("a", t0).await, Reservation::InFlight);
    assert_eq!(reserve("b", t0).await, Reservation::Mismatch);
    let answer = StoredResponse {
        status: 201,
        body: "{\"id\":\"v1\"}".into(),
    };
    store.complete("ann", "k1", &answer).await.expect("complete");
    assert_eq!(reserve("a", at(5)).await, Reservation::Replay(answer));
    store.release("ann", "k1").await.expect("a completed key is kept");
    assert!(matches!(reserve("a", at(6)).await, Reservation::Replay(_)));
    // An abandoned claim (no answer within `in_flight`) and an expired key are free again.
    assert_eq!(
        store.reserve("ann", "k2", "x", t0, day, minute).await.expect("reserve"),
        Reservation::Fresh
    );
    assert_eq!(
        store
            .reserve("ann", "k2", "y", at(61), day, minute)
            .await
            .expect("reserve"),
        Reservation::Fresh
    );
    assert_eq!(
        store
            .reserve("ann", "k1", "z", at(86_401), day, minute)
            .await
            .expect("reserve"),
        Reservation::Fresh
    );
}

/// A buggy delete that leaves its document's index entries behind.
async fn orphaning_delete(store: &(impl ViewStore + LeaseStore)) {
    let now = chrono::Utc::now();
    assert!(store
        .acquire_lease("catalog", "one", now, now + chrono::Duration::seconds(30))
        .await
        .expect("lease"));
    store.projection("catalog").await.expect("state");
    store
        .commit(
            "catalog",
            1,
            "one",
            vec![
                DocChange::Put(doc("kept", 1, "{}", &[("all", "t1")])),
                DocChange::Put(doc("gone", 1, "{}", &[("all", "t2"), ("status:ready", "t2")])),
            ],
            1,
        )
        .await
        .expect("commit");
    store
        .commit(
            "catalog",
            1,
            "one",
            vec![DocChange::Delete {
                key: "gone".into(),
                unindex: Vec::new(),
            }],
            2,
        )
        .await
        .expect("commit");
}

/// A comparison of dumps must see index entries whose document is gone (a projector that
/// forgets to unindex): both stores show them as a document without a body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dumps_show_index_entries_left_without_their_document() {
    let dir = vodsource_tests::TempDir::new();
    let sqlite = crate::helpers::view_store(dir.path(), "views.db").await;
    let dynamo = store().await;
    let expected = vec![
        doc("gone", 0, "", &[("all", "t2"), ("status:ready", "t2")]),
        doc("kept", 1, "{}", &[("all", "t1")]),
    ];
    orphaning_delete(&sqlite).await;
    assert_eq!(sqlite.dump("catalog").await.expect("dump"), expected, "SQLite");
    orphaning_delete(&dynamo).await;
    assert_eq!(dynamo.dump("catalog").await.expect("dump"), expected, "DynamoDB");
}
