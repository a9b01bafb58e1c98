use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use vodsource_commands::codec::{DecodeError, Decoder};
use vodsource_commands::ports::{Clock, EventLog, LeaseStore, RecordedEvent, StoreError};
use vodsource_commands::Subscription;
use vodsource_domain::{VideoEvent, VIDEO_STREAM_TYPE};

use crate::projector::{EventMeta, Projector, ViewChange};
use crate::view_store::{Doc, DocChange, ProjectionStatus, ViewStore};

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

struct Slot<V> {
    version: u64,
    view: Option<V>,
    dirty: bool,
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
    cache: HashMap<String, (u64, Option<P::View>)>,
    cache_generation: u32,
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
        let now = self.clock.now();
        let ttl = chrono::Duration::from_std(self.config.lease_ttl).unwrap_or(chrono::Duration::seconds(15));
        if self
            .leases
            .acquire_lease(self.name(), &self.owner, now, now + ttl)
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

    /// Folds `batch` into `generation` and commits the changes with the checkpoint. When an
    /// event cannot be read, commits what came before it, records the failure and returns
    /// `Stopped`.
    ///
    /// # Errors
    /// `Stopped` on an unreadable event; `Store` when the commit fails (nothing is applied).
    pub(crate) async fn apply_batch(&mut self, generation: u32, batch: &[RecordedEvent]) -> Result<(), RunnerError> {
        if self.cache_generation != generation {
            self.cache.clear();
            self.cache_generation = generation;
        }
        let mut slots: HashMap<String, Slot<P::View>> = HashMap::new();
        self.load_slots(generation, batch, &mut slots).await?;
        let mut checkpoint = batch.first().map_or(0, |e| e.position.saturating_sub(1));
        let mut stopped = None;
        for event in batch {
            if event.stream_type != VIDEO_STREAM_TYPE {
                checkpoint = event.position;
                continue;
            }
            let known = VideoEvent::TYPES.contains(&event.event_type.as_str());
            if known && !self.projector.handles(&event.event_type) {
                checkpoint = event.position;
                continue;
            }
            let decoded = match self.decoder.decode(event) {
                Ok(decoded) => decoded,
                Err(error) => {
                    stopped = Some(error);
                    break;
                }
            };
            checkpoint = event.position;
            let Some(slot) = slots.get_mut(&event.stream_id) else {
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
            match self.projector.project(slot.view.as_ref(), &decoded, meta) {
                ViewChange::Unchanged => {}
                ViewChange::Put(view) => {
                    slot.view = Some(view);
                    slot.version = event.version;
                    slot.dirty = true;
                }
                ViewChange::Delete => {
                    slot.view = None;
                    slot.version = event.version;
                    slot.dirty = true;
                }
            }
        }
        let mut changes = Vec::new();
        for (key, slot) in &slots {
            if !slot.dirty {
                continue;
            }
            changes.push(match &slot.view {
                Some(view) => DocChange::Put(Doc {
                    key: key.clone(),
                    version: slot.version,
                    body: serde_json::to_string(view)
                        .map_err(|e| StoreError::Unexpected(format!("view does not serialize: {e}")))?,
                }),
                None => DocChange::Delete { key: key.clone() },
            });
        }
        let position_moved = batch.first().is_some_and(|e| checkpoint >= e.position);
        if !changes.is_empty() || position_moved {
            if let Err(e) = self
                .views
                .commit(self.name(), generation, &self.owner, changes, checkpoint)
                .await
            {
                self.cache.clear();
                return Err(e.into());
            }
        }
        if self.cache.len() + slots.len() > self.config.cache_capacity {
            self.cache.clear();
        }
        for (key, slot) in slots {
            self.cache.insert(key, (slot.version, slot.view));
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

    async fn load_slots(
        &mut self,
        generation: u32,
        batch: &[RecordedEvent],
        slots: &mut HashMap<String, Slot<P::View>>,
    ) -> Result<(), RunnerError> {
        let mut missing = Vec::new();
        for event in batch {
            if event.stream_type != VIDEO_STREAM_TYPE || slots.contains_key(&event.stream_id) {
                continue;
            }
            if VideoEvent::TYPES.contains(&event.event_type.as_str()) && !self.projector.handles(&event.event_type) {
                continue;
            }
            if let Some((version, view)) = self.cache.get(&event.stream_id) {
                slots.insert(
                    event.stream_id.clone(),
                    Slot {
                        version: *version,
                        view: view.clone(),
                        dirty: false,
                    },
                );
            } else if !missing.contains(&event.stream_id) {
                missing.push(event.stream_id.clone());
            }
        }
        for chunk in missing.chunks(500) {
            let docs = self.views.get_many(self.name(), generation, chunk).await?;
            for key in chunk {
                let slot = match docs.get(key) {
                    Some(doc) => Slot {
                        version: doc.version,
                        view: Some(serde_json::from_str(&doc.body).map_err(|e| {
                            StoreError::Unexpected(format!("{} document {key} is unreadable: {e}", self.name()))
                        })?),
                        dirty: false,
                    },
                    None => Slot {
                        version: 0,
                        view: None,
                        dirty: false,
                    },
                };
                slots.insert(key.clone(), slot);
            }
        }
        Ok(())
    }

    /// Takes the lease and folds in everything up to the current head of the log.
    /// Returns the position reached.
    ///
    /// # Errors
    /// `LeaseHeld`, `Failed` when the projection is stopped, `Stopped`, `Store`.
    pub async fn catch_up(&mut self) -> Result<u64, RunnerError> {
        self.acquire().await?;
        let state = self.views.projection(self.name()).await?;
        if let ProjectionStatus::Failed { position, error } = state.status {
            return Err(RunnerError::Failed {
                projection: self.name(),
                position,
                error,
            });
        }
        let mut subscription = Subscription::new(self.log.clone(), state.position).with_page(self.config.batch);
        loop {
            let batch = subscription.try_next_batch().await?;
            if batch.is_empty() {
                return Ok(subscription.position());
            }
            self.apply_batch(state.generation, &batch).await?;
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
        self.acquire().await?;
        let state = self.views.projection(self.name()).await?;
        if let ProjectionStatus::Failed { position, error } = state.status {
            return Err(RunnerError::Failed {
                projection: self.name(),
                position,
                error,
            });
        }
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
                    self.apply_batch(state.generation, &batch).await?;
                }
                () = tokio::time::sleep(renew_every) => {}
            }
        }
    }
}
