//! Health, metrics and the admin endpoints.

use poem_openapi::param::{Path, Query};
use poem_openapi::payload::{Json, PlainText};
use poem_openapi::{ApiResponse, OpenApi, Tags};
use vodsource_projections::{DeadLetterProjector, DeadLetterView, ProjectionStatus, PROJECTIONS};

use super::auth::{BearerAuth, Role};
use super::control::RebuildError;
use super::error::ApiError;
use super::model::{Check, DeadLetter, DeadLetterPage, Liveness, ProjectionInfo, Projections, Readiness, RebuildInfo};
use super::state::AppState;

#[derive(Tags)]
enum Tag {
    /// Liveness, readiness and metrics.
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

fn check(name: &str, target: String, result: Result<(), String>) -> Check {
    Check {
        name: name.to_owned(),
        target,
        state: if result.is_ok() { "up" } else { "down" }.to_owned(),
        error: result.err(),
    }
}

impl OpsApi {
    async fn projections(&self) -> Result<Projections, ApiError> {
        let head = self
            .state
            .log
            .head()
            .await
            .map_err(|e| ApiError::store("reading the log head", &e))?;
        let mut projections = Vec::with_capacity(PROJECTIONS.len());
        for name in PROJECTIONS {
            let p = self
                .state
                .views
                .projection(name)
                .await
                .map_err(|e| ApiError::store("reading a projection", &e))?;
            let rebuild = self.state.control.as_ref().and_then(|c| c.rebuild_state(name));
            let rebuilding = self.state.control.as_ref().is_some_and(|c| c.rebuilding(name));
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
    /// Each configured dependency and its state.
    #[oai(path = "/health/ready", method = "get", tag = "Tag::Health", operation_id = "ready")]
    async fn ready(&self) -> ReadyResponse {
        let state = &self.state;
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
            ),
            check(
                "view_store",
                "views".into(),
                views.map(|_| ()).map_err(|e| e.to_string()),
            ),
            check(
                "object_store",
                state.objects.describe(),
                objects.map_err(|e| e.to_string()),
            ),
        ];
        if checks.iter().all(|c| c.error.is_none()) {
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

    /// Prometheus metrics
    #[oai(path = "/metrics", method = "get", tag = "Tag::Health", operation_id = "metrics")]
    async fn metrics(&self) -> Result<PlainText<String>, ApiError> {
        let projections = self.projections().await?;
        let gauges: Vec<_> = projections
            .projections
            .iter()
            .map(|p| (p.name.clone(), p.position, p.lag))
            .collect();
        let mut text = self.state.metrics.render(&gauges, projections.head);
        self.state.encoders.render(&mut text);
        Ok(PlainText(text))
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
        Ok(Json(self.projections().await?))
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
        let projections = self.projections().await?;
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
        let docs = self
            .state
            .views
            .scan(DeadLetterProjector::NAME, cursor.0.as_deref(), limit + 1)
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
                reason: v.reason,
                failed_at: v.failed_at,
            });
        }
        let next_cursor = if more {
            items.last().map(|d| d.video_id.clone())
        } else {
            None
        };
        Ok(Json(DeadLetterPage { items, next_cursor }))
    }
}
