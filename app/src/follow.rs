//! A video's events as they are recorded: catch up after a global position (an SSE
//! `Last-Event-ID`), then follow the log head until the video is deleted or the service
//! shuts down.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::sync::watch;
use vodsource_commands::ports::{EventLog, RecordedEvent};

/// How often a follower looks at the log when no head change arrives (stores that cannot
/// tell other processes' appends).
const POLL: Duration = Duration::from_secs(2);

/// Events read from the log per round.
const PAGE: usize = 100;

struct Follow {
    log: Arc<dyn EventLog>,
    id: String,
    after_version: u64,
    after_position: u64,
    buffered: VecDeque<RecordedEvent>,
    head: watch::Receiver<u64>,
    shutdown: watch::Receiver<bool>,
    done: bool,
    resumed: bool,
}

impl Follow {
    async fn next(mut self) -> Option<(RecordedEvent, Self)> {
        loop {
            if let Some(event) = self.buffered.pop_front() {
                self.after_version = event.version;
                if event.position <= self.after_position {
                    continue;
                }
                self.after_position = event.position;
                if event.event_type == "VideoDeleted" {
                    self.done = true;
                    self.buffered.clear();
                }
                return Some((event, self));
            }
            if self.done || *self.shutdown.borrow() {
                return None;
            }
            if !self.resumed {
                // Where the position left off, without reading the stream from its start.
                self.resumed = true;
                if self.after_position > 0 {
                    match self.log.stream_version_at(&self.id, self.after_position).await {
                        Ok(version) => self.after_version = version,
                        Err(e) => {
                            tracing::warn!(video_id = %self.id, error = %e, "resuming an event stream failed; reading it whole")
                        }
                    }
                }
            }
            // Mark the head as seen before reading, so an append in between wakes us.
            self.head.borrow_and_update();
            match self.log.read_stream(&self.id, self.after_version, PAGE).await {
                Ok(events) if !events.is_empty() => {
                    self.buffered.extend(events);
                    continue;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(video_id = %self.id, error = %e, "event stream read failed; retrying"),
            }
            // Wait for the head to move (other processes' appends arrive by NOTIFY on
            // PostgreSQL; a slow poll covers stores that cannot tell).
            tokio::select! {
                _ = self.head.changed() => {}
                _ = self.shutdown.changed() => {}
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }
}

/// The events of stream `id` after global position `after_position`, live, ending after
/// `VideoDeleted` or when `shutdown` turns true.
pub(crate) fn follow(
    log: Arc<dyn EventLog>,
    id: String,
    after_position: u64,
    shutdown: watch::Receiver<bool>,
) -> BoxStream<'static, RecordedEvent> {
    let follow = Follow {
        head: log.watch_head(),
        log,
        shutdown,
        id,
        after_version: 0,
        after_position,
        buffered: VecDeque::new(),
        done: false,
        resumed: false,
    };
    futures::stream::unfold(follow, Follow::next).boxed()
}
