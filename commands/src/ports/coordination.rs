use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreError;
use crate::ports::Clock;

/// Durable positions of log consumers (process managers; projections keep theirs with the view).
#[async_trait]
pub trait CheckpointStore: Send + Sync + 'static {
    /// The last position `name` has fully handled (0 when never run).
    ///
    /// # Errors
    /// `Unavailable`.
    async fn load_checkpoint(&self, name: &str) -> Result<u64, StoreError>;

    /// Records that `name` has handled everything up to `position`, if `owner` still holds
    /// the lease on `name`.
    ///
    /// # Errors
    /// `Conflict` when the lease is lost; `Unavailable`.
    async fn save_checkpoint(&self, name: &str, owner: &str, position: u64) -> Result<(), StoreError>;
}

/// Leases that make a consumer the only one of its name running.
#[async_trait]
pub trait LeaseStore: Send + Sync + 'static {
    /// Takes or renews the lease on `name` for `owner` until `until`. Returns false while
    /// another owner holds a live lease.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn acquire_lease(
        &self,
        name: &str,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Takes or renews the lease on `name` for `owner` for `ttl` from `clock`'s now.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn hold_lease(
        &self,
        name: &str,
        owner: &str,
        clock: &dyn Clock,
        ttl: std::time::Duration,
    ) -> Result<bool, StoreError> {
        let now = clock.now();
        let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        self.acquire_lease(
            name,
            owner,
            now,
            now.checked_add_signed(ttl).unwrap_or(DateTime::<Utc>::MAX_UTC),
        )
        .await
    }

    /// Gives the lease up if `owner` holds it.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn release_lease(&self, name: &str, owner: &str) -> Result<(), StoreError>;
}

/// Deadlines kept by a process manager: one per video, the lease of its current attempt.
#[async_trait]
pub trait TimeoutStore: Send + Sync + 'static {
    /// Sets (or moves) the deadline of `video_id`'s `attempt`.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn set_deadline(&self, video_id: &str, attempt: u32, deadline: DateTime<Utc>) -> Result<(), StoreError>;

    /// Removes `video_id`'s deadline if it is for `attempt` or older.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn clear_deadline(&self, video_id: &str, attempt: u32) -> Result<(), StoreError>;

    /// Up to `limit` deadlines at or before `now`, earliest first: (video id, attempt, deadline).
    ///
    /// # Errors
    /// `Unavailable`.
    async fn due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<(String, u32, DateTime<Utc>)>, StoreError>;
}

/// Encoding attempts waiting for a worker, kept by the supervisor from the log: offered when
/// requested or requeued, withdrawn when claimed, finished or deleted. Workers poll it (and
/// wake at once on an offer made through the same handle, where the store can say so); the
/// claim event, not this queue, decides who encodes.
#[async_trait]
pub trait JobQueue: Send + Sync + 'static {
    /// Offers `video_id`'s `attempt` from `ready_at` (replacing an older attempt's offer).
    ///
    /// # Errors
    /// `Unavailable`.
    async fn offer_job(&self, video_id: &str, attempt: u32, ready_at: DateTime<Utc>) -> Result<(), StoreError>;

    /// Withdraws `video_id`'s offer if it is for `attempt` or older.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn withdraw_job(&self, video_id: &str, attempt: u32) -> Result<(), StoreError>;

    /// Up to `limit` offers ready at `now`, longest waiting first: (video id, attempt, ready at).
    ///
    /// # Errors
    /// `Unavailable`.
    async fn ready_jobs(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(String, u32, DateTime<Utc>)>, StoreError>;

    /// A signal that changes with every offer made through this handle, so that workers in the
    /// offering process start at once rather than at their next poll. `None` (the default):
    /// offers are found by polling only (they come from other processes).
    fn offers(&self) -> Option<tokio::sync::watch::Receiver<()>> {
        None
    }
}

/// Holds a named lease for a long-running consumer, renewing it only when a third of its
/// time-to-live has passed: checking it on every batch costs nothing, renewing on every
/// batch would cost a store write.
#[derive(Debug, Clone)]
pub struct LeaseKeeper {
    name: String,
    owner: String,
    ttl: std::time::Duration,
    renewed: Option<std::time::Instant>,
}

impl LeaseKeeper {
    /// A keeper of `name` for `owner`, taking the lease for `ttl` at a time.
    pub fn new(name: impl Into<String>, owner: impl Into<String>, ttl: std::time::Duration) -> Self {
        Self {
            name: name.into(),
            owner: owner.into(),
            ttl,
            renewed: None,
        }
    }

    /// Whether this owner holds the lease, taking or renewing it when due.
    ///
    /// # Errors
    /// `Unavailable`.
    pub async fn hold(&mut self, leases: &dyn LeaseStore, clock: &dyn Clock) -> Result<bool, StoreError> {
        if self.renewed.is_some_and(|at| at.elapsed() < self.ttl / 3) {
            return Ok(true);
        }
        let held = leases.hold_lease(&self.name, &self.owner, clock, self.ttl).await?;
        self.renewed = held.then(std::time::Instant::now);
        Ok(held)
    }

    /// Gives the lease up.
    ///
    /// # Errors
    /// `Unavailable`.
    pub async fn release(&mut self, leases: &dyn LeaseStore) -> Result<(), StoreError> {
        self.renewed = None;
        leases.release_lease(&self.name, &self.owner).await
    }
}
