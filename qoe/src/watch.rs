//! Watch state: where a viewer is in a video, folded from QoE events. The newest event (by
//! client event time, ties broken by event id) decides the position, so events that arrive
//! late or twice never move it back; the video's duration, which does not change with time,
//! is taken from whichever event carries it.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::beacon::{QoeEvent, QoeEventType};

/// Positions at or past this share of the duration count as watched to the end (credits).
const COMPLETE_PERCENT: f64 = 95.0;

/// One viewer's state in one video.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchState {
    /// The viewer.
    pub viewer_id: String,
    /// The video (the beacons' `cid`).
    pub video_id: String,
    /// Last known playhead.
    pub position_ms: u64,
    /// The video's duration, once a beacon has said it.
    pub duration_ms: Option<u64>,
    /// `position / duration`, 0 to 100 (0 while the duration is unknown).
    pub percent_watched: f64,
    /// Played to the end (an `ended` event, or past 95 %).
    pub completed: bool,
    /// Event time of the newest event folded in, ms since the epoch.
    pub updated_at: i64,
    /// Its id (the tie-breaker between events of the same millisecond).
    pub event_id: Uuid,
}

impl WatchState {
    /// The key of a (viewer, video) pair.
    pub fn key(viewer_id: &str, video_id: &str) -> String {
        format!("{viewer_id}/{video_id}")
    }

    /// The state after `event`, or `None` when the event changes nothing: no viewer, no
    /// position, a duplicate, or older than what is known (unless it brings the duration).
    pub fn fold(current: Option<&WatchState>, event: &QoeEvent) -> Option<WatchState> {
        let viewer = event.viewer_id.as_deref()?;
        let ended = event.event_type == QoeEventType::Ended;
        let position = event.position_ms.or(event.duration_ms.filter(|_| ended))?;
        if let Some(current) = current {
            if (event.ts, event.event_id) <= (current.updated_at, current.event_id) {
                // Not newer: only the timeless duration may be learnt from it.
                let duration = event.duration_ms.filter(|_| current.duration_ms.is_none())?;
                let mut learnt = current.clone();
                learnt.duration_ms = Some(duration);
                learnt.refresh(current.completed);
                return Some(learnt);
            }
        }
        let mut state = WatchState {
            viewer_id: viewer.to_owned(),
            video_id: event.cid.clone(),
            position_ms: position,
            duration_ms: event.duration_ms.or_else(|| current.and_then(|c| c.duration_ms)),
            percent_watched: 0.0,
            completed: false,
            updated_at: event.ts,
            event_id: event.event_id,
        };
        state.refresh(ended);
        Some(state)
    }

    fn refresh(&mut self, ended: bool) {
        self.percent_watched = match self.duration_ms {
            Some(duration) if duration > 0 => {
                ((self.position_ms as f64 * 100.0 / duration as f64).clamp(0.0, 100.0) * 10.0).round() / 10.0
            }
            _ => 0.0,
        };
        self.completed = ended || self.percent_watched >= COMPLETE_PERCENT;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(ts: i64, kind: QoeEventType, position: Option<u64>, duration: Option<u64>) -> QoeEvent {
        let id = Uuid::from_u128(u128::try_from(ts).unwrap_or(0) * 7 + position.map_or(0, u128::from));
        QoeEvent {
            viewer_id: Some("alice".into()),
            received_at: ts + 5,
            position_ms: position,
            duration_ms: duration,
            ..QoeEvent::new(id, kind, "s", "video-1", ts)
        }
    }

    fn fold_all<'a>(events: impl IntoIterator<Item = &'a QoeEvent>) -> Option<WatchState> {
        events
            .into_iter()
            .fold(None, |state, e| WatchState::fold(state.as_ref(), e).or(state))
    }

    fn session() -> Vec<QoeEvent> {
        vec![
            event(1_000, QoeEventType::SessionStart, Some(0), Some(600_000)),
            event(2_000, QoeEventType::Heartbeat, Some(60_000), None),
            event(3_000, QoeEventType::Seek, Some(300_000), None),
            event(4_000, QoeEventType::Heartbeat, Some(330_000), None),
            event(5_000, QoeEventType::Pause, Some(331_000), None),
        ]
    }

    #[test]
    fn the_newest_event_sets_the_position_and_the_duration_gives_the_percentage() {
        let state = fold_all(&session()).expect("state");
        assert_eq!((state.position_ms, state.duration_ms), (331_000, Some(600_000)));
        assert_eq!(state.percent_watched, 55.2);
        assert!(!state.completed);
        assert_eq!(state.updated_at, 5_000);
        assert_eq!(WatchState::key(&state.viewer_id, &state.video_id), "alice/video-1");
    }

    #[test]
    fn late_and_repeated_events_never_move_it_back() {
        let events = session();
        let in_order = fold_all(&events);
        let mut reversed = events.clone();
        reversed.reverse();
        assert_eq!(
            fold_all(&reversed),
            in_order,
            "the duration is learnt from the late first event"
        );
        let mut shuffled = vec![
            events[3].clone(),
            events[0].clone(),
            events[4].clone(),
            events[1].clone(),
            events[2].clone(),
        ];
        shuffled.extend(events.iter().cloned());
        assert_eq!(fold_all(&shuffled), in_order, "duplicates change nothing");
        let state = in_order.expect("state");
        assert_eq!(
            WatchState::fold(Some(&state), &events[4]),
            None,
            "a duplicate is no change"
        );
        assert_eq!(
            WatchState::fold(Some(&state), &events[1]),
            None,
            "an older event is no change"
        );
    }

    #[test]
    fn ending_or_reaching_the_credits_completes_and_a_rewatch_reopens() {
        let mut events = session();
        events.push(event(6_000, QoeEventType::Ended, None, Some(600_000)));
        let ended = fold_all(&events).expect("state");
        assert!(ended.completed && ended.position_ms == 600_000);
        events.push(event(7_000, QoeEventType::Heartbeat, Some(580_000), None));
        assert!(fold_all(&events).expect("state").completed, "96.7 % is in the credits");
        events.push(event(8_000, QoeEventType::SessionStart, Some(0), None));
        let again = fold_all(&events).expect("state");
        assert!(
            !again.completed && again.position_ms == 0,
            "watching again from the start"
        );
    }

    #[test]
    fn events_without_a_viewer_or_a_position_change_nothing() {
        let mut anonymous = event(1_000, QoeEventType::Heartbeat, Some(10), None);
        anonymous.viewer_id = None;
        assert_eq!(WatchState::fold(None, &anonymous), None);
        assert_eq!(
            WatchState::fold(None, &event(1_000, QoeEventType::RebufferStart, None, None)),
            None
        );
    }
}
