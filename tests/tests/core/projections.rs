//! Projections: views built by the runner, crash-safety of checkpoints, replay into a shadow.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use vodsource_commands::ports::{Clock, EventLog, LeaseStore, StoreError};
use vodsource_domain::Stage;
use vodsource_infra::sqlite::SqliteViewStore;
use vodsource_projections::{
    rebuild, CatalogProjector, CatalogView, DeadLetterProjector, Doc, DocChange, IndexCursor, IndexedDoc,
    ProjectionState, Projector, Runner, RunnerConfig, RunnerError, StatusProjector, StatusView, ViewStore,
};

use crate::helpers::{clock, commands, lifecycle, sqlite_log, view_store, TempDir};

pub(crate) fn runner<P: Projector>(
    projector: P,
    log: Arc<dyn EventLog>,
    views: Arc<dyn ViewStore>,
    leases: Arc<dyn LeaseStore>,
    clock: Arc<dyn Clock>,
    owner: &str,
    batch: usize,
) -> Runner<P> {
    let config = RunnerConfig {
        batch,
        ..RunnerConfig::default()
    };
    Runner::new(projector, log, views, leases, clock, owner, config)
}

/// A log with `videos` lifecycles on it.
pub(crate) async fn seeded(videos: usize) -> (Arc<dyn EventLog>, TempDir) {
    let (log, dir) = sqlite_log().await;
    let log: Arc<dyn EventLog> = Arc::new(log);
    let commands = commands(log.clone(), clock());
    for i in 0..videos {
        lifecycle(&commands, &format!("v{i:04}"), i).await;
    }
    (log, dir)
}

pub(crate) async fn build_fresh<P: Projector + Clone>(
    projector: P,
    log: &Arc<dyn EventLog>,
    dir: &TempDir,
    file: &str,
) -> Vec<Doc> {
    let store = view_store(dir.path(), file).await;
    let views = Arc::new(store.clone());
    let mut r = runner(
        projector.clone(),
        log.clone(),
        views.clone(),
        views,
        clock(),
        "fresh",
        1000,
    );
    r.catch_up().await.expect("fresh catch up");
    store.dump(projector.name()).await.expect("dump")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_and_status_views_follow_each_lifecycle() {
    let (log, dir) = seeded(14).await;
    let store = view_store(dir.path(), "views.db").await;
    let views = Arc::new(store.clone());
    let clock = clock();
    runner(
        CatalogProjector,
        log.clone(),
        views.clone(),
        views.clone(),
        clock.clone(),
        "p",
        50,
    )
    .catch_up()
    .await
    .expect("catalog");
    runner(
        StatusProjector,
        log.clone(),
        views.clone(),
        views.clone(),
        clock.clone(),
        "p",
        50,
    )
    .catch_up()
    .await
    .expect("status");
    runner(
        DeadLetterProjector,
        log.clone(),
        views.clone(),
        views.clone(),
        clock,
        "p",
        50,
    )
    .catch_up()
    .await
    .expect("dead letters");

    let catalog = |key: &str| {
        let store = store.clone();
        let key = key.to_owned();
        async move {
            store
                .get("catalog", &key)
                .await
                .expect("get")
                .map(|d| serde_json::from_str::<CatalogView>(&d.body).expect("catalog json"))
        }
    };
    // i % 7: 0 published, 1 registered only, 2 queued, 3 failed, 4 ready, 5 renamed, 6 deleted.
    let published = catalog("v0000").await.expect("v0");
    assert_eq!(
        (published.status, published.published, published.renditions.len()),
        (Stage::Ready, true, 2)
    );
    assert_eq!(published.duration_ms, Some(20_000));
    assert_eq!(published.thumbnail_key.as_deref(), Some("media/v0000/1/poster.jpg"));
    assert_eq!(catalog("v0001").await.expect("v1").status, Stage::AwaitingUpload);
    assert_eq!(catalog("v0002").await.expect("v2").status, Stage::Queued);
    assert_eq!(catalog("v0003").await.expect("v3").status, Stage::Failed);
    let ready = catalog("v0004").await.expect("v4");
    assert_eq!((ready.status, ready.published), (Stage::Ready, false));
    let renamed = catalog("v0005").await.expect("v5");
    assert_eq!(
        (renamed.title.as_str(), renamed.description.as_str()),
        ("renamed 5", "now with a description")
    );
    assert!(catalog("v0006").await.is_none(), "deleted videos leave the catalog");
    assert_eq!(store.dump("catalog").await.expect("dump").len(), 12);

    // The secondary index: newest first, per partition, paged by sort key, deletions gone.
    let list = |partition: &'static str, before: Option<IndexCursor>, limit: usize| {
        let store = store.clone();
        async move {
            store
                .query("catalog", partition, before.as_ref(), limit)
                .await
                .expect("query")
        }
    };
    let all = list("all", None, 100).await;
    assert_eq!(all.len(), 12);
    assert!(all.windows(2).all(|w| w[0].cursor() > w[1].cursor()), "newest first");
    assert_eq!(all[0].doc.key, "v0012");
    let first = list("all", None, 5).await;
    let second = list("all", first.last().map(IndexedDoc::cursor), 5).await;
    let paged: Vec<_> = first.iter().chain(&second).map(|d| d.doc.key.clone()).collect();
    let direct: Vec<_> = all.iter().take(10).map(|d| d.doc.key.clone()).collect();
    assert_eq!(paged, direct, "pages continue where the cursor left off");
    let keys = |docs: Vec<IndexedDoc>| docs.into_iter().map(|d| d.doc.key).collect::<Vec<_>>();
    assert_eq!(keys(list("status:failed", None, 100).await), ["v0010", "v0003"]);
    assert_eq!(
        keys(list("published:true", None, 100).await),
        ["v0012", "v0007", "v0005", "v0000"]
    );
    assert!(list("status:deleted", None, 100).await.is_empty());
    assert!(keys(list("all", None, 100).await)
        .iter()
        .all(|k| k != "v0006" && k != "v0013"));

    let status: StatusView =
        serde_json::from_str(&store.get("status", "v0003").await.expect("get").expect("v3").body).expect("json");
    assert_eq!(status.stage, Stage::Failed);
    assert_eq!(
        status.last_error.as_ref().map(|f| f.reason.as_str()),
        Some("source is not a video")
    );
    assert_eq!(status.renditions.get("720p"), Some(&100.0));
    let dead = store.dump("dead_letters").await.expect("dead letters");
    assert_eq!(
        dead.iter().map(|d| d.key.as_str()).collect::<Vec<_>>(),
        vec!["v0003", "v0010"]
    );
}

/// A view store whose commits can be made to die: before the transaction, or in the middle
/// of it (the commit future is polled once and then dropped, as a killed task would be).
struct Killer {
    inner: SqliteViewStore,
    commits: std::sync::atomic::AtomicUsize,
    kill_at: usize,
    inside: bool,
}

#[async_trait]
impl ViewStore for Killer {
    async fn projection(&self, name: &str) -> Result<ProjectionState, StoreError> {
        self.inner.projection(name).await
    }
    async fn get_many(
        &self,
        view: &str,
        generation: u32,
        keys: &[String],
    ) -> Result<std::collections::HashMap<String, Doc>, StoreError> {
        self.inner.get_many(view, generation, keys).await
    }
    async fn get(&self, view: &str, key: &str) -> Result<Option<Doc>, StoreError> {
        self.inner.get(view, key).await
    }
    async fn query(
        &self,
        view: &str,
        partition: &str,
        before: Option<&IndexCursor>,
        limit: usize,
    ) -> Result<Vec<IndexedDoc>, StoreError> {
        self.inner.query(view, partition, before, limit).await
    }
    async fn scan(&self, view: &str, after: Option<&str>, limit: usize) -> Result<Vec<Doc>, StoreError> {
        self.inner.scan(view, after, limit).await
    }
    async fn commit(
        &self,
        view: &str,
        generation: u32,
        owner: &str,
        changes: Vec<DocChange>,
        position: u64,
    ) -> Result<(), StoreError> {
        let n = self.commits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if n == self.kill_at {
            if self.inside {
                let commit = self.inner.commit(view, generation, owner, changes, position);
                let _ = tokio::time::timeout(Duration::ZERO, commit).await;
            }
            return Err(StoreError::unavailable("killed"));
        }
        self.inner.commit(view, generation, owner, changes, position).await
    }
    async fn record_failure(&self, name: &str, position: u64, error: &str) -> Result<(), StoreError> {
        self.inner.record_failure(name, position, error).await
    }
    async fn begin_rebuild(&self, name: &str, owner: &str) -> Result<u32, StoreError> {
        self.inner.begin_rebuild(name, owner).await
    }
    async fn finish_rebuild(&self, name: &str, owner: &str, generation: u32) -> Result<(), StoreError> {
        self.inner.finish_rebuild(name, owner, generation).await
    }
}

async fn killed_and_restarted_equals_a_fresh_replay<P: Projector + Clone>(projector: P) {
    let (log, dir) = seeded(60).await;
    let store = view_store(dir.path(), "views.db").await;
    let clock = clock();
    let mut restarts = 0;
    for (kill_at, inside) in [
        (0, false),
        (1, true),
        (3, false),
        (4, true),
        (6, true),
        (9, false),
        (12, true),
    ] {
        let killer = Arc::new(Killer {
            inner: store.clone(),
            commits: Default::default(),
            kill_at,
            inside,
        });
        // A restarted process comes back under the same identity here; its lease is its own.
        let mut r = runner(
            projector.clone(),
            log.clone(),
            killer,
            Arc::new(store.clone()),
            clock.clone(),
            "p",
            13,
        );
        match r.catch_up().await {
            Err(RunnerError::Store(StoreError::Unavailable { message: m, .. })) if m == "killed" => restarts += 1,
            Ok(_) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(restarts >= 5, "the runner died {restarts} times");
    let views = Arc::new(store.clone());
    runner(projector.clone(), log.clone(), views.clone(), views, clock, "p", 13)
        .catch_up()
        .await
        .expect("final catch up");
    let after_crashes = store.dump(projector.name()).await.expect("dump");
    let fresh = build_fresh(projector.clone(), &log, &dir, "fresh.db").await;
    assert!(!fresh.is_empty());
    assert_eq!(
        after_crashes,
        fresh,
        "{} after crashes equals a fresh replay",
        projector.name()
    );
    let state = store.projection(projector.name()).await.expect("state");
    assert_eq!(state.position, log.head().await.expect("head"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_runner_killed_between_and_inside_batches_ends_equal_to_a_fresh_replay() {
    killed_and_restarted_equals_a_fresh_replay(CatalogProjector).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_runner_killed_between_and_inside_batches_ends_equal_to_a_fresh_replay() {
    killed_and_restarted_equals_a_fresh_replay(StatusProjector).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_task_aborted_at_random_moments_resumes_to_the_same_views() {
    let (log, dir) = seeded(40).await;
    let store = view_store(dir.path(), "views.db").await;
    let views = Arc::new(store.clone());
    let clock = clock();
    for round in 0..20u64 {
        let mut r = runner(
            CatalogProjector,
            log.clone(),
            views.clone(),
            views.clone(),
            clock.clone(),
            "p",
            5,
        );
        let task = tokio::spawn(async move { r.catch_up().await });
        // Abort after a varying number of scheduler turns: sometimes between batches,
        // sometimes with a commit in flight.
        for _ in 0..(round * 3) {
            tokio::task::yield_now().await;
        }
        task.abort();
        let _ = task.await;
    }
    runner(CatalogProjector, log.clone(), views.clone(), views, clock, "p", 5)
        .catch_up()
        .await
        .expect("final");
    let fresh = build_fresh(CatalogProjector, &log, &dir, "fresh.db").await;
    assert_eq!(store.dump("catalog").await.expect("dump"), fresh);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_runner_waits_while_the_first_holds_the_lease() {
    let (log, dir) = seeded(3).await;
    let store = view_store(dir.path(), "views.db").await;
    let views = Arc::new(store.clone());
    let clock = clock();
    let mut first = runner(
        CatalogProjector,
        log.clone(),
        views.clone(),
        views.clone(),
        clock.clone(),
        "one",
        100,
    );
    first.catch_up().await.expect("first");
    let mut second = runner(
        CatalogProjector,
        log.clone(),
        views.clone(),
        views.clone(),
        clock.clone(),
        "two",
        100,
    );
    assert!(matches!(second.catch_up().await, Err(RunnerError::LeaseHeld { .. })));
    // A commit from a runner without the lease is fenced off.
    let err = store.commit("catalog", 1, "two", vec![], 1).await.expect_err("fenced");
    assert!(matches!(err, StoreError::LeaseLost(_)), "{err:?}");
    // Once the first lease lapses, the second takes over.
    clock.advance(chrono::Duration::seconds(16));
    second.catch_up().await.expect("second takes over");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_fills_a_shadow_and_swaps_it_in_atomically() {
    let (log, dir) = seeded(21).await;
    let store = view_store(dir.path(), "views.db").await;
    let views = Arc::new(store.clone());
    let clock = clock();
    let mut r = runner(
        CatalogProjector,
        log.clone(),
        views.clone(),
        views.clone(),
        clock.clone(),
        "p",
        7,
    );
    r.catch_up().await.expect("catch up");
    let before = store.dump("catalog").await.expect("dump");

    // Readers keep seeing the live generation while the shadow is half built.
    let shadow = store.begin_rebuild("catalog", "p").await.expect("begin");
    assert_eq!(shadow, 2);
    store
        .commit("catalog", shadow, "p", vec![], 3)
        .await
        .expect("partial shadow");
    assert_eq!(
        store.dump("catalog").await.expect("dump"),
        before,
        "a half-built shadow is invisible"
    );

    let mut events = 0;
    let reached = rebuild(&mut r, |p| events = p.events).await.expect("rebuild");
    assert_eq!(reached, log.head().await.expect("head"));
    assert_eq!(events, reached);
    let state = store.projection("catalog").await.expect("state");
    assert_eq!((state.generation, state.position), (3, reached));
    assert_eq!(
        store.dump("catalog").await.expect("dump"),
        before,
        "the rebuilt view equals the old one"
    );
    // The runner goes on writing the new generation.
    let commands = commands(log.clone(), clock);
    lifecycle(&commands, "late", 0).await;
    r.catch_up().await.expect("after rebuild");
    assert!(store.get("catalog", "late").await.expect("get").is_some());
}
