//! `POST /v1/playback/beacons`: player QoE events in batches, judged one by one; accepted ones
//! are stamped with the receive time and appended to the QoE stream (keyed by session id)
//! before the answer.

use poem_openapi::payload::Json;
use poem_openapi::{Enum, Object, OpenApi, Tags};
use vodsource_commands::ports::StreamError;
use vodsource_qoe::{judge_batch, BatchError, BeaconError, MAX_BATCH_EVENTS};

use super::auth::{BearerAuth, Principal, Role};
use super::error::ApiError;
use super::state::AppState;

#[derive(Tags)]
enum Tag {
    /// Player quality-of-experience beacons.
    Playback,
}

/// Beacons.
pub struct BeaconsApi {
    pub(super) state: AppState,
}

/// The verdict on one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum BeaconStatus {
    /// Stored on the QoE stream.
    Accepted,
    /// Refused; see `error`.
    Rejected,
}

/// Why an event was refused.
#[derive(Debug, Clone, Object)]
pub struct BeaconFault {
    /// The field at fault (`event` for the event as a whole).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// One event's result, in batch order.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct BeaconResult {
    /// Position in the batch, from 0.
    pub index: u32,
    /// The event's id, when readable.
    pub event_id: Option<String>,
    /// Accepted or rejected.
    pub status: BeaconStatus,
    /// Why it was rejected.
    pub error: Option<BeaconFault>,
}

/// The batch's results.
#[derive(Debug, Clone, Object)]
pub struct BeaconResults {
    /// Events stored.
    pub accepted: u32,
    /// Events refused.
    pub rejected: u32,
    /// One result per event.
    pub results: Vec<BeaconResult>,
}

#[OpenApi(prefix_path = "/v1")]
impl BeaconsApi {
    /// Send player beacons
    ///
    /// A batch `{"events": [...]}` of at most 500 events and 1 MiB (`BeaconBatch`). A batch
    /// with an event out of the `BeaconEvent` schema is refused whole (400, naming the event's
    /// index and the field). The rest is judged event by event: `ts` at most 24 h behind and
    /// 5 min ahead of the server, `error_code` required on errors, no control characters,
    /// `cid` a video the caller may play (a published one, their own, or any for an admin),
    /// `viewer_id` the caller's own (filled in when left out; another viewer's is refused,
    /// except from an admin). Events that pass are stored before the answer; the others are
    /// listed as rejected with the field and the reason. An event sent again (same
    /// `event_id`) lands in the lake once.
    #[oai(
        path = "/playback/beacons",
        method = "post",
        tag = "Tag::Playback",
        operation_id = "sendBeacons"
    )]
    async fn send(&self, auth: BearerAuth, body: Json<serde_json::Value>) -> Result<Json<BeaconResults>, ApiError> {
        let now = self.state.now().timestamp_millis();
        let judged = judge_batch(body.0, now).map_err(|e| match e {
            BatchError::TooLarge(_) => ApiError::with(413, "PAYLOAD_TOO_LARGE", e.to_string(), serde_json::Value::Null),
            BatchError::TooMany(n) => ApiError::with(
                422,
                "TOO_MANY_EVENTS",
                e.to_string(),
                serde_json::json!({ "events": n, "limit": MAX_BATCH_EVENTS }),
            ),
            BatchError::Shape { index, ref fault } => ApiError::with(
                400,
                "VALIDATION_FAILED",
                e.to_string(),
                serde_json::json!({ "index": index, "field": fault.field }),
            ),
            BatchError::Empty | BatchError::Malformed(_) => ApiError::invalid("events", e.to_string()),
        })?;
        let Some(stream) = &self.state.qoe else {
            return Err(ApiError::with(
                503,
                "UNAVAILABLE",
                "this server has no QoE stream",
                serde_json::Value::Null,
            ));
        };
        let mut records = Vec::new();
        let mut results = Vec::with_capacity(judged.len());
        for mut result in judged {
            if let Ok(event) = &mut result.outcome {
                if let Err(fault) = bind_viewer(event, &auth.0) {
                    result.outcome = Err(fault);
                } else if !self.state.may_play(&auth.0, &event.cid).await? {
                    result.outcome = Err(BeaconError {
                        field: "cid".into(),
                        message: format!("{:?} is not a video the caller may play", event.cid),
                    });
                }
            }
            let (status, error) = match &result.outcome {
                Ok(event) => {
                    records.push(vodsource_qoe::wire::record(event));
                    (BeaconStatus::Accepted, None)
                }
                Err(e) => (
                    BeaconStatus::Rejected,
                    Some(BeaconFault {
                        field: e.field.clone(),
                        message: e.message.clone(),
                    }),
                ),
            };
            results.push(BeaconResult {
                index: u32::try_from(result.index).unwrap_or(u32::MAX),
                event_id: result.event_id.map(|id| id.to_string()),
                status,
                error,
            });
        }
        let accepted = u32::try_from(records.len()).unwrap_or(u32::MAX);
        if !records.is_empty() {
            stream
                .publish(vodsource_qoe::QOE_TOPIC, records)
                .await
                .map_err(|e| match e {
                    StreamError::Unavailable(message) => {
                        tracing::warn!(error = %message, "the QoE stream refused a batch");
                        ApiError::with(
                            503,
                            "UNAVAILABLE",
                            "the QoE stream is unavailable; nothing of this batch was stored, send it again",
                            serde_json::Value::Null,
                        )
                    }
                    other => ApiError::internal("publishing beacons", &other),
                })?;
        }
        Ok(Json(BeaconResults {
            accepted,
            rejected: u32::try_from(results.len()).unwrap_or(u32::MAX) - accepted,
            results,
        }))
    }
}

/// Whose watch state an event moves: a viewer's own. An event without `viewer_id` is the
/// caller's; one naming somebody else is refused, unless an admin (a trusted relay) sends it.
fn bind_viewer(event: &mut vodsource_qoe::QoeEvent, principal: &Principal) -> Result<(), BeaconError> {
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
