//! `POST /v1/playback/beacons`: player QoE events in batches, judged one by one; accepted ones
//! are stamped with the receive time and appended to the QoE stream (keyed by session id)
//! before the answer.

use poem_openapi::payload::Json;
use poem_openapi::{Enum, Object, OpenApi, Tags};

use super::auth::BearerAuth;
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
        let verdicts = self.state.app.beacons().send(&auth.0, body.0).await?;
        let mut accepted = 0;
        let results: Vec<BeaconResult> = verdicts
            .into_iter()
            .map(|verdict| {
                let (status, error) = match verdict.outcome {
                    Ok(()) => {
                        accepted += 1;
                        (BeaconStatus::Accepted, None)
                    }
                    Err(e) => (
                        BeaconStatus::Rejected,
                        Some(BeaconFault {
                            field: e.field,
                            message: e.message,
                        }),
                    ),
                };
                BeaconResult {
                    index: u32::try_from(verdict.index).unwrap_or(u32::MAX),
                    event_id: verdict.event_id,
                    status,
                    error,
                }
            })
            .collect();
        Ok(Json(BeaconResults {
            accepted,
            rejected: u32::try_from(results.len()).unwrap_or(u32::MAX) - accepted,
            results,
        }))
    }
}
