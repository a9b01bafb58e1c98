use vodsource_commands::Subscription;

use crate::projector::Projector;
use crate::runner::{Runner, RunnerError};

/// How far a rebuild is.
#[derive(Debug, Clone, Copy)]
pub struct RebuildProgress {
    /// Position folded in so far.
    pub position: u64,
    /// Head of the log when the rebuild started (it follows appends made since).
    pub head: u64,
    /// Events read so far.
    pub events: u64,
}

/// Rebuilds `runner`'s view from position 0 into a shadow generation, then swaps it in
/// atomically: readers see the old view until the new one is complete. Holds the
/// projection's lease throughout, so the live runner waits. Returns the position reached.
///
/// # Errors
/// `LeaseHeld` when another runner has the projection; `Stopped` on an unreadable event (the
/// old view stays live); `Store` on failure.
pub async fn rebuild<P: Projector>(
    runner: &mut Runner<P>,
    mut progress: impl FnMut(RebuildProgress),
) -> Result<u64, RunnerError> {
    runner.acquire().await?;
    let name = runner.name();
    let generation = runner.views().begin_rebuild(name, runner.owner()).await?;
    let head = runner.log().head().await?;
    let mut subscription = Subscription::new(runner.log().clone(), 0).with_page(runner.config().batch.max(5000));
    let mut events = 0u64;
    let mut renewed = std::time::Instant::now();
    loop {
        let batch = subscription.try_next_batch().await?;
        if batch.is_empty() {
            break;
        }
        events += batch.len() as u64;
        runner.apply_batch(generation, &batch).await?;
        progress(RebuildProgress {
            position: subscription.position(),
            head,
            events,
        });
        if renewed.elapsed() >= runner.config().lease_ttl / 3 {
            runner.acquire().await?;
            renewed = std::time::Instant::now();
        }
    }
    runner.acquire().await?;
    runner.views().finish_rebuild(name, runner.owner(), generation).await?;
    Ok(subscription.position())
}
