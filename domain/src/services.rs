use std::sync::Arc;

use chrono::{DateTime, Utc};

/// The source of the current time. The domain never reads a clock itself.
pub trait Clock: Send + Sync + 'static {
    /// The current instant.
    fn now(&self) -> DateTime<Utc>;
}

/// Limits a deployment may change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The largest source upload accepted, in bytes.
    pub max_source_bytes: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            max_source_bytes: 5 * 1024 * 1024 * 1024,
        }
    }
}

/// What the Video aggregate needs from outside when it decides.
#[derive(Clone)]
pub struct VideoServices {
    /// The clock used for leases and backoff deadlines.
    pub clock: Arc<dyn Clock>,
    /// Deployment limits.
    pub policy: Policy,
}

impl VideoServices {
    /// Services with the given clock and the default policy.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            policy: Policy::default(),
        }
    }
}

impl std::fmt::Debug for VideoServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VideoServices")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}
