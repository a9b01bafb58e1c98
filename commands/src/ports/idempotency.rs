//! Idempotency keys: a retried command returns the first answer instead of running again.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreError;

/// The first answer given under a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: String,
}

/// What a key means for a new request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// First use (or an abandoned one): run the command, then `complete` or `release`.
    Fresh,
    /// Already answered with the same request: give this answer again.
    Replay(StoredResponse),
    /// Used before with a different request.
    Mismatch,
    /// The first request with this key is still running.
    InFlight,
}

/// Keys are scoped (per principal), remembered for `ttl`, and bound to a fingerprint of the
/// request that first used them.
#[async_trait]
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Claims `key` for a request with `fingerprint`, or says what it was used for. A claim
    /// left unfinished for longer than `in_flight` counts as abandoned.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn reserve(
        &self,
        scope: &str,
        key: &str,
        fingerprint: &str,
        now: DateTime<Utc>,
        ttl: Duration,
        in_flight: Duration,
    ) -> Result<Reservation, StoreError>;

    /// Records the answer to a claimed key.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn complete(&self, scope: &str, key: &str, response: &StoredResponse) -> Result<(), StoreError>;

    /// Gives a claimed key up (the command could not be answered); it may be used again.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn release(&self, scope: &str, key: &str) -> Result<(), StoreError>;
}
