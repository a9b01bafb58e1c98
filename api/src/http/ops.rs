//! Health, metrics and the admin endpoints.

use poem::web::Data;
use poem::IntoResponse as _;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi, Tags};

use super::auth::{BearerAuth, Role};
use super::error::ApiError;
use super::metrics::{Scrape, CONTENT_TYPE};
use super::model::{Check, DeadLetterPage, Liveness, ProjectionInfo, Projections, Readiness};
use super::state::AppState;

#[derive(Tags)]
enum Tag {
    /// Liveness and readiness (Prometheus metrics are at `/metrics`, outside this document).
    Health,
    /// Projections and dead letters.
    Admin,
}

/// Health, metrics and admin.
pub struct OpsApi {
    pub(super) state: AppState,
}

#[derive(ApiResponse)]
enum ReadyResponse {
    /// Every dependency is up.
    #[oai(status = 200)]
    Ready(Json<Readiness>),
    /// A dependency is down.
    #[oai(status = 503)]
    Unavailable(Json<Readiness>),
}

#[derive(ApiResponse)]
enum RebuildResponse {
    /// The rebuild started; follow it in `GET /admin/projections`.
    #[oai(status = 202)]
    Accepted(Json<ProjectionInfo>),
}

/// Each dependency's state; where it is and why it is down only with `details` (admins).
async fn readiness(state: &AppState, details: bool) -> ReadyResponse {
    let checks: Vec<Check> = state
        .app
        .admin()
        .readiness()
        .await
        .into_iter()
        .map(|d| Check {
            name: d.name.to_owned(),
            target: details.then_some(d.target),
            state: if d.error.is_none() { "up" } else { "down" }.to_owned(),
            error: d.error.filter(|_| details),
        })
        .collect();
    if checks.iter().all(|c| c.state == "up") {
        ReadyResponse::Ready(Json(Readiness {
            status: "ready".into(),
            checks,
        }))
    } else {
        ReadyResponse::Unavailable(Json(Readiness {
            status: "unavailable".into(),
            checks,
        }))
    }
}

/// The metrics of this process, with what a scrape reads from the stores.
async fn metrics_text(state: &AppState) -> Result<String, ApiError> {
    let projections = state.app.admin().gauges().await?;
    let gauges: Vec<_> = projections
        .projections
        .iter()
        .map(|p| (p.name.clone(), p.position, p.lag))
        .collect();
    let webhooks: Vec<(String, u64)> = state
        .app
        .webhooks()
        .all_progress()
        .await?
        .into_iter()
        .map(|listed| (listed.endpoint.id, listed.lag))
        .collect();
    state
        .metrics
        .render(&Scrape {
            head: projections.head,
            projections: &gauges,
            live_streams: state.streams.open(),
            webhooks: &webhooks,
        })
        .map_err(|e| ApiError::internal("rendering metrics", &e))
}

fn prometheus(result: Result<String, ApiError>) -> poem::Response {
    match result {
        Ok(text) => poem::Response::builder().content_type(CONTENT_TYPE).body(text),
        Err(e) => e.into_response(),
    }
}

/// `GET /metrics` on the API's address: admins only (the counters describe the whole
/// platform's traffic).
#[poem::handler]
pub async fn metrics_admin(req: &poem::Request, Data(state): Data<&AppState>) -> poem::Response {
    let gate = req.data::<std::sync::Arc<super::auth::Gate>>();
    match gate.map(|g| g.principal_of(req.headers())) {
        Some(Ok(principal)) => match principal.require(Role::Admin) {
            Ok(()) => prometheus(metrics_text(state).await),
            Err(e) => ApiError::from(e).into_response(),
        },
        Some(Err(e)) => e.into_response(),
        None => ApiError::internal("metrics", &"no gate installed").into_response(),
    }
}

/// `GET /metrics` on the separate metrics address: open to whoever reaches that address.
#[poem::handler]
pub async fn metrics_open(Data(state): Data<&AppState>) -> poem::Response {
    prometheus(metrics_text(state).await)
}

/// `GET /livez` (and `/healthz`): the process answers.
#[poem::handler]
pub fn livez() -> poem::Response {
    poem::Response::builder()
        .content_type("text/plain; charset=utf-8")
        .body("ok\n")
}

/// `GET /readyz`: as `/v1/health/ready` without details.
#[poem::handler]
pub async fn readyz(Data(state): Data<&AppState>) -> poem::Response {
    readiness(state, false).await.into_response()
}

#[OpenApi(prefix_path = "/v1")]
impl OpsApi {
    /// Liveness
    #[oai(path = "/health/live", method = "get", tag = "Tag::Health", operation_id = "live")]
    async fn live(&self) -> Json<Liveness> {
        Json(Liveness { status: "live".into() })
    }

    /// Readiness
    ///
    /// Each dependency's name and state (`up` or `down`); 503 when one is down. An admin's
    /// bearer token also gets where each dependency is and why it is down.
    #[oai(path = "/health/ready", method = "get", tag = "Tag::Health", operation_id = "ready")]
    async fn ready(&self, req: &poem::Request) -> ReadyResponse {
        let admin = req
            .data::<std::sync::Arc<super::auth::Gate>>()
            .is_some_and(|gate| gate.is_admin(req.headers()));
        readiness(&self.state, admin).await
    }

    /// Projections
    ///
    /// Position, lag, generation and state of each projection. Admin.
    #[oai(
        path = "/admin/projections",
        method = "get",
        tag = "Tag::Admin",
        operation_id = "listProjections"
    )]
    async fn list_projections(&self, auth: BearerAuth) -> Result<Json<Projections>, ApiError> {
        Ok(Json(self.state.app.admin().projections(&auth.0).await?))
    }

    /// Rebuild a projection
    ///
    /// Replays the whole log into a shadow generation and swaps it in; reads see the old
    /// view until then. Admin.
    #[oai(
        path = "/admin/projections/:name/rebuild",
        method = "post",
        tag = "Tag::Admin",
        operation_id = "rebuildProjection"
    )]
    async fn rebuild(&self, auth: BearerAuth, name: Path<String>) -> Result<RebuildResponse, ApiError> {
        let projection = self.state.app.admin().rebuild(&auth.0, &name).await?;
        Ok(RebuildResponse::Accepted(Json(projection)))
    }

    /// Dead letters
    ///
    /// Videos whose encoding failed for good. Admin.
    #[oai(
        path = "/admin/dead-letters",
        method = "get",
        tag = "Tag::Admin",
        operation_id = "listDeadLetters"
    )]
    async fn dead_letters(
        &self,
        auth: BearerAuth,
        cursor: Query<Option<String>>,
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))] limit: Query<Option<u32>>,
    ) -> Result<Json<DeadLetterPage>, ApiError> {
        let limit = limit.0.unwrap_or(50) as usize;
        let page = self
            .state
            .app
            .admin()
            .dead_letters(&auth.0, cursor.0.as_deref(), limit)
            .await?;
        Ok(Json(page))
    }
}
