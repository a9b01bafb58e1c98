//! A video's events as history items and as a live Server-Sent Events stream read from the
//! event log: catch up from `Last-Event-ID` (a global position), then follow the log head.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use poem::web::sse::Event;
use poem_openapi::payload::EventStream;
use poem_openapi::types::ToJSON;
use tokio::sync::watch;
use vodsource_commands::ports::{EventLog, RecordedEvent};

use super::limits::StreamSlot;
use super::model::HistoryEvent;
use super::state::AppState;

/// The stream type of `GET /videos/{id}/events`.
pub type EventItemStream = BoxStream<'static, HistoryEvent>;

/// One recorded event as the API shows it.
pub fn history_event(event: &RecordedEvent) -> HistoryEvent {
    HistoryEvent {
        position: event.position,
        version: event.version,
        event_type: event.event_type.clone(),
        occurred_at: event.occurred_at,
        actor: event.metadata.actor.clone(),
        data: serde_json::from_str::<serde_json::Value>(&event.payload)
            .ok()
            .and_then(|v| v.get(&event.event_type).cloned())
            .unwrap_or(serde_json::Value::Null),
    }
}

struct Follow {
    /// Held while the stream lives; dropped (freeing the caller's slot) when it ends or the
    /// client goes.
    _slot: StreamSlot,
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
    async fn next(mut self) -> Option<(HistoryEvent, Self)> {
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
                return Some((history_event(&event), self));
            }
            if self.done || *self.shutdown.borrow() {
                return None;
            }
            if !self.resumed {
                // Where `Last-Event-ID` left off, without reading the stream from its start.
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
            match self.log.read_stream(&self.id, self.after_version, 100).await {
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
                () = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
    }
}

/// The live event stream of video `id`, after global position `after_position`, holding
/// `slot` while it lives.
pub fn video_events(
    state: &AppState,
    id: String,
    after_position: u64,
    slot: StreamSlot,
) -> EventStream<EventItemStream> {
    let follow = Follow {
        _slot: slot,
        log: state.log.clone(),
        head: state.log.watch_head(),
        shutdown: state.shutdown.clone(),
        id,
        after_version: 0,
        after_position,
        buffered: VecDeque::new(),
        done: false,
        resumed: false,
    };
    let stream = futures::stream::unfold(follow, Follow::next).boxed();
    EventStream::new(stream)
        .keep_alive(Duration::from_secs(15))
        .to_event(|item: HistoryEvent| {
            Event::message(item.to_json_string())
                .event_type(item.event_type.clone())
                .id(item.position.to_string())
        })
}
