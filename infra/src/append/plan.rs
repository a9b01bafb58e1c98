//! Deciding, for a batch of appends, which succeed and where their events land. Pure: both
//! stores read the current versions and known event ids inside their write transaction, call
//! [`plan`], and write the rows it returns.

use std::collections::HashMap;

use serde::de::IgnoredAny;
use uuid::Uuid;
use vodsource_commands::ports::{AppendRequest, Appended, ExpectedVersion, NewEvent, StoreError};

/// An event id already in the log: where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Existing {
    pub stream_id: String,
    pub version: u64,
    pub position: u64,
}

/// A row to insert.
#[derive(Debug)]
pub(crate) struct Row<'a> {
    pub position: u64,
    pub version: u64,
    pub stream_id: &'a str,
    pub stream_type: &'a str,
    pub event: &'a NewEvent,
}

/// The outcome of each request (same order) and the rows to write; the new head is the last
/// row's position, or `head` when there are none.
pub(crate) fn plan<'a>(
    batch: &[&'a AppendRequest],
    versions: &HashMap<String, u64>,
    existing: &HashMap<Uuid, Existing>,
    head: u64,
) -> (Vec<Result<Appended, StoreError>>, Vec<Row<'a>>) {
    let mut versions: HashMap<String, u64> = versions.clone();
    let mut in_batch: HashMap<Uuid, Existing> = HashMap::new();
    let mut rows = Vec::new();
    let mut position = head;
    let mut outcomes = Vec::with_capacity(batch.len());
    for request in batch {
        let outcome = plan_one(
            request,
            &mut versions,
            existing,
            &mut in_batch,
            &mut position,
            &mut rows,
        );
        outcomes.push(outcome);
    }
    (outcomes, rows)
}

fn plan_one<'a>(
    request: &'a AppendRequest,
    versions: &mut HashMap<String, u64>,
    existing: &HashMap<Uuid, Existing>,
    in_batch: &mut HashMap<Uuid, Existing>,
    position: &mut u64,
    rows: &mut Vec<Row<'a>>,
) -> Result<Appended, StoreError> {
    validate(request)?;
    let lookup = |id: &Uuid| existing.get(id).or_else(|| in_batch.get(id)).cloned();
    if let Some(first_known) = request.events.iter().find(|e| lookup(&e.event_id).is_some()) {
        let known: Vec<Option<Existing>> = request.events.iter().map(|e| lookup(&e.event_id)).collect();
        return resend(request, &known, first_known.event_id);
    }
    let current = versions.get(request.stream_id.as_str()).copied().unwrap_or(0);
    if let ExpectedVersion::Exact(expected) = request.expected {
        if expected != current {
            return Err(StoreError::Conflict {
                stream_id: request.stream_id.clone(),
                expected,
                actual: current,
            });
        }
    }
    let first_position = *position + 1;
    let mut version = current;
    for event in &request.events {
        version += 1;
        *position += 1;
        rows.push(Row {
            position: *position,
            version,
            stream_id: &request.stream_id,
            stream_type: &request.stream_type,
            event,
        });
        in_batch.insert(
            event.event_id,
            Existing {
                stream_id: request.stream_id.clone(),
                version,
                position: *position,
            },
        );
    }
    versions.insert(request.stream_id.clone(), version);
    Ok(Appended {
        first_position,
        last_position: *position,
        version,
        duplicate: false,
    })
}

/// A re-sent append is accepted only if every event is already stored, in this stream, in order.
fn resend(request: &AppendRequest, known: &[Option<Existing>], first_known: Uuid) -> Result<Appended, StoreError> {
    let refused = StoreError::DuplicateEventId { event_id: first_known };
    let mut found: Vec<&Existing> = Vec::with_capacity(known.len());
    for existing in known {
        match existing {
            Some(e) if e.stream_id == request.stream_id => found.push(e),
            _ => return Err(refused),
        }
    }
    if !found.windows(2).all(|w| w[1].version == w[0].version + 1) {
        return Err(refused);
    }
    let (first, last) = (found[0], found[found.len() - 1]);
    Ok(Appended {
        first_position: first.position,
        last_position: last.position,
        version: last.version,
        duplicate: true,
    })
}

fn validate(request: &AppendRequest) -> Result<(), StoreError> {
    if request.events.is_empty() {
        return Err(StoreError::Invalid("an append needs at least one event".into()));
    }
    if request.stream_id.is_empty() || request.stream_id.len() > 200 {
        return Err(StoreError::Invalid("stream id must be 1 to 200 bytes".into()));
    }
    for (i, event) in request.events.iter().enumerate() {
        if request.events[..i].iter().any(|e| e.event_id == event.event_id) {
            return Err(StoreError::Invalid(format!(
                "event id {} appears twice",
                event.event_id
            )));
        }
        if event.event_type.is_empty() {
            return Err(StoreError::Invalid("event type must not be empty".into()));
        }
        if serde_json::from_str::<IgnoredAny>(&event.payload).is_err() {
            return Err(StoreError::Invalid(format!(
                "payload of event {} is not JSON",
                event.event_id
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use vodsource_commands::ports::EventMetadata;

    use super::*;

    fn event() -> NewEvent {
        NewEvent {
            event_id: Uuid::now_v7(),
            event_type: "T".into(),
            schema_version: 1,
            payload: "{}".into(),
            metadata: EventMetadata::default(),
            occurred_at: Utc::now(),
        }
    }

    fn request(stream: &str, expected: ExpectedVersion, n: usize) -> AppendRequest {
        AppendRequest {
            stream_id: stream.into(),
            stream_type: "video".into(),
            expected,
            events: (0..n).map(|_| event()).collect(),
        }
    }

    #[test]
    fn two_appends_to_one_stream_in_a_batch_chain_their_versions() {
        let a = request("s", ExpectedVersion::Exact(0), 2);
        let b = request("s", ExpectedVersion::Exact(2), 1);
        let (outcomes, rows) = plan(&[&a, &b], &HashMap::new(), &HashMap::new(), 10);
        assert_eq!(outcomes[0].as_ref().map(|a| (a.first_position, a.version)), Ok((11, 2)));
        assert_eq!(outcomes[1].as_ref().map(|a| (a.first_position, a.version)), Ok((13, 3)));
        assert_eq!(rows.iter().map(|r| r.position).collect::<Vec<_>>(), vec![11, 12, 13]);
    }

    #[test]
    fn a_conflict_fails_only_its_own_append() {
        let a = request("s", ExpectedVersion::Exact(1), 1);
        let b = request("t", ExpectedVersion::Any, 1);
        let versions = HashMap::from([("s".to_owned(), 3)]);
        let (outcomes, rows) = plan(&[&a, &b], &versions, &HashMap::new(), 0);
        assert_eq!(
            outcomes[0],
            Err(StoreError::Conflict {
                stream_id: "s".into(),
                expected: 1,
                actual: 3
            })
        );
        assert!(outcomes[1].is_ok());
        assert_eq!(rows.len(), 1);
    }

    #[test]
    fn a_resent_append_is_answered_from_the_log() {
        let a = request("s", ExpectedVersion::Exact(0), 2);
        let existing = HashMap::from([
            (
                a.events[0].event_id,
                Existing {
                    stream_id: "s".into(),
                    version: 1,
                    position: 7,
                },
            ),
            (
                a.events[1].event_id,
                Existing {
                    stream_id: "s".into(),
                    version: 2,
                    position: 9,
                },
            ),
        ]);
        let (outcomes, rows) = plan(&[&a], &HashMap::from([("s".to_owned(), 2)]), &existing, 20);
        assert_eq!(
            outcomes[0],
            Ok(Appended {
                first_position: 7,
                last_position: 9,
                version: 2,
                duplicate: true
            })
        );
        assert!(rows.is_empty());
    }

    #[test]
    fn a_partly_known_append_is_refused() {
        let a = request("s", ExpectedVersion::Any, 2);
        let existing = HashMap::from([(
            a.events[1].event_id,
            Existing {
                stream_id: "s".into(),
                version: 1,
                position: 1,
            },
        )]);
        let (outcomes, _) = plan(&[&a], &HashMap::new(), &existing, 1);
        assert!(matches!(outcomes[0], Err(StoreError::DuplicateEventId { .. })));
    }

    #[test]
    fn a_known_id_in_another_stream_is_refused() {
        let a = request("s", ExpectedVersion::Any, 1);
        let existing = HashMap::from([(
            a.events[0].event_id,
            Existing {
                stream_id: "other".into(),
                version: 1,
                position: 1,
            },
        )]);
        let (outcomes, _) = plan(&[&a], &HashMap::new(), &existing, 1);
        assert_eq!(
            outcomes[0],
            Err(StoreError::DuplicateEventId {
                event_id: a.events[0].event_id
            })
        );
    }

    #[test]
    fn malformed_appends_are_refused_with_the_reason() {
        let empty = request("s", ExpectedVersion::Any, 0);
        let mut bad_json = request("s", ExpectedVersion::Any, 1);
        bad_json.events[0].payload = "{not json".into();
        let mut twice = request("s", ExpectedVersion::Any, 1);
        twice.events.push(twice.events[0].clone());
        let (outcomes, rows) = plan(&[&empty, &bad_json, &twice], &HashMap::new(), &HashMap::new(), 0);
        assert!(rows.is_empty());
        for outcome in outcomes {
            assert!(matches!(outcome, Err(StoreError::Invalid(_))), "{outcome:?}");
        }
    }
}
