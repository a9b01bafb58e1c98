use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::ports::{EventLog, RecordedEvent, StoreError};

/// A catch-up subscription: reads the global log from a position in pages, then follows new
/// appends live — woken by the store's head signal, and polling with backoff for appends the
/// signal cannot see (another process on SQLite, a missed notification on PostgreSQL).
pub struct Subscription {
    log: Arc<dyn EventLog>,
    position: u64,
    page: usize,
    head: watch::Receiver<u64>,
    min_poll: Duration,
    max_poll: Duration,
}

impl Subscription {
    /// Starts after `position` (0: from the beginning).
    pub fn new(log: Arc<dyn EventLog>, position: u64) -> Self {
        let head = log.watch_head();
        Self {
            log,
            position,
            page: 1000,
            head,
            min_poll: Duration::from_millis(20),
            max_poll: Duration::from_secs(1),
        }
    }

    /// Sets the page size.
    #[must_use]
    pub fn with_page(mut self, page: usize) -> Self {
        self.page = page.max(1);
        self
    }

    /// Sets the fastest and slowest idle polls.
    #[must_use]
    pub fn with_poll(mut self, min: Duration, max: Duration) -> Self {
        self.min_poll = min;
        self.max_poll = max.max(min);
        self
    }

    /// The position of the last event handed out.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The next page of events, waiting until there is at least one.
    ///
    /// # Errors
    /// Whatever the store fails with; the position is unchanged, so calling again retries.
    pub async fn next_batch(&mut self) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut poll = self.min_poll;
        loop {
            let batch = self.try_next_batch().await?;
            if !batch.is_empty() {
                return Ok(batch);
            }
            tokio::select! {
                changed = self.head.changed() => {
                    if changed.is_err() {
                        // The store's signal is gone: keep polling.
                        tokio::time::sleep(poll).await;
                    }
                    poll = self.min_poll;
                }
                () = tokio::time::sleep(poll) => poll = (poll * 2).min(self.max_poll),
            }
        }
    }

    /// The next page of events, empty when caught up.
    ///
    /// # Errors
    /// Whatever the store fails with.
    pub async fn try_next_batch(&mut self) -> Result<Vec<RecordedEvent>, StoreError> {
        self.head.mark_unchanged();
        let batch = self.log.read_all(self.position, self.page).await?;
        if let Some(last) = batch.last() {
            self.position = last.position;
        }
        Ok(batch)
    }
}
