//! Viewers' watch state: where each viewer is in each video (resume positions), and the
//! "continue watching" list, newest first. Kept by the `watch-state` consumer group on the
//! QoE stream.

use chrono::{DateTime, TimeZone, Utc};
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi, Tags};
use vodsource_qoe::WatchState;

use super::auth::BearerAuth;
use super::error::ApiError;
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
        let limit = limit.0.unwrap_or(20) as usize;
        let page = self
            .state
            .app
            .viewers()
            .continue_watching(&auth.0, &viewer_id, cursor.0.as_deref(), limit)
            .await?;
        Ok(Json(ContinueWatching {
            items: page.items.into_iter().map(body).collect(),
            next_cursor: page.next_cursor,
        }))
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
        let state = self
            .state
            .app
            .viewers()
            .watch_state(&auth.0, &viewer_id, &video_id)
            .await?;
        Ok(Json(body(state)))
    }
}
