//! The queries: the catalog listing, one video, its encoding status, its history and its
//! playback grant. The views are eventually consistent; a query given the `position` a
//! command answered with waits until the view has applied it (read-your-writes).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use vodsource_commands::layout;
use vodsource_commands::ports::RecordedEvent;
use vodsource_projections::{CatalogProjector, CatalogView, StatusProjector, StatusView};

use crate::error::{AppError, ErrorKind};
use crate::listing::{self, CatalogFilter, CatalogPage};
use crate::principal::Principal;
use crate::signing::MediaClaims;
use crate::status::VideoStatus;
use crate::videos::{check_id, Videos};
use crate::Core;

/// How long a query waits for a view to reach the position it names.
const CATCH_UP: Duration = Duration::from_secs(5);

/// A page of a video's history.
#[derive(Debug, Clone)]
pub struct HistoryPage {
    /// Oldest first.
    pub events: Vec<RecordedEvent>,
    /// Pass as `after_version` for the next page; `None` on the last.
    pub next_after_version: Option<u64>,
}

/// Where to play a published video: signed, expiring URLs.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
#[cfg_attr(feature = "openapi", oai(skip_serializing_if_is_none))]
pub struct Playback {
    /// Id.
    pub video_id: String,
    /// HLS master playlist.
    pub hls_url: String,
    /// DASH manifest.
    pub dash_url: String,
    /// Poster image.
    pub poster_url: Option<String>,
    /// WebVTT index of thumbnail sprites for scrubbing (`sprite.jpg#xywh=x,y,w,h` cues).
    pub thumbnails_url: Option<String>,
    /// The URLs stop working at this time.
    pub expires_at: DateTime<Utc>,
}

/// The queries.
pub struct Catalog<'a> {
    core: &'a Core,
}

impl<'a> Catalog<'a> {
    pub(crate) fn new(core: &'a Core) -> Self {
        Self { core }
    }

    /// A page of the catalog as `principal` may see it, newest first: admins and owners
    /// listing their own videos see everything, everyone else published videos only.
    ///
    /// # Errors
    /// A bad cursor; POSITION_AHEAD_OF_LOG, VIEW_BEHIND; UNAVAILABLE.
    pub async fn list(
        &self,
        principal: &Principal,
        filter: CatalogFilter,
        cursor: Option<&str>,
        limit: usize,
        min_position: Option<u64>,
    ) -> Result<CatalogPage, AppError> {
        self.caught_up(CatalogProjector::NAME, min_position).await?;
        let Some(filter) = filter.for_principal(principal) else {
            return Ok(CatalogPage {
                items: Vec::new(),
                next_cursor: None,
            });
        };
        listing::page(self.core.ports.views.as_ref(), &filter, cursor, limit).await
    }

    /// One video: published, or the principal's own, or any for an admin.
    ///
    /// # Errors
    /// VIDEO_NOT_FOUND (also for a video the principal may not see); POSITION_AHEAD_OF_LOG,
    /// VIEW_BEHIND; UNAVAILABLE.
    pub async fn get(
        &self,
        principal: &Principal,
        id: &str,
        min_position: Option<u64>,
    ) -> Result<CatalogView, AppError> {
        check_id(id)?;
        self.caught_up(CatalogProjector::NAME, min_position).await?;
        match self.catalog_doc(id).await? {
            Some(view) if view.published || principal.owns_or_admin(&view.owner) => Ok(view),
            _ => Err(AppError::video_not_found(id)),
        }
    }

    /// The encoding status of the principal's own video (or any, for an admin).
    ///
    /// # Errors
    /// VIDEO_NOT_FOUND; POSITION_AHEAD_OF_LOG, VIEW_BEHIND; UNAVAILABLE.
    pub async fn status(
        &self,
        principal: &Principal,
        id: &str,
        min_position: Option<u64>,
    ) -> Result<StatusView, AppError> {
        self.private(principal, id).await?;
        self.caught_up(StatusProjector::NAME, min_position).await?;
        let doc = self
            .core
            .ports
            .views
            .get(StatusProjector::NAME, id)
            .await
            .map_err(|e| AppError::store("reading the status", &e))?
            .ok_or_else(|| AppError::video_not_found(id))?;
        serde_json::from_str(&doc.body).map_err(|e| AppError::internal("a status document", &e))
    }

    /// A page of the video's events after `after_version`, oldest first: its audit trail,
    /// which outlives the video (a deleted video's ends with `VideoDeleted`).
    ///
    /// # Errors
    /// VIDEO_NOT_FOUND; UNAVAILABLE.
    pub async fn history(
        &self,
        principal: &Principal,
        id: &str,
        after_version: u64,
        limit: usize,
    ) -> Result<HistoryPage, AppError> {
        self.private(principal, id).await?;
        let mut events = self
            .core
            .ports
            .log
            .read_stream(id, after_version, limit + 1)
            .await
            .map_err(|e| AppError::store("reading history", &e))?;
        let more = events.len() > limit;
        events.truncate(limit);
        let next_after_version = if more { events.last().map(|e| e.version) } else { None };
        Ok(HistoryPage {
            events,
            next_after_version,
        })
    }

    /// The video's events as they are recorded, after global position `after_position` (an
    /// SSE `Last-Event-ID`), for its owner or an admin; the stream ends after `VideoDeleted`
    /// or when `shutdown` turns true.
    ///
    /// # Errors
    /// VIDEO_NOT_FOUND; UNAVAILABLE.
    pub async fn follow(
        &self,
        principal: &Principal,
        id: &str,
        after_position: u64,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Result<futures::stream::BoxStream<'static, RecordedEvent>, AppError> {
        self.private(principal, id).await?;
        Ok(crate::follow::follow(
            self.core.ports.log.clone(),
            id.to_owned(),
            after_position,
            shutdown,
        ))
    }

    /// Signed, expiring URLs of a published video (or the principal's own, once published):
    /// HLS master playlist, DASH MPD, poster (from the CDN when there is one) and the WebVTT
    /// index of scrubbing thumbnails.
    ///
    /// # Errors
    /// VIDEO_NOT_FOUND; NOT_PUBLISHED, NOT_ENCODED; POSITION_AHEAD_OF_LOG, VIEW_BEHIND;
    /// UNAVAILABLE.
    pub async fn playback(
        &self,
        principal: &Principal,
        id: &str,
        min_position: Option<u64>,
    ) -> Result<Playback, AppError> {
        let view = self.get(principal, id, min_position).await?;
        if !view.published {
            return Err(AppError::conflict(
                "NOT_PUBLISHED",
                "the video is not published",
                serde_json::json!({ "status": VideoStatus::from_stage(view.status).as_str() }),
            ));
        }
        let Some(manifests) = view.manifests else {
            return Err(AppError::conflict(
                "NOT_ENCODED",
                "the video has no manifests",
                serde_json::Value::Null,
            ));
        };
        let core = self.core;
        let expires_at = core.grant_expiry();
        let token = core.signer.sign(&MediaClaims {
            v: id.to_owned(),
            e: expires_at.timestamp(),
        });
        let prefix = layout::media_prefix(id);
        let url = |key: &str| {
            key.strip_prefix(&prefix)
                .map(|rest| format!("{}/media/{token}/{id}/{rest}", core.settings.public_url))
        };
        let (Some(hls_url), Some(dash_url)) = (url(&manifests.hls_master_key), url(&manifests.dash_mpd_key)) else {
            return Err(AppError::internal(
                "playback",
                &format!("manifests of {id} are outside {prefix}"),
            ));
        };
        // A poster is one request: straight from the CDN when there is one.
        let grant = core
            .settings
            .cdn
            .as_ref()
            .map(|cdn| cdn.grant(id, expires_at.timestamp()));
        let poster = |key: &str| match &grant {
            Some(grant) => key.strip_prefix(&prefix).map(|rest| grant.url(rest)),
            None => url(key),
        };
        Ok(Playback {
            video_id: id.to_owned(),
            hls_url,
            dash_url,
            poster_url: view.thumbnail_key.as_deref().and_then(poster),
            thumbnails_url: view.thumbnails_vtt_key.as_deref().and_then(url),
            expires_at,
        })
    }

    /// Refuses a principal who may not see video `id`'s private state (status, history,
    /// events): only its owner and admins may. The catalog knows the owner without
    /// replaying the stream, so a page of a long stream's history costs what the page does;
    /// a video it does not list (just registered, or deleted) is judged on its events.
    ///
    /// # Errors
    /// VIDEO_NOT_FOUND, also for another owner's video; UNAVAILABLE.
    pub async fn private(&self, principal: &Principal, id: &str) -> Result<(), AppError> {
        check_id(id)?;
        match self.catalog_doc(id).await? {
            Some(view) if principal.owns_or_admin(&view.owner) => Ok(()),
            Some(_) => Err(AppError::video_not_found(id)),
            None => Videos::new(self.core).owned(principal, id).await.map(|_| ()),
        }
    }

    async fn catalog_doc(&self, id: &str) -> Result<Option<CatalogView>, AppError> {
        let doc = self
            .core
            .ports
            .views
            .get(CatalogProjector::NAME, id)
            .await
            .map_err(|e| AppError::store("reading the catalog", &e))?;
        doc.map(|d| serde_json::from_str(&d.body).map_err(|e| AppError::internal("a catalog document", &e)))
            .transpose()
    }

    /// Waits until projection `name` has applied the event at `position` (read-your-writes:
    /// a client passes the position a command answered with). Returns at once without one.
    ///
    /// # Errors
    /// POSITION_AHEAD_OF_LOG (a conflict) for a position past the log head; VIEW_BEHIND
    /// (unavailable) when the view has not got there within 5 s.
    pub async fn caught_up(&self, name: &str, position: Option<u64>) -> Result<(), AppError> {
        let Some(position) = position else {
            return Ok(());
        };
        let ports = &self.core.ports;
        let head = ports
            .log
            .head()
            .await
            .map_err(|e| AppError::store("reading the log head", &e))?;
        if position > head {
            return Err(AppError::conflict(
                "POSITION_AHEAD_OF_LOG",
                format!("min_position {position} is beyond the last recorded event ({head})"),
                serde_json::json!({ "field": "min_position", "head": head }),
            ));
        }
        let deadline = tokio::time::Instant::now() + CATCH_UP;
        let mut pause = Duration::from_millis(1);
        loop {
            let state = ports
                .views
                .projection(name)
                .await
                .map_err(|e| AppError::store("reading a projection", &e))?;
            if state.position >= position {
                return Ok(());
            }
            if tokio::time::Instant::now() + pause > deadline {
                return Err(AppError::new(
                    ErrorKind::Unavailable,
                    "VIEW_BEHIND",
                    format!(
                        "the {name} view has not reached position {position} yet (it is at {})",
                        state.position
                    ),
                    serde_json::json!({ "view": name, "position": state.position, "wanted": position }),
                ));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }
}
