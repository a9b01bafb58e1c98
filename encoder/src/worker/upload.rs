//! Storing many files of an attempt at once. A put to S3 waits a network round trip (tens of
//! milliseconds) and works little, so one file at a time leaves the worker waiting: the
//! ~1,500 files of a 10-minute ladder, one by one, would each wait a round trip before the
//! video completes (on a local disk the same 1,500 take ~0.7 s either way). Files go in
//! waves, so that nothing is listed before it is stored: segments before the playlists that
//! list them, playlists before the manifests.

use std::future::Future;
use std::path::Path;

use futures::stream::{FuturesUnordered, StreamExt};

use vodsource_commands::layout;
use vodsource_commands::ports::PutError;

use super::Worker;
use crate::media::MediaError;

/// Uploads in flight at once: enough to hide a store's round trip, few enough that a
/// worker's uploads do not crowd out the API it may share a machine with.
pub(super) const IN_FLIGHT: usize = 8;

/// Runs `put` on every item of `waves`, wave after wave (each wave whole before the next
/// begins), at most `limit` at once within a wave. The sum of what the puts returned (the
/// bytes stored); at the first error, that error, and the puts in flight are dropped.
pub(super) async fn in_waves<T, F, Fut>(waves: Vec<Vec<T>>, limit: usize, put: F) -> Result<u64, MediaError>
where
    F: Fn(T) -> Fut,
    Fut: Future<Output = Result<u64, MediaError>>,
{
    let mut total = 0;
    for wave in waves {
        // Not `stream::iter(..).map(&put).buffer_unordered(..)`: its adapters keep the
        // closure's borrowed arguments in a form the compiler cannot prove `Send`.
        let mut waiting = wave.into_iter();
        let mut running = FuturesUnordered::new();
        loop {
            while running.len() < limit.max(1) {
                match waiting.next() {
                    Some(item) => running.push(put(item)),
                    None => break,
                }
            }
            match running.next().await {
                Some(stored) => total += stored?,
                None => break,
            }
        }
    }
    Ok(total)
}

/// Stores `body` as file `name` of the attempt; the bytes written.
pub(super) async fn put(
    worker: &Worker,
    id: &str,
    attempt: u32,
    name: &str,
    body: Box<dyn tokio::io::AsyncRead + Send + Unpin>,
) -> Result<u64, MediaError> {
    let key = layout::attempt_key(id, attempt, name);
    worker.objects.put(&key, body, u64::MAX).await.map_err(|e| match e {
        PutError::Store(e) => MediaError::io(format!("uploading {key}: {e}")),
        other => MediaError::io(format!("uploading {key}: {other}")),
    })
}

/// Stores `file` of the folder `dir` as the attempt's file of that name; the bytes written.
pub(super) async fn put_file(
    worker: &Worker,
    (id, attempt): (&str, u32),
    dir: &Path,
    file: &str,
) -> Result<u64, MediaError> {
    let body = tokio::fs::File::open(dir.join(file))
        .await
        .map_err(|e| MediaError::io(format!("{file}: {e}")))?;
    put(worker, id, attempt, file, Box::new(body)).await
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// What the puts saw, in the order it happened.
    #[derive(Default)]
    struct Seen {
        in_flight: usize,
        most_in_flight: usize,
        /// Each put's beginning (`true`) and end (`false`), with its wave.
        log: Vec<(bool, u32)>,
    }

    async fn put(seen: &Mutex<Seen>, wave: u32, fail: bool) -> Result<u64, MediaError> {
        {
            let mut seen = seen.lock().expect("lock");
            seen.in_flight += 1;
            seen.most_in_flight = seen.most_in_flight.max(seen.in_flight);
            seen.log.push((true, wave));
        }
        // Every put waits on the store once, so that others start meanwhile.
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
        let mut seen = seen.lock().expect("lock");
        seen.in_flight -= 1;
        seen.log.push((false, wave));
        if fail {
            return Err(MediaError::io("the store refused"));
        }
        Ok(10)
    }

    #[tokio::test]
    async fn files_go_up_many_at_once_within_a_wave_and_a_wave_only_after_the_one_before() {
        let seen = Mutex::new(Seen::default());
        let sizes = [20, 5, 2];
        let waves = (0u32..).zip(sizes).map(|(wave, n)| vec![wave; n]).collect();
        let stored = in_waves(waves, 8, |wave| put(&seen, wave, false))
            .await
            .expect("stored");
        assert_eq!(stored, 270, "the bytes of every put");
        let seen = seen.into_inner().expect("lock");
        assert_eq!(seen.most_in_flight, 8, "at most the limit at once, and that many");
        // Each put of a wave begins after every put of the waves before it has ended.
        for (at, &(began, wave)) in seen.log.iter().enumerate() {
            let ended_before = seen.log[..at].iter().filter(|&&(b, w)| !b && w < wave).count();
            let in_waves_before: usize = sizes[..wave as usize].iter().sum();
            assert!(
                !began || ended_before == in_waves_before,
                "a put of wave {wave} began with {ended_before} of the {in_waves_before} before it ended"
            );
        }
        assert_eq!(seen.log.len(), 54, "each put began and ended once");
    }

    #[tokio::test]
    async fn a_failed_put_stops_the_upload_and_the_next_wave_never_begins() {
        let seen = Mutex::new(Seen::default());
        let waves = vec![vec![(0u32, false), (0, true), (0, false)], vec![(1, false)]];
        let error = in_waves(waves, 8, |(wave, fail)| put(&seen, wave, fail))
            .await
            .expect_err("the refusal");
        assert_eq!(error.message, "the store refused");
        assert!(!seen.into_inner().expect("lock").log.contains(&(true, 1)));
    }
}
