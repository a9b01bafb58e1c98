//! Webhook endpoints: where a platform's own backend hears of its videos. Each endpoint is
//! sent the public events (`video.ready`, …) it asks for, signed with its secret; an
//! admin's endpoint hears of every video, a creator's of their own.

use std::time::Duration;

use chrono::{DateTime, Utc};
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};
use vodsource_app::webhooks::{
    DeliveryRecord, DeliveryState, Endpoint, EndpointChanges, EndpointState, Listed, NewEndpoint, ReplayFrom,
    WithSecret, DEFAULT_SECRET_OVERLAP,
};
use vodsource_app::AppError;

use super::auth::BearerAuth;
use super::error::ApiError;
use super::model::{Maybe, Text};
use super::state::AppState;

#[derive(Tags)]
enum Tag {
    /// Endpoints that are sent the videos' events.
    Webhooks,
}

/// Webhooks.
pub struct WebhooksApi {
    pub(super) state: AppState,
}

/// `POST /webhooks`.
#[derive(Debug, Clone, Object)]
#[oai(deny_unknown_fields)]
pub struct CreateWebhook {
    /// Where events are POSTed: `https` (`http` only where configuration allows it). An
    /// address inside the network (loopback, private, link-local, cloud metadata) is refused
    /// here when the URL names one (422 `WEBHOOK_URL_REFUSED`), and at every request when
    /// its name resolves to one; redirects are not followed.
    #[oai(validator(min_length = 1, max_length = 2048))]
    pub url: Text,
    /// The event types to send, each once; absent or empty: every type that is not opt-in
    /// (`video.encoding.progressed` is sent only when named).
    #[oai(validator(max_items = 10))]
    pub event_types: Maybe<Vec<Text>>,
    /// For people: up to 256 characters.
    #[oai(validator(max_length = 256))]
    pub description: Maybe<Text>,
    /// Whether events are sent (default true). A disabled endpoint is sent nothing of what
    /// happens while it is disabled.
    pub enabled: Maybe<bool>,
    /// Requests per second at most, 1 to 10000; 0 or absent: no limit but the 16
    /// requests in flight at once.
    #[oai(validator(minimum(value = "0"), maximum(value = "10000")))]
    pub max_per_second: Maybe<u32>,
}

/// `PATCH /webhooks/{webhook_id}`: the fields to change (at least one).
#[derive(Debug, Clone, Object)]
#[oai(deny_unknown_fields)]
pub struct UpdateWebhook {
    /// A new URL, as at creation.
    #[oai(validator(min_length = 1, max_length = 2048))]
    pub url: Maybe<Text>,
    /// New event types, each once; empty: every type that is not opt-in.
    #[oai(validator(max_items = 10))]
    pub event_types: Maybe<Vec<Text>>,
    /// A new description.
    #[oai(validator(max_length = 256))]
    pub description: Maybe<Text>,
    /// Enable or disable.
    pub enabled: Maybe<bool>,
    /// A new rate limit, requests per second (0: none).
    #[oai(validator(minimum(value = "0"), maximum(value = "10000")))]
    pub max_per_second: Maybe<u32>,
}

/// `POST /webhooks/{webhook_id}/rotate-secret`.
#[derive(Debug, Clone, Object)]
#[oai(deny_unknown_fields)]
pub struct RotateSecret {
    /// How long the previous secret keeps signing beside the new one, seconds (0 to
    /// 604800; default 86400): requests carry a signature by each meanwhile.
    #[oai(validator(minimum(value = "0"), maximum(value = "604800")))]
    pub overlap_seconds: Maybe<u64>,
}

/// `POST /webhooks/{webhook_id}/replay`: where to replay from (one of the two).
#[derive(Debug, Clone, Object)]
#[oai(deny_unknown_fields)]
pub struct ReplayWebhook {
    /// Send again every event after this position of the log (0: from the beginning).
    #[oai(validator(minimum(value = "0")))]
    pub from_position: Maybe<u64>,
    /// Send again every event recorded at or after this time.
    pub from_time: Maybe<DateTime<Utc>>,
}

/// A replay under way.
#[derive(Debug, Clone, Object)]
pub struct ReplayAccepted {
    /// Events after this position are being sent again.
    pub from_position: u64,
    /// Where the request sits in the log; the endpoint's `position` passes it once the
    /// replay has caught up.
    pub requested_position: u64,
}

/// A webhook endpoint.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct WebhookEndpoint {
    /// Its id.
    pub id: String,
    /// Where events are POSTed.
    pub url: String,
    /// The event types sent; empty: every type that is not opt-in.
    pub event_types: Vec<String>,
    /// For people.
    pub description: String,
    /// Whether events are sent.
    pub enabled: bool,
    /// Requests per second at most (0: no limit but the 16 in flight at once).
    pub max_per_second: u32,
    /// `enabled`, `disabled`, or `failing`: an event failed for the whole retry period
    /// (24 h) and its deliveries are parked until it is re-driven (or replayed).
    pub state: WebhookState,
    /// Why it is failing, while it is.
    pub failing: Option<WebhookFailing>,
    /// `all`: every video (an admin's endpoint); `owner`: the videos of `owner`.
    pub scope: String,
    /// Whose videos, for scope `owner`.
    pub owner: Option<String>,
    /// The current secret's version (1, then one more per rotation).
    pub secret_version: u32,
    /// Until when the previous secret signs too, after a rotation.
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Events after this position of the log are sent to it.
    pub created_position: u64,
    /// On reads: every event up to this position of the log has been delivered to it (or
    /// was not for it).
    pub position: Option<u64>,
    /// On reads: events of the log after `position` (its dispatcher's lag).
    pub lag: Option<u64>,
}

/// Whether an endpoint is sent events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, poem_openapi::Enum)]
#[oai(rename_all = "snake_case")]
pub enum WebhookState {
    /// Events are sent.
    Enabled,
    /// Nothing that happens meanwhile is sent.
    Disabled,
    /// Deliveries are parked until the endpoint is re-driven.
    Failing,
}

/// The event that made an endpoint failing.
#[derive(Debug, Clone, Object)]
pub struct WebhookFailing {
    /// Its log position: deliveries are parked from there on.
    pub position: u64,
    /// Its public id.
    pub event_id: String,
    /// Attempts made.
    pub attempts: u32,
    /// Why the last one failed.
    pub reason: String,
    /// The first attempt.
    pub since: DateTime<Utc>,
}

/// Where one event's delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, poem_openapi::Enum)]
#[oai(rename_all = "snake_case")]
pub enum WebhookDeliveryState {
    /// Failed so far; tried again at `next_attempt_at`.
    Retrying,
    /// Answered with a 2xx.
    Delivered,
    /// Failed for the whole retry period: the endpoint was marked failing.
    Failed,
    /// Not finished when the endpoint was marked failing; tried again when it is re-driven.
    Parked,
}

/// One event's delivery to an endpoint.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct WebhookDelivery {
    /// The event's position in the log.
    pub position: u64,
    /// Its id (`Vodsource-Event-Id`).
    pub event_id: String,
    /// Its type.
    pub event_type: String,
    /// The video it is about.
    pub video_id: String,
    /// Where it stands.
    pub state: WebhookDeliveryState,
    /// Attempts made.
    pub attempts: u32,
    /// The first attempt.
    pub first_attempt_at: DateTime<Utc>,
    /// The last attempt.
    pub last_attempt_at: DateTime<Utc>,
    /// The last answer's status code, if one came.
    pub status_code: Option<u16>,
    /// From sending the last attempt to its answer (or failure), ms.
    pub latency_ms: u64,
    /// Why the last attempt failed.
    pub error: Option<String>,
    /// When it is tried next (`retrying` only).
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// A page of an endpoint's delivery log, newest event first (the newest 1,000 events are
/// kept).
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct WebhookDeliveryList {
    /// The deliveries.
    pub items: Vec<WebhookDelivery>,
    /// Pass as `before` for the next page; absent on the last.
    pub next_before: Option<u64>,
}

fn delivery_body(d: DeliveryRecord) -> WebhookDelivery {
    WebhookDelivery {
        position: d.position,
        event_id: d.event_id,
        event_type: d.event_type,
        video_id: d.video_id,
        state: match d.state {
            DeliveryState::Retrying => WebhookDeliveryState::Retrying,
            DeliveryState::Delivered => WebhookDeliveryState::Delivered,
            DeliveryState::Failed => WebhookDeliveryState::Failed,
            DeliveryState::Parked => WebhookDeliveryState::Parked,
        },
        attempts: d.attempts,
        first_attempt_at: d.first_attempt_at,
        last_attempt_at: d.last_attempt_at,
        status_code: d.status_code,
        latency_ms: d.latency_ms,
        error: d.error,
        next_attempt_at: d.next_attempt_at,
    }
}

/// A webhook endpoint with its secret, shown this once.
#[derive(Debug, Clone, Object)]
pub struct WebhookWithSecret {
    /// The endpoint.
    #[oai(flatten)]
    pub endpoint: WebhookEndpoint,
    /// The secret requests are signed with (`whsec_…`): verify `Vodsource-Signature` with
    /// it. No read shows it again; rotate to get a new one.
    pub secret: String,
}

/// Endpoints, oldest first.
#[derive(Debug, Clone, Object)]
pub struct WebhookList {
    /// The endpoints the caller may see.
    pub items: Vec<WebhookEndpoint>,
}

/// What a test request got.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct WebhookTestResult {
    /// Whether the endpoint answered 2xx.
    pub delivered: bool,
    /// The endpoint's status code, if it answered.
    pub status: Option<u16>,
    /// Why it did not answer (refused address, unreachable, no answer within 10 s).
    pub error: Option<String>,
    /// From sending to the answer, ms.
    pub latency_ms: u64,
    /// The event sent (its schema, `WebhookEvent`, is every event's).
    pub event: serde_json::Value,
}

#[derive(ApiResponse)]
enum CreateResponse {
    /// Created: events from now on are sent to it.
    #[oai(status = 201)]
    Created(Json<WebhookWithSecret>, #[oai(header = "Location")] String),
}

#[derive(ApiResponse)]
enum ReplayResponse {
    /// Accepted: the endpoint's dispatcher replays when it reads the request.
    #[oai(status = 202)]
    Accepted(Json<ReplayAccepted>),
}

#[derive(ApiResponse)]
enum DeleteResponse {
    /// Deleted: nothing more is sent to it.
    #[oai(status = 204)]
    Deleted,
}

fn endpoint_body(endpoint: Endpoint) -> WebhookEndpoint {
    let state = match endpoint.state() {
        EndpointState::Failing => WebhookState::Failing,
        EndpointState::Enabled => WebhookState::Enabled,
        EndpointState::Disabled => WebhookState::Disabled,
    };
    WebhookEndpoint {
        state,
        scope: if endpoint.owner.is_some() { "owner" } else { "all" }.to_owned(),
        id: endpoint.id,
        url: endpoint.url,
        event_types: endpoint.event_types,
        description: endpoint.description,
        enabled: endpoint.enabled,
        max_per_second: endpoint.max_per_second,
        failing: endpoint.failing.map(|f| WebhookFailing {
            position: f.position,
            event_id: f.event_id,
            attempts: f.attempts,
            reason: f.reason,
            since: f.since,
        }),
        owner: endpoint.owner,
        secret_version: endpoint.secret_version,
        previous_secret_expires_at: endpoint.previous_valid_until,
        created_at: endpoint.created_at,
        updated_at: endpoint.updated_at,
        created_position: endpoint.created_position,
        position: None,
        lag: None,
    }
}

fn listed_body(listed: Listed) -> WebhookEndpoint {
    WebhookEndpoint {
        position: Some(listed.position),
        lag: Some(listed.lag),
        ..endpoint_body(listed.endpoint)
    }
}

fn with_secret(created: WithSecret) -> WebhookWithSecret {
    WebhookWithSecret {
        endpoint: endpoint_body(created.endpoint),
        secret: created.secret,
    }
}

fn texts(texts: Vec<Text>) -> Vec<String> {
    texts.into_iter().map(|t| t.0).collect()
}

#[OpenApi(prefix_path = "/v1")]
impl WebhooksApi {
    /// Create a webhook endpoint
    ///
    /// Events that happen from now on are POSTed to `url`, signed with the returned
    /// `secret` (shown this once). A creator's endpoint hears of the creator's own videos;
    /// an admin's of every video.
    #[oai(
        path = "/webhooks",
        method = "post",
        tag = "Tag::Webhooks",
        operation_id = "createWebhook"
    )]
    async fn create(&self, auth: BearerAuth, body: Json<CreateWebhook>) -> Result<CreateResponse, ApiError> {
        let body = body.0;
        let created = self
            .state
            .app
            .webhooks()
            .create(
                &auth.0,
                NewEndpoint {
                    url: body.url.0,
                    event_types: body.event_types.0.map(texts).unwrap_or_default(),
                    description: body.description.0.map(|d| d.0).unwrap_or_default(),
                    enabled: body.enabled.0.unwrap_or(true),
                    max_per_second: body.max_per_second.0.unwrap_or(0),
                },
            )
            .await?;
        let location = format!("/v1/webhooks/{}", created.endpoint.id);
        Ok(CreateResponse::Created(Json(with_secret(created)), location))
    }

    /// List webhook endpoints
    ///
    /// Every endpoint for an admin; a creator's own for a creator.
    #[oai(
        path = "/webhooks",
        method = "get",
        tag = "Tag::Webhooks",
        operation_id = "listWebhooks"
    )]
    async fn list(&self, auth: BearerAuth) -> Result<Json<WebhookList>, ApiError> {
        let endpoints = self.state.app.webhooks().list(&auth.0).await?;
        Ok(Json(WebhookList {
            items: endpoints.into_iter().map(listed_body).collect(),
        }))
    }

    /// Get a webhook endpoint
    #[oai(
        path = "/webhooks/:webhook_id",
        method = "get",
        tag = "Tag::Webhooks",
        operation_id = "getWebhook"
    )]
    async fn get(&self, auth: BearerAuth, webhook_id: Path<String>) -> Result<Json<WebhookEndpoint>, ApiError> {
        let endpoint = self.state.app.webhooks().get(&auth.0, &webhook_id).await?;
        Ok(Json(listed_body(endpoint)))
    }

    /// Change a webhook endpoint
    ///
    /// Events after the change are sent as it says; events already on their way keep going
    /// (to the new URL, if it changed).
    #[oai(
        path = "/webhooks/:webhook_id",
        method = "patch",
        tag = "Tag::Webhooks",
        operation_id = "updateWebhook"
    )]
    async fn update(
        &self,
        auth: BearerAuth,
        webhook_id: Path<String>,
        body: Json<UpdateWebhook>,
    ) -> Result<Json<WebhookEndpoint>, ApiError> {
        let body = body.0;
        let changes = EndpointChanges {
            url: body.url.0.map(|u| u.0),
            event_types: body.event_types.0.map(texts),
            description: body.description.0.map(|d| d.0),
            enabled: body.enabled.0,
            max_per_second: body.max_per_second.0,
        };
        if changes.url.is_none()
            && changes.event_types.is_none()
            && changes.description.is_none()
            && changes.enabled.is_none()
            && changes.max_per_second.is_none()
        {
            return Err(AppError::invalid("body", "name at least one field to change").into());
        }
        let endpoint = self.state.app.webhooks().update(&auth.0, &webhook_id, changes).await?;
        Ok(Json(endpoint_body(endpoint)))
    }

    /// Rotate a webhook endpoint's secret
    ///
    /// Returns the new secret (shown this once). The previous one keeps signing for
    /// `overlap_seconds`: meanwhile each request carries a signature by each, so receivers
    /// can switch without missing one.
    #[oai(
        path = "/webhooks/:webhook_id/rotate-secret",
        method = "post",
        tag = "Tag::Webhooks",
        operation_id = "rotateWebhookSecret"
    )]
    async fn rotate(
        &self,
        auth: BearerAuth,
        webhook_id: Path<String>,
        body: Json<RotateSecret>,
    ) -> Result<Json<WebhookWithSecret>, ApiError> {
        let overlap = body
            .0
            .overlap_seconds
            .0
            .map_or(DEFAULT_SECRET_OVERLAP, Duration::from_secs);
        let rotated = self
            .state
            .app
            .webhooks()
            .rotate_secret(&auth.0, &webhook_id, overlap)
            .await?;
        Ok(Json(with_secret(rotated)))
    }

    /// Replay events to a webhook endpoint
    ///
    /// Sends the endpoint again every event after `from_position` (or recorded from
    /// `from_time`), in log order per video and under each event's own id, then goes on with
    /// what follows. The events are those the endpoint would be sent today (its types, its
    /// scope), also from before its creation. A failing endpoint's parking ends: deliveries
    /// go on from `from_position`. 409 `WEBHOOK_DISABLED` for a disabled endpoint.
    #[oai(
        path = "/webhooks/:webhook_id/replay",
        method = "post",
        tag = "Tag::Webhooks",
        operation_id = "replayWebhook"
    )]
    async fn replay(
        &self,
        auth: BearerAuth,
        webhook_id: Path<String>,
        body: Json<ReplayWebhook>,
    ) -> Result<ReplayResponse, ApiError> {
        let from = match (body.0.from_position.0, body.0.from_time.0) {
            (Some(position), None) => ReplayFrom::Position(position),
            (None, Some(time)) => ReplayFrom::Time(time),
            _ => {
                return Err(AppError::invalid("body", "name one of from_position and from_time").into());
            }
        };
        let started = self.state.app.webhooks().replay(&auth.0, &webhook_id, from).await?;
        Ok(ReplayResponse::Accepted(Json(ReplayAccepted {
            from_position: started.from_position,
            requested_position: started.requested_position,
        })))
    }

    /// List a webhook endpoint's deliveries
    ///
    /// Each event sent to the endpoint — its attempts, the last answer's status and
    /// latency, when it is tried next — newest first; the newest 1,000 events are kept.
    #[oai(
        path = "/webhooks/:webhook_id/deliveries",
        method = "get",
        tag = "Tag::Webhooks",
        operation_id = "listWebhookDeliveries"
    )]
    async fn deliveries(
        &self,
        auth: BearerAuth,
        webhook_id: Path<String>,
        /// Deliveries of events before this position (a page's `next_before`).
        before: Query<Option<u64>>,
        /// How many, 1 to 100 (default 50).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<u32>>,
    ) -> Result<Json<WebhookDeliveryList>, ApiError> {
        let limit = limit.0.map_or(50, |l| l as usize);
        let page = self
            .state
            .app
            .webhooks()
            .deliveries(&auth.0, &webhook_id, before.0, limit)
            .await?;
        Ok(Json(WebhookDeliveryList {
            items: page.deliveries.into_iter().map(delivery_body).collect(),
            next_before: page.next_before,
        }))
    }

    /// Re-drive a failing webhook endpoint
    ///
    /// A failing endpoint (an event failed for the whole retry period) is sent nothing; its
    /// deliveries are parked. Re-driving tries them all again — every event from where it
    /// stopped, in log order per video, each for a new retry period. 409
    /// `WEBHOOK_NOT_FAILING` when nothing is parked.
    #[oai(
        path = "/webhooks/:webhook_id/redrive",
        method = "post",
        tag = "Tag::Webhooks",
        operation_id = "redriveWebhook"
    )]
    async fn redrive(&self, auth: BearerAuth, webhook_id: Path<String>) -> Result<Json<WebhookEndpoint>, ApiError> {
        let endpoint = self.state.app.webhooks().redrive(&auth.0, &webhook_id).await?;
        Ok(Json(endpoint_body(endpoint)))
    }

    /// Send a test event
    ///
    /// POSTs a `webhook.test` event to the endpoint now, once (not retried, not in the log),
    /// signed as every event is, and says what it answered. The answer's `event` documents
    /// every event's shape (`WebhookEvent`).
    #[oai(
        path = "/webhooks/:webhook_id/test",
        method = "post",
        tag = "Tag::Webhooks",
        operation_id = "testWebhook"
    )]
    async fn test(&self, auth: BearerAuth, webhook_id: Path<String>) -> Result<Json<WebhookTestResult>, ApiError> {
        let outcome = self.state.app.webhooks().test(&auth.0, &webhook_id).await?;
        Ok(Json(WebhookTestResult {
            delivered: outcome.status.is_some_and(|s| (200..300).contains(&s)),
            status: outcome.status,
            error: outcome.error,
            latency_ms: outcome.latency_ms,
            event: serde_json::to_value(&outcome.event).unwrap_or_default(),
        }))
    }

    /// Delete a webhook endpoint
    ///
    /// Nothing more is sent to it, including events still being retried.
    #[oai(
        path = "/webhooks/:webhook_id",
        method = "delete",
        tag = "Tag::Webhooks",
        operation_id = "deleteWebhook"
    )]
    async fn delete(&self, auth: BearerAuth, webhook_id: Path<String>) -> Result<DeleteResponse, ApiError> {
        self.state.app.webhooks().delete(&auth.0, &webhook_id).await?;
        Ok(DeleteResponse::Deleted)
    }
}
