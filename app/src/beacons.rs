//! Player QoE beacons: a batch judged event by event (the QoE crate's rules, then who may
//! send what: a viewer's own events, about videos they may play); the accepted ones are
//! stamped and appended to the QoE stream, keyed by session, before the answer.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use vodsource_commands::ports::StreamError;
use vodsource_projections::{CatalogProjector, CatalogView};
use vodsource_qoe::{judge_batch, BatchError, BeaconError, QoeEvent, MAX_BATCH_EVENTS};

use crate::error::{AppError, ErrorKind};
use crate::principal::{Principal, Role};
use crate::Core;

/// The verdict on one event of a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Position in the batch, from 0.
    pub index: usize,
    /// The event's id, when readable.
    pub event_id: Option<String>,
    /// Stored, or why not.
    pub outcome: Result<(), BeaconError>,
}

/// The beacon use case.
pub struct Beacons<'a> {
    core: &'a Core,
}

impl<'a> Beacons<'a> {
    pub(crate) fn new(core: &'a Core) -> Self {
        Self { core }
    }

    /// Judges a batch `{"events": [...]}` sent by `principal` and stores the events that
    /// pass; answers one verdict per event, in batch order.
    ///
    /// # Errors
    /// The batch as a whole: PAYLOAD_TOO_LARGE, TOO_MANY_EVENTS, VALIDATION_FAILED (an event
    /// out of the schema, naming its index and field); UNAVAILABLE when there is no QoE
    /// stream or it refused the batch (nothing of it was stored).
    pub async fn send(&self, principal: &Principal, batch: serde_json::Value) -> Result<Vec<Verdict>, AppError> {
        let core = self.core;
        let judged = judge_batch(batch, core.now().timestamp_millis()).map_err(|e| match e {
            BatchError::TooLarge(_) => AppError::new(
                ErrorKind::TooLarge,
                "PAYLOAD_TOO_LARGE",
                e.to_string(),
                serde_json::Value::Null,
            ),
            BatchError::TooMany(n) => AppError::new(
                ErrorKind::Unprocessable,
                "TOO_MANY_EVENTS",
                e.to_string(),
                serde_json::json!({ "events": n, "limit": MAX_BATCH_EVENTS }),
            ),
            BatchError::Shape { index, ref fault } => AppError::new(
                ErrorKind::Invalid,
                "VALIDATION_FAILED",
                e.to_string(),
                serde_json::json!({ "index": index, "field": fault.field }),
            ),
            BatchError::Empty | BatchError::Malformed(_) => AppError::invalid("events", e.to_string()),
        })?;
        let Some(stream) = &core.ports.qoe else {
            return Err(AppError::new(
                ErrorKind::Unavailable,
                "UNAVAILABLE",
                "this server has no QoE stream",
                serde_json::Value::Null,
            ));
        };
        let mut records = Vec::new();
        let mut verdicts = Vec::with_capacity(judged.len());
        for mut result in judged {
            if let Ok(event) = &mut result.outcome {
                if let Err(fault) = bind_viewer(event, principal) {
                    result.outcome = Err(fault);
                } else if !self.may_play(principal, &event.cid).await? {
                    result.outcome = Err(BeaconError {
                        field: "cid".into(),
                        message: format!("{:?} is not a video the caller may play", event.cid),
                    });
                }
            }
            let outcome = match result.outcome {
                Ok(event) => {
                    records.push(vodsource_qoe::wire::record(&event));
                    Ok(())
                }
                Err(e) => Err(e),
            };
            verdicts.push(Verdict {
                index: result.index,
                event_id: result.event_id.map(|id| id.to_string()),
                outcome,
            });
        }
        if !records.is_empty() {
            stream
                .publish(vodsource_qoe::QOE_TOPIC, records)
                .await
                .map_err(|e| match e {
                    StreamError::Unavailable(message) => {
                        tracing::warn!(error = %message, "the QoE stream refused a batch");
                        AppError::new(
                            ErrorKind::Unavailable,
                            "UNAVAILABLE",
                            "the QoE stream is unavailable; nothing of this batch was stored, send it again",
                            serde_json::Value::Null,
                        )
                    }
                    other => AppError::internal("publishing beacons", &other),
                })?;
        }
        Ok(verdicts)
    }

    /// Whether `principal` may play video `id` (and so send beacons about it): a published
    /// video, or one of the principal's own, or any existing video for an admin. Answers come
    /// from the catalog through a short-lived cache.
    async fn may_play(&self, principal: &Principal, id: &str) -> Result<bool, AppError> {
        let core = self.core;
        let answer = match core.playable.get(id) {
            Some(answer) => answer,
            None => {
                let doc = core
                    .ports
                    .views
                    .get(CatalogProjector::NAME, id)
                    .await
                    .map_err(|e| AppError::store("reading the catalog", &e))?;
                let answer = doc
                    .map(|d| serde_json::from_str::<CatalogView>(&d.body))
                    .transpose()
                    .map_err(|e| AppError::internal("a catalog document", &e))?
                    .map(|view| Playable {
                        owner: view.owner,
                        published: view.published,
                    });
                core.playable.put(id, answer.clone());
                answer
            }
        };
        Ok(answer.is_some_and(|video| video.published || principal.owns_or_admin(&video.owner)))
    }
}

/// Whose watch state an event moves: a viewer's own. An event without `viewer_id` is the
/// caller's; one naming somebody else is refused, unless an admin (a trusted relay) sends it.
fn bind_viewer(event: &mut QoeEvent, principal: &Principal) -> Result<(), BeaconError> {
    if principal.role == Role::Admin {
        return Ok(());
    }
    match &event.viewer_id {
        None => {
            event.viewer_id = Some(principal.subject.clone());
            Ok(())
        }
        Some(viewer) if *viewer == principal.subject => Ok(()),
        Some(viewer) => Err(BeaconError {
            field: "viewer_id".into(),
            message: format!(
                "{viewer:?} is not the caller ({:?}); leave it out or send your own",
                principal.subject
            ),
        }),
    }
}

/// Who may play a video, as the catalog says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Playable {
    /// Its owner.
    pub owner: String,
    /// Published to every viewer.
    pub published: bool,
}

/// Catalog answers for beacons' `cid`, kept briefly: a batch of 500 events about one video
/// costs one read. A published video is kept for the whole TTL; an unpublished or unknown one
/// for a fifth of it, so viewers of a video just published are heard within seconds.
#[derive(Debug)]
pub struct PlayableCache {
    entries: Mutex<HashMap<String, (Instant, Option<Playable>)>>,
    ttl: Duration,
    miss_ttl: Duration,
    capacity: usize,
}

impl PlayableCache {
    /// A cache keeping answers for `ttl` (unknown videos for a fifth of it).
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            ttl,
            miss_ttl: ttl / 5,
            capacity,
        }
    }

    /// The cached answer for `video`, if fresh.
    pub fn get(&self, video: &str) -> Option<Option<Playable>> {
        let entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        entries
            .get(video)
            .and_then(|(at, answer)| (at.elapsed() < self.ttl_of(answer.as_ref())).then(|| answer.clone()))
    }

    /// How long an answer is kept: the TTL for a published video, a fifth of it otherwise.
    fn ttl_of(&self, answer: Option<&Playable>) -> Duration {
        if answer.is_some_and(|p| p.published) {
            self.ttl
        } else {
            self.miss_ttl
        }
    }

    /// Remembers the catalog's answer for `video`.
    pub fn put(&self, video: &str, answer: Option<Playable>) {
        let mut entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() >= self.capacity {
            let (ttl, miss) = (self.ttl, self.miss_ttl);
            entries.retain(|_, (at, a)| {
                at.elapsed()
                    < if a.as_ref().is_some_and(|p| p.published) {
                        ttl
                    } else {
                        miss
                    }
            });
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(video.to_owned(), (Instant::now(), answer));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_published_videos_are_remembered_for_the_whole_ttl() {
        let cache = PlayableCache::new(Duration::from_secs(10), 10);
        let published = Playable {
            owner: "a".into(),
            published: true,
        };
        let private = Playable {
            owner: "a".into(),
            published: false,
        };
        assert_eq!(cache.ttl_of(Some(&published)), Duration::from_secs(10));
        assert_eq!(
            cache.ttl_of(Some(&private)),
            Duration::from_secs(2),
            "a video about to be published"
        );
        assert_eq!(cache.ttl_of(None), Duration::from_secs(2));
        cache.put("v", Some(published.clone()));
        assert_eq!(cache.get("v"), Some(Some(published)));
        assert_eq!(cache.get("w"), None);
    }
}
