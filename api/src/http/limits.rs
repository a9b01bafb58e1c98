//! Bounds on what one caller can hold: live event streams (each is a connection and a task
//! woken by every append), uploads in flight per video, and the cache that lets beacons be
//! checked against the catalog without a read per event.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::error::ApiError;

/// The HTTP layer's limits.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// A request's head (line and headers) must arrive within this.
    pub header_timeout: Duration,
    /// Longest wait for the next byte of a body; a JSON body must be whole within this too.
    pub body_timeout: Duration,
    /// Uploads must deliver at least this many bytes per minute.
    pub upload_min_bytes_per_minute: u64,
    /// Live event streams one principal may hold open.
    pub streams_per_principal: usize,
    /// Live event streams this server holds open in all.
    pub streams_total: usize,
}

impl Default for HttpLimits {
    /// 10 s for a head, 30 s between body bytes, 64 KiB a minute for uploads, 16 live streams
    /// per principal and 1,000 in all.
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            upload_min_bytes_per_minute: 64 * 1024,
            streams_per_principal: 16,
            streams_total: 1000,
        }
    }
}

/// Live stream slots, per principal and in all.
#[derive(Debug)]
pub struct StreamSlots {
    per_principal: usize,
    total: usize,
    held: Mutex<(usize, HashMap<String, usize>)>,
}

/// One held slot; dropping it (the stream ended or the client left) frees it.
pub struct StreamSlot {
    slots: Arc<StreamSlots>,
    principal: String,
}

impl StreamSlots {
    /// Slots under these caps.
    pub fn new(per_principal: usize, total: usize) -> Arc<Self> {
        Arc::new(Self {
            per_principal,
            total,
            held: Mutex::new((0, HashMap::new())),
        })
    }

    /// Takes a slot for `principal`.
    ///
    /// # Errors
    /// RATE_LIMITED (429, Retry-After) when the principal's or the server's cap is reached.
    pub fn take(self: &Arc<Self>, principal: &str) -> Result<StreamSlot, ApiError> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let mine = held.1.get(principal).copied().unwrap_or(0);
        let refusal = if mine >= self.per_principal {
            Some(format!(
                "{mine} live event streams are open for this caller, the most allowed; close one first"
            ))
        } else if held.0 >= self.total {
            Some(format!(
                "the server holds {} live event streams, the most it allows",
                held.0
            ))
        } else {
            None
        };
        if let Some(message) = refusal {
            let mut error = ApiError::with(
                429,
                "TOO_MANY_STREAMS",
                message,
                serde_json::json!({ "per_principal": self.per_principal, "total": self.total }),
            );
            if let ApiError::RateLimited(_, retry, limit, remaining, reset) = &mut error {
                (*retry, *limit, *remaining, *reset) = (5, u32::try_from(self.per_principal).unwrap_or(u32::MAX), 0, 5);
            }
            return Err(error);
        }
        held.0 += 1;
        *held.1.entry(principal.to_owned()).or_insert(0) += 1;
        Ok(StreamSlot {
            slots: self.clone(),
            principal: principal.to_owned(),
        })
    }

    /// Streams open now.
    pub fn open(&self) -> usize {
        self.held.lock().unwrap_or_else(PoisonError::into_inner).0
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.0 = held.0.saturating_sub(1);
        if let Some(count) = held.1.get_mut(&self.principal) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.1.remove(&self.principal);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_capped_per_principal_and_in_all_and_freed_when_dropped() {
        let slots = StreamSlots::new(2, 3);
        let a1 = slots.take("a").expect("a1");
        let _a2 = slots.take("a").expect("a2");
        let refused = slots.take("a").err().expect("a's third");
        assert_eq!(
            (refused.status(), refused.body().error.code.as_str()),
            (429, "TOO_MANY_STREAMS")
        );
        let _b1 = slots.take("b").expect("b1");
        assert_eq!(slots.take("c").err().map(|e| e.status()), Some(429), "the server's cap");
        drop(a1);
        assert_eq!(slots.open(), 2);
        assert!(slots.take("c").is_ok(), "a freed slot is taken again");
    }
}
