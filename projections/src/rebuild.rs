use std::collections::VecDeque;
use std::sync::Arc;

use vodsource_commands::codec::DecodeError;
use vodsource_commands::ports::{EventLog, RecordedEvent, StoreError};
use vodsource_domain::VideoEvent;

use crate::projector::Projector;
use crate::runner::{Predecoder, Runner, RunnerError};

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
    // The shadow starts empty: documents not in the cache need no lookup.
    runner.reset_cache(generation, false);
    let log = runner.log().clone();
    let head = log.head().await?;
    let page = runner.config().batch.max(5000);
    let predecoder = Arc::new(runner.predecoder());
    let mut position = 0;
    let mut events = 0u64;
    let mut renewed = std::time::Instant::now();
    let mut writing: Option<tokio::task::JoinHandle<Result<(), RunnerError>>> = None;
    // Pages are read and decoded on other threads, two ahead, while this one is folded in.
    // The second read guesses that positions are dense; a guess that turns out wrong (a gap,
    // or a short page) is thrown away and read again from where the first page really ended.
    let mut ahead: VecDeque<(u64, Prefetch)> = VecDeque::new();
    let mut folded = Vec::new();
    let mut after = 0u64;
    loop {
        while ahead.len() < READ_AHEAD {
            let from = ahead.back().map_or(after, |(from, _)| from + page as u64);
            let done = std::mem::take(&mut folded);
            ahead.push_back((from, prefetch(log.clone(), predecoder.clone(), from, page, done)));
        }
        let Some((from, task)) = ahead.pop_front() else {
            break;
        };
        if from != after {
            task.abort();
            ahead.clear();
            continue;
        }
        let (batch, decoded) = task
            .await
            .map_err(|e| StoreError::unexpected(format!("reader failed: {e}")))??;
        let Some(last) = batch.last().map(|e| e.position) else {
            break;
        };
        after = last;
        events += batch.len() as u64;
        position = last;
        runner.apply_decoded(generation, &batch, decoded, false).await?;
        folded = batch;
        // Documents are written when many have changed, not per page: each is written about
        // once, while the next ones are being folded.
        if runner.dirty() >= FLUSH_EVERY_DOCS {
            if let Some(previous) = writing.take() {
                previous
                    .await
                    .map_err(|e| StoreError::unexpected(format!("writer failed: {e}")))??;
            }
            writing = runner.flush_in_background(generation)?;
        }
        progress(RebuildProgress { position, head, events });
        if renewed.elapsed() >= runner.config().lease_ttl / 3 {
            runner.acquire().await?;
            renewed = std::time::Instant::now();
        }
    }
    if let Some(previous) = writing.take() {
        previous
            .await
            .map_err(|e| StoreError::unexpected(format!("writer failed: {e}")))??;
    }
    runner.flush(generation).await?;
    runner.acquire().await?;
    runner.views().finish_rebuild(name, runner.owner(), generation).await?;
    Ok(position)
}

type Decoded = Vec<Option<Result<VideoEvent, DecodeError>>>;
type Prefetch = tokio::task::JoinHandle<Result<(Vec<RecordedEvent>, Decoded), StoreError>>;

/// Pages being read at once.
const READ_AHEAD: usize = 2;

fn prefetch<P: Projector>(
    log: Arc<dyn EventLog>,
    predecoder: Arc<Predecoder<P>>,
    after: u64,
    page: usize,
    done: Vec<RecordedEvent>,
) -> Prefetch {
    tokio::spawn(async move {
        drop(done);
        let batch = log.read_all(after, page).await?;
        let decoded = predecoder.decode(&batch);
        Ok((batch, decoded))
    })
}

/// Changed documents held back before a rebuild writes them.
const FLUSH_EVERY_DOCS: usize = 50_000;
