use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use vodsource_commands::codec::{DecodeError, Decoder};
use vodsource_commands::ports::{Clock, EventLog, LeaseStore, RecordedEvent, StoreError};
use vodsource_commands::Subscription;
use vodsource_domain::{VideoEvent, VIDEO_STREAM_TYPE};

use crate::projector::{EventMeta, IndexKey, Projector, ViewChange};
use crate::view_store::{Doc, DocChange, ProjectionState, ProjectionStatus, ViewStore};

/// Tuning of a runner.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Events read and committed per batch.
    pub batch: usize,
    /// How long the runner's lease lasts; renewed at a third of it.
    pub lease_ttl: Duration,
    /// Documents kept in memory between batches (the runner is their only writer).
    pub cache_capacity: usize,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            batch: 1000,
            lease_ttl: Duration::from_secs(15),
            cache_capacity: 100_000,
        }
    }
}

/// Why a runner stopped or a step failed.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// An event it cannot read: the projection stops there; the others go on.
    #[error("projection {projection} stopped: {source}")]
    Stopped {
        /// The projection.
        projection: &'static str,
        /// The event that stopped it.
        source: DecodeError,
    },
    /// The projection was already stopped by an earlier failure.
    #[error("projection {projection} is stopped at position {position}: {error}")]
    Failed {
        /// The projection.
        projection: &'static str,
        /// Where.
        position: u64,
        /// Why.
        error: String,
    },
    /// Another runner holds the projection's lease.
    #[error("projection {projection} is run by another process")]
    LeaseHeld {
        /// The projection.
        projection: &'static str,
    },
    /// A store failed; retrying later may work.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A document as the runner holds it between batches. The runner is its view's only
/// writer (it holds the lease), so what it holds is what the store has, plus `dirty` changes.
struct Cached<V> {
    version: u64,
    view: Option<V>,
    dirty: bool,
    /// The document's index entries as the store holds them, so a commit adds and removes
    /// only the difference.
    indexed: Vec<IndexKey>,
}

/// Whether `projector` reads `event`: video events of the types it handles, and events of
/// unknown types (so that it stops on them rather than skip them).
fn reads<P: Projector>(projector: &P, event: &RecordedEvent) -> bool {
    event.stream_type == VIDEO_STREAM_TYPE
        && (!VideoEvent::TYPES.contains(&event.event_type.as_str()) || projector.handles(&event.event_type))
}

/// Decodes the events a projection reads; `None` for events it skips.
pub(crate) struct Predecoder<P> {
    projector: P,
    decoder: Decoder,
}

impl<P: Projector> Predecoder<P> {
    pub(crate) fn decode(&self, batch: &[RecordedEvent]) -> Vec<Option<Result<VideoEvent, DecodeError>>> {
        batch
            .iter()
            .map(|event| reads(&self.projector, event).then(|| self.decoder.decode(event)))
            .collect()
    }
}

/// Tails the log and keeps one projection's view up to date.
pub struct Runner<P: Projector> {
    projector: P,
    log: Arc<dyn EventLog>,
    views: Arc<dyn ViewStore>,
    leases: Arc<dyn LeaseStore>,
    clock: Arc<dyn Clock>,
    decoder: Decoder,
    owner: String,
    config: RunnerConfig,
    cache: HashMap<String, Cached<P::View>>,
    cache_generation: u32,
    /// Whether the store may hold documents the cache does not: false only while filling a
    /// fresh shadow from which nothing was dropped, when a missing key is known to be absent.
    partial: bool,
    /// Position folded into the cache but not yet committed.
    pending: Option<u64>,
    /// Cached documents with changes not yet committed.
    dirty: usize,
}

impl<P: Projector> Runner<P> {
    /// A runner for `projector`, taking leases as `owner`.
    pub fn new(
        projector: P,
        log: Arc<dyn EventLog>,
        views: Arc<dyn ViewStore>,
        leases: Arc<dyn LeaseStore>,
        clock: Arc<dyn Clock>,
        owner: impl Into<String>,
        config: RunnerConfig,
    ) -> Self {
        Self {
            projector,
            log,
            views,
            leases,
            clock,
            decoder: Decoder::new(),
            owner: owner.into(),
            config,
            cache: HashMap::new(),
            cache_generation: 0,
            partial: true,
            pending: None,
            dirty: 0,
        }
    }

    /// Reads events with `decoder` (and its upcasters).
    #[must_use]
    pub fn with_decoder(mut self, decoder: Decoder) -> Self {
        self.decoder = decoder;
        self
    }

    /// The projection's name.
    pub fn name(&self) -> &'static str {
        self.projector.name()
    }

    pub(crate) fn log(&self) -> &Arc<dyn EventLog> {
        &self.log
    }

    pub(crate) fn views(&self) -> &Arc<dyn ViewStore> {
        &self.views
    }

    pub(crate) fn owner(&self) -> &str {
        &self.owner
    }

    pub(crate) fn config(&self) -> &RunnerConfig {
        &self.config
    }

    /// Takes or renews the projection's lease.
    ///
    /// # Errors
    /// `LeaseHeld` when another runner has it; `Store` on failure.
    pub async fn acquire(&self) -> Result<(), RunnerError> {
        if self
            .leases
            .hold_lease(self.name(), &self.owner, &*self.clock, self.config.lease_ttl)
            .await?
        {
            Ok(())
        } else {
            Err(RunnerError::LeaseHeld {
                projection: self.name(),
            })
        }
    }

    /// Gives the lease up.
    ///
    /// # Errors
    /// `Store` on failure.
    pub async fn release(&self) -> Result<(), RunnerError> {
        self.leases.release_lease(self.name(), &self.owner).await?;
        Ok(())
    }

    /// Forgets every cached document; the next batches read what they need from the store.
    pub(crate) fn reset_cache(&mut self, generation: u32, store_may_hold_documents: bool) {
        self.cache.clear();
        self.cache_generation = generation;
        self.partial = store_may_hold_documents;
        self.pending = None;
        self.dirty = 0;
    }

    /// A decoder and filter that can run away from the runner (on another thread).
    pub(crate) fn predecoder(&self) -> Predecoder<P> {
        Predecoder {
            projector: self.projector.clone(),
            decoder: self.decoder.clone(),
        }
    }

    /// Decodes and folds `batch` (see [`Self::apply_decoded`]).
    pub(crate) async fn apply_batch(
        &mut self,
        generation: u32,
        batch: &[RecordedEvent],
        flush: bool,
    ) -> Result<(), RunnerError> {
        let decoded = self.predecoder().decode(batch);
        self.apply_decoded(generation, batch, decoded, flush).await
    }

    /// Folds `batch` into the cached documents of `generation`; with `flush`, commits the
    /// changed documents together with the checkpoint. When an event cannot be read, commits
    /// what came before it, records the failure and returns `Stopped`.
    ///
    /// # Errors
    /// `Stopped` on an unreadable event; `Store` when the commit fails (nothing is applied and
    /// the cache is dropped).
    pub(crate) async fn apply_decoded(
        &mut self,
        generation: u32,
        batch: &[RecordedEvent],
        decoded: Vec<Option<Result<VideoEvent, DecodeError>>>,
        flush: bool,
    ) -> Result<(), RunnerError> {
        if self.cache_generation != generation {
            self.reset_cache(generation, true);
        }
        self.load_missing(generation, batch).await?;
        let mut stopped = None;
        for (event, decoded) in batch.iter().zip(decoded) {
            let decoded = match decoded {
                None => {
                    self.pending = Some(event.position);
                    continue;
                }
                Some(Ok(decoded)) => decoded,
                Some(Err(error)) => {
                    stopped = Some(error);
                    break;
                }
            };
            self.pending = Some(event.position);
            let Some(slot) = self.cache.get_mut(&event.stream_id) else {
                continue;
            };
            if slot.version >= event.version {
                continue; // already folded in: a replay after a crash changes nothing
            }
            let meta = EventMeta {
                stream_id: &event.stream_id,
                version: event.version,
                position: event.position,
                occurred_at: event.occurred_at,
            };
            match self.projector.project(slot.view.take(), decoded, meta) {
                ViewChange::Unchanged(view) => slot.view = view,
                ViewChange::Put(view) => {
                    slot.view = Some(view);
                    slot.version = event.version;
                    self.dirty += usize::from(!slot.dirty);
                    slot.dirty = true;
                }
                ViewChange::Delete => {
                    slot.version = event.version;
                    self.dirty += usize::from(!slot.dirty);
                    slot.dirty = true;
                }
            }
        }
        if flush || stopped.is_some() {
            self.flush(generation).await?;
        }
        if let Some(error) = stopped {
            let message = error.to_string();
            self.views
                .record_failure(self.name(), error.position(), &message)
                .await?;
            tracing::error!(projection = self.name(), position = error.position(), error = %message, "projection stopped");
            return Err(RunnerError::Stopped {
                projection: self.name(),
                source: error,
            });
        }
        Ok(())
    }

    /// Documents changed since the last flush.
    pub(crate) fn dirty(&self) -> usize {
        self.dirty
    }

    /// Commits every changed document with the pending checkpoint.
    ///
    /// # Errors
    /// `Store` when the commit fails; the cache is then dropped.
    pub(crate) async fn flush(&mut self, generation: u32) -> Result<(), RunnerError> {
        if let Some(commit) = self.flush_in_background(generation)? {
            let result = match commit.await {
                Ok(result) => result,
                Err(e) => Err(StoreError::unexpected(format!("view commit task failed: {e}")).into()),
            };
            if let Err(e) = result {
                self.reset_cache(generation, true);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Takes every changed document and the pending checkpoint, marks them clean, and
    /// returns their commit as a task of its own, so folding can go on while it writes. The
    /// caller must await it before committing anything else for this view.
    ///
    /// # Errors
    /// A view that does not serialize.
    pub(crate) fn flush_in_background(
        &mut self,
        generation: u32,
    ) -> Result<Option<tokio::task::JoinHandle<Result<(), RunnerError>>>, RunnerError> {
        let Some(position) = self.pending else {
            return Ok(None);
        };
        let mut changes = Vec::new();
        for (key, slot) in &mut self.cache {
            if !slot.dirty {
                continue;
            }
            changes.push(match &slot.view {
                Some(view) => {
                    let body = serde_json::to_string(view)
                        .map_err(|e| StoreError::unexpected(format!("view does not serialize: {e}")))?;
                    let (index, unindex) = match self.projector.index(view) {
                        Some(keys) => {
                            let added = keys.iter().filter(|k| !slot.indexed.contains(k)).cloned().collect();
                            let removed = slot.indexed.iter().filter(|k| !keys.contains(k)).cloned().collect();
                            slot.indexed = keys;
                            (Some(added), removed)
                        }
                        None => (None, std::mem::take(&mut slot.indexed)),
                    };
                    DocChange::Put(Doc {
                        key: key.clone(),
                        version: slot.version,
                        body,
                        index,
                        unindex,
                    })
                }
                None => DocChange::Delete {
                    key: key.clone(),
                    unindex: std::mem::take(&mut slot.indexed),
                },
            });
        }
        self.pending = None;
        self.dirty = 0;
        for slot in self.cache.values_mut() {
            slot.dirty = false;
        }
        if self.cache.len() > self.config.cache_capacity {
            // Keep memory bounded; from now on missing keys must be looked up.
            self.cache.clear();
            self.partial = true;
        }
        let views = self.views.clone();
        let (name, owner) = (self.name(), self.owner.clone());
        Ok(Some(tokio::spawn(async move {
            views
                .commit(name, generation, &owner, changes, position)
                .await
                .map_err(RunnerError::from)
        })))
    }

    /// Puts every document `batch` touches into the cache, reading from the store only what
    /// it may hold.
    async fn load_missing(&mut self, generation: u32, batch: &[RecordedEvent]) -> Result<(), RunnerError> {
        let mut missing = Vec::new();
        let mut wanted = std::collections::HashSet::new();
        for event in batch {
            if !reads(&self.projector, event) || self.cache.contains_key(&event.stream_id) {
                continue;
            }
            if wanted.insert(event.stream_id.as_str()) {
                missing.push(event.stream_id.clone());
            }
        }
        let absent = |key: &String| {
            (
                key.clone(),
                Cached {
                    version: 0,
                    view: None,
                    dirty: false,
                    indexed: Vec::new(),
                },
            )
        };
        if !self.partial {
            self.cache.extend(missing.iter().map(absent));
            return Ok(());
        }
        for chunk in missing.chunks(500) {
            let mut docs = self.views.get_many(self.name(), generation, chunk).await?;
            for key in chunk {
                let cached = match docs.remove(key) {
                    Some(doc) => {
                        let view: P::View = serde_json::from_str(&doc.body).map_err(|e| {
                            StoreError::unexpected(format!("{} document {key} is unreadable: {e}", self.name()))
                        })?;
                        Cached {
                            version: doc.version,
                            indexed: self.projector.index(&view).unwrap_or_default(),
                            view: Some(view),
                            dirty: false,
                        }
                    }
                    None => absent(key).1,
                };
                self.cache.insert(key.clone(), cached);
            }
        }
        Ok(())
    }

    /// Takes the lease and reads where the projection is. A stopped projection stays stopped.
    async fn start(&mut self) -> Result<ProjectionState, RunnerError> {
        self.acquire().await?;
        let state = self.views.projection(self.name()).await?;
        if let ProjectionStatus::Failed { position, error } = &state.status {
            return Err(RunnerError::Failed {
                projection: self.name(),
                position: *position,
                error: error.clone(),
            });
        }
        // Another runner may have written while this one did not hold the lease.
        self.reset_cache(state.generation, true);
        Ok(state)
    }

    /// Takes the lease and folds in everything up to the current head of the log.
    /// Returns the position reached.
    ///
    /// # Errors
    /// `LeaseHeld`, `Failed` when the projection is stopped, `Stopped`, `Store`.
    pub async fn catch_up(&mut self) -> Result<u64, RunnerError> {
        let state = self.start().await?;
        let mut subscription = Subscription::new(self.log.clone(), state.position).with_page(self.config.batch);
        loop {
            let batch = subscription.try_next_batch().await?;
            if batch.is_empty() {
                return Ok(subscription.position());
            }
            self.apply_batch(state.generation, &batch, true).await?;
        }
    }

    /// Runs until `shutdown` completes: takes the lease (waiting while another runner has
    /// it), follows the log, renews the lease. Store failures are logged and retried with
    /// backoff from the durable checkpoint.
    ///
    /// # Errors
    /// `Stopped` or `Failed`: the projection stops at an unreadable event.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), RunnerError> {
        tokio::pin!(shutdown);
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.run_once(&mut shutdown).await {
                Ok(()) => {
                    let _ = self.release().await;
                    return Ok(());
                }
                Err(e @ (RunnerError::Stopped { .. } | RunnerError::Failed { .. })) => {
                    let _ = self.release().await;
                    return Err(e);
                }
                Err(RunnerError::LeaseHeld { .. }) => {
                    backoff = self.config.lease_ttl / 3;
                }
                Err(RunnerError::Store(e)) => {
                    tracing::warn!(projection = self.name(), error = %e, ?backoff, "projection runner retrying");
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                () = tokio::time::sleep(backoff) => {}
            }
        }
    }

    async fn run_once<F: Future<Output = ()> + Unpin>(&mut self, shutdown: &mut F) -> Result<(), RunnerError> {
        let state = self.start().await?;
        let renew_every = self.config.lease_ttl / 3;
        let mut subscription = Subscription::new(self.log.clone(), state.position)
            .with_page(self.config.batch)
            .with_poll(Duration::from_millis(20), renew_every.min(Duration::from_secs(1)));
        let mut last_renew = tokio::time::Instant::now();
        loop {
            if last_renew.elapsed() >= renew_every {
                self.acquire().await?;
                last_renew = tokio::time::Instant::now();
            }
            tokio::select! {
                () = &mut *shutdown => return Ok(()),
                batch = subscription.next_batch() => {
                    let batch = batch?;
                    self.apply_batch(state.generation, &batch, true).await?;
                }
                () = tokio::time::sleep(renew_every) => {}
            }
        }
    }
}
