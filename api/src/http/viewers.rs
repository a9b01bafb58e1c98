//! Viewers' watch state: where each viewer is in each video (resume positions), and the
//! "continue watching" list, newest first. Kept by the `watch-state` consumer group on the
//! QoE stream.

use chrono::{DateTime, TimeZone, Utc};
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi, Tags};
use vodsource_projections::{viewer_partition, WATCH_STATE};
use vodsource_qoe::WatchState;

use super::auth::{BearerAuth, Role};
use super::error::ApiError;
use super::listing::{decode_cursor, encode_cursor};
use super::state::AppState;

#[derive(Tags)]
enum Tag {
    /// Resume positions and continue watching.
    Viewers,
}

/// Viewers.
pub struct ViewersApi {
    pub(super) state: AppState,
}

/// One viewer's state in one video.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct WatchStateBody {
    /// The video.
    pub video_id: String,
    /// Where to resume, ms.
    pub position_ms: u64,
    /// The video's duration, once known.
    pub duration_ms: Option<u64>,
    /// 0 to 100.
    pub percent_watched: f64,
    /// Watched to the end.
    pub completed: bool,
    /// Event time of the last event folded in.
    pub updated_at: DateTime<Utc>,
}

/// A page of videos to continue, most recently watched first.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct ContinueWatching {
    /// Unfinished videos.
    pub items: Vec<WatchStateBody>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

fn body(state: WatchState) -> WatchStateBody {
    WatchStateBody {
        video_id: state.video_id,
        position_ms: state.position_ms,
        duration_ms: state.duration_ms,
        percent_watched: state.percent_watched,
        completed: state.completed,
        updated_at: Utc.timestamp_millis_opt(state.updated_at).single().unwrap_or_default(),
    }
}

fn parse(text: &str) -> Result<WatchState, ApiError> {
    serde_json::from_str(text).map_err(|e| ApiError::internal("reading a watch state", &e))
}

impl ViewersApi {
    fn check(auth: &BearerAuth, viewer_id: &str) -> Result<(), ApiError> {
        if viewer_id.is_empty() || viewer_id.chars().count() > 128 {
            return Err(ApiError::invalid("viewer_id", "must be 1 to 128 characters"));
        }
        if auth.0.subject == viewer_id || auth.0.role == Role::Admin {
            Ok(())
        } else {
            Err(ApiError::forbidden("viewers see their own watch state only"))
        }
    }
}

#[OpenApi(prefix_path = "/v1")]
impl ViewersApi {
    /// Continue watching
    ///
    /// The viewer's unfinished videos, most recently watched first. Pages may hold fewer than
    /// `limit` items (finished videos are skipped); follow `next_cursor` until it is absent.
    #[oai(
        path = "/viewers/:viewer_id/continue-watching",
        method = "get",
        tag = "Tag::Viewers",
        operation_id = "continueWatching"
    )]
    async fn continue_watching(
        &self,
        auth: BearerAuth,
        viewer_id: Path<String>,
        /// At most this many (1 to 100, default 20).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<u32>>,
        /// From a previous page's `next_cursor`.
        cursor: Query<Option<String>>,
    ) -> Result<Json<ContinueWatching>, ApiError> {
        Self::check(&auth, &viewer_id)?;
        let limit = limit.0.unwrap_or(20);
        if !(1..=100).contains(&limit) {
            return Err(ApiError::invalid("limit", "must be 1 to 100"));
        }
        let before = cursor.0.as_deref().map(decode_cursor).transpose()?;
        let page = self
            .state
            .views
            .query(
                WATCH_STATE,
                &viewer_partition(&viewer_id),
                before.as_ref(),
                limit as usize,
            )
            .await
            .map_err(|e| ApiError::store("listing watch state", &e))?;
        let next_cursor = (page.len() == limit as usize)
            .then(|| page.last().map(|entry| encode_cursor(&entry.cursor())))
            .flatten();
        let mut items = Vec::with_capacity(page.len());
        for entry in page {
            let state = parse(&entry.doc.body)?;
            if !state.completed {
                items.push(body(state));
            }
        }
        Ok(Json(ContinueWatching { items, next_cursor }))
    }

    /// Watch state
    ///
    /// Where the viewer is in one video.
    #[oai(
        path = "/viewers/:viewer_id/watch-state/:video_id",
        method = "get",
        tag = "Tag::Viewers",
        operation_id = "getWatchState"
    )]
    async fn watch_state(
        &self,
        auth: BearerAuth,
        viewer_id: Path<String>,
        video_id: Path<String>,
    ) -> Result<Json<WatchStateBody>, ApiError> {
        Self::check(&auth, &viewer_id)?;
        let key = WatchState::key(&viewer_id, &video_id);
        match self
            .state
            .views
            .get(WATCH_STATE, &key)
            .await
            .map_err(|e| ApiError::store("reading watch state", &e))?
        {
            Some(doc) => Ok(Json(body(parse(&doc.body)?))),
            None => Err(ApiError::with(
                404,
                "NOT_FOUND",
                format!("no watch state of {:?} in {:?}", viewer_id.0, video_id.0),
                serde_json::Value::Null,
            )),
        }
    }
}
