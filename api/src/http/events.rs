//! A video's events as history items and as a live Server-Sent Events stream (the event id
//! is the global position, so `Last-Event-ID` resumes).

use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use poem::web::sse::Event;
use poem_openapi::payload::EventStream;
use poem_openapi::types::ToJSON;
use vodsource_commands::ports::RecordedEvent;

use super::limits::StreamSlot;
use super::model::HistoryEvent;

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

/// The live event stream `events` as Server-Sent Events, holding `slot` while it lives
/// (dropping it, when the stream ends or the client goes, frees the caller's slot).
pub fn video_events(events: BoxStream<'static, RecordedEvent>, slot: StreamSlot) -> EventStream<EventItemStream> {
    let stream = events
        .map(move |event| {
            let _held = &slot;
            history_event(&event)
        })
        .boxed();
    EventStream::new(stream)
        .keep_alive(Duration::from_secs(15))
        .to_event(|item: HistoryEvent| {
            Event::message(item.to_json_string())
                .event_type(item.event_type.clone())
                .id(item.position.to_string())
        })
}
