//! Health, metrics and the admin endpoints.

use std::fmt::Write as _;

use poem::web::Data;
use poem::IntoResponse as _;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi, Tags};
use vodsource_projections::{DeadLetterProjector, DeadLetterView, ProjectionStatus, PROJECTIONS};

use super::auth::{BearerAuth, Role};
use super::control::RebuildError;
use super::error::ApiError;
use super::model::{Check, DeadLetter, DeadLetterPage, Liveness, ProjectionInfo, Projections, Readiness, RebuildInfo};
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

fn check(name: &str, target: String, result: Result<(), String>, details: bool) -> Check {
    Check {
        name: name.to_owned(),
        target: details.then_some(target),
        state: if result.is_ok() { "up" } else { "down" }.to_owned(),
        error: result.err().filter(|_| details),
    }
}

/// Each dependency's state; where it is and why it is down only with `details` (admins).
async fn readiness(state: &AppState, details: bool) -> ReadyResponse {
    let (log, views, objects) = tokio::join!(
        state.log.head(),
        state.views.projection(vodsource_projections::CatalogProjector::NAME),
        state.objects.check(),
    );
    let checks = vec![
        check(
            "event_store",
            state.log.describe(),
            log.map(|_| ()).map_err(|e| e.to_string()),
            details,
        ),
        check(
            "view_store",
            "views".into(),
            views.map(|_| ()).map_err(|e| e.to_string()),
            details,
        ),
        check(
            "object_store",
            state.objects.describe(),
            objects.map_err(|e| e.to_string()),
            details,
        ),
    ];
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

/// The Prometheus text of this process.
async fn metrics_text(state: &AppState) -> Result<String, ApiError> {
    let projections = projections(state).await?;
    let gauges: Vec<_> = projections
        .projections
        .iter()
        .map(|p| (p.name.clone(), p.position, p.lag))
        .collect();
    let mut text = state.metrics.render(&gauges, projections.head);
    state.encoders.render(&mut text);
    let _ = writeln!(
        text,
        "# HELP vodsource_live_streams Live event streams open.\n# TYPE vodsource_live_streams gauge\nvodsource_live_streams {}",
        state.streams.open()
    );
    Ok(text)
}

fn prometheus(result: Result<String, ApiError>) -> poem::Response {
    match result {
        Ok(text) => poem::Response::builder()
            .content_type("text/plain; version=0.0.4; charset=utf-8")
            .body(text),
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
            Err(e) => e.into_response(),
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

async fn projections(state: &AppState) -> Result<Projections, ApiError> {
    {
        let head = state
            .log
            .head()
            .await
            .map_err(|e| ApiError::store("reading the log head", &e))?;
        let mut projections = Vec::with_capacity(PROJECTIONS.len());
        for name in PROJECTIONS {
            let p = state
                .views
                .projection(name)
                .await
                .map_err(|e| ApiError::store("reading a projection", &e))?;
            let rebuild = state.control.as_ref().and_then(|c| c.rebuild_state(name));
            let rebuilding = state.control.as_ref().is_some_and(|c| c.rebuilding(name));
            let (state, error) = match p.status {
                _ if rebuilding => ("rebuilding".to_owned(), None),
                ProjectionStatus::Running => ("running".to_owned(), None),
                ProjectionStatus::Failed { error, .. } => ("failed".to_owned(), Some(error)),
            };
            projections.push(ProjectionInfo {
                name: name.to_owned(),
                position: p.position,
                lag: head.saturating_sub(p.position),
                generation: p.generation,
                state,
                error,
                rebuild: rebuild.map(|r| RebuildInfo {
                    started_at: r.started_at,
                    position: r.position,
                    head: r.head,
                    finished_at: r.finished_at,
                    error: r.error,
                }),
            });
        }
        Ok(Projections { head, projections })
    }
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
        auth.0.require(Role::Admin)?;
        Ok(Json(projections(&self.state).await?))
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
        auth.0.require(Role::Admin)?;
        let Some(control) = &self.state.control else {
            return Err(ApiError::with(
                409,
                "NOT_RUNNING_HERE",
                "this server does not run the projections; use `vodsource replay` where they run",
                serde_json::Value::Null,
            ));
        };
        match control.rebuild(&name) {
            Ok(_) => {}
            Err(RebuildError::Unknown(_)) => {
                return Err(ApiError::with(
                    404,
                    "PROJECTION_NOT_FOUND",
                    format!("no projection named {:?}; they are {}", name.0, PROJECTIONS.join(", ")),
                    serde_json::Value::Null,
                ))
            }
            Err(e @ RebuildError::Running(_)) => {
                return Err(ApiError::with(
                    409,
                    "REBUILD_RUNNING",
                    e.to_string(),
                    serde_json::Value::Null,
                ))
            }
        }
        let projections = projections(&self.state).await?;
        projections
            .projections
            .into_iter()
            .find(|p| p.name == name.0)
            .map(|p| RebuildResponse::Accepted(Json(p)))
            .ok_or_else(|| ApiError::internal("rebuild", &"the projection vanished"))
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
        auth.0.require(Role::Admin)?;
        let limit = limit.0.unwrap_or(50) as usize;
        // Cursors have one form across the API; this one's place is a video id.
        let after = cursor
            .0
            .as_deref()
            .map(super::listing::decode_cursor)
            .transpose()?
            .map(|place| place.sort);
        let docs = self
            .state
            .views
            .scan(DeadLetterProjector::NAME, after.as_deref(), limit + 1)
            .await
            .map_err(|e| ApiError::store("reading dead letters", &e))?;
        let more = docs.len() > limit;
        let mut items = Vec::with_capacity(limit);
        for doc in docs.into_iter().take(limit) {
            let v: DeadLetterView =
                serde_json::from_str(&doc.body).map_err(|e| ApiError::internal("a dead letter", &e))?;
            items.push(DeadLetter {
                video_id: v.video_id,
                attempt: v.attempt,
                reason: vodsource_domain::redact_paths(&v.reason),
                failed_at: v.failed_at,
            });
        }
        let next_cursor = if more {
            items.last().map(|d| {
                super::listing::encode_cursor(&vodsource_projections::IndexCursor {
                    sort: d.video_id.clone(),
                    key: String::new(),
                })
            })
        } else {
            None
        };
        Ok(Json(DeadLetterPage { items, next_cursor }))
    }
}
