//! `/v1/videos`: the commands and queries of one video and the catalog.

use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::{EventStream, Json};
use poem_openapi::{ApiResponse, OpenApi, Tags};
use vodsource_app::catalog::Playback;
use vodsource_app::listing::CatalogFilter;
use vodsource_app::videos::{Accepted, Change, Conditions, Registered, Registration};
use vodsource_app::VideoStatus;

use super::auth::BearerAuth;
use super::error::ApiError;
use super::events::{history_event, video_events, EventItemStream};
use super::model::{EncodingStatus, HistoryPage, RegisterVideo, UpdateVideo, Video, VideoPage};
use super::state::{if_match, AppState};

#[derive(Tags)]
enum Tag {
    /// Register, upload, change, publish and delete videos.
    Videos,
    /// The catalog, status, history and playback of videos.
    Catalog,
}

/// The video endpoints.
pub struct VideosApi {
    pub(super) state: AppState,
}

#[derive(ApiResponse)]
enum RegisterResponse {
    /// Registered; upload the source to `upload.url`, then call upload-complete.
    #[oai(status = 201)]
    Created(Json<Registered>, #[oai(header = "Location")] String),
}

#[derive(ApiResponse)]
enum VideoResponse {
    /// The video.
    #[oai(status = 200)]
    Ok(Json<Video>, #[oai(header = "ETag")] String),
    /// Unchanged since the `If-None-Match` version.
    #[oai(status = 304)]
    NotModified(#[oai(header = "ETag")] String),
}

/// The form of a video id, for the OpenAPI document.
pub use vodsource_app::videos::ID_PATTERN;

/// A command's conditions from its headers.
fn conditions<'a>(
    if_match_header: &Header<Option<String>>,
    idempotency_key: &'a Header<Option<String>>,
) -> Result<Conditions<'a>, ApiError> {
    Ok(Conditions {
        if_match: if_match(if_match_header.0.as_deref())?,
        idempotency_key: idempotency_key.0.as_deref(),
    })
}

#[OpenApi(prefix_path = "/v1")]
impl VideosApi {
    /// Register a video
    ///
    /// Records the video and returns where to upload its source — or, given `source_url`,
    /// fetches the source from there (the status then says when it arrived, or why it
    /// could not). Needs the creator role.
    #[oai(
        path = "/videos",
        method = "post",
        tag = "Tag::Videos",
        operation_id = "registerVideo"
    )]
    async fn register(
        &self,
        auth: BearerAuth,
        body: Json<RegisterVideo>,
        #[oai(name = "Idempotency-Key")] idempotency_key: Header<Option<String>>,
    ) -> Result<RegisterResponse, ApiError> {
        let request = body.0;
        let registration = Registration {
            title: request.title.0,
            description: request.description.0.map(|d| d.0),
            tags: request.tags.0.map(|tags| tags.into_iter().map(|t| t.0).collect()),
            filename: request.filename.0,
            content_type: request.content_type.0,
            size_bytes: request.size_bytes.0,
            source_url: request.source_url.0.map(|u| u.0),
            publish_when_playable: request.publish_when_playable.0.unwrap_or(false),
        };
        let registered = self
            .state
            .app
            .videos()
            .register(&auth.0, registration, idempotency_key.0.as_deref())
            .await?;
        let location = format!("/v1/videos/{}", registered.video_id);
        Ok(RegisterResponse::Created(Json(registered), location))
    }

    /// Confirm the upload
    ///
    /// Checks the stored source (present, declared size) and starts encoding.
    #[oai(
        path = "/videos/:id/upload-complete",
        method = "post",
        tag = "Tag::Videos",
        operation_id = "completeUpload"
    )]
    async fn upload_complete(
        &self,
        auth: BearerAuth,
        id: Path<String>,
        #[oai(name = "If-Match")] if_match: Header<Option<String>>,
        #[oai(name = "Idempotency-Key")] idempotency_key: Header<Option<String>>,
    ) -> Result<Json<Accepted>, ApiError> {
        let conditions = conditions(&if_match, &idempotency_key)?;
        let accepted = self
            .state
            .app
            .videos()
            .complete_upload(&auth.0, &id, conditions)
            .await?;
        Ok(Json(accepted))
    }

    /// Change title, description or tags
    #[oai(
        path = "/videos/:id",
        method = "patch",
        tag = "Tag::Videos",
        operation_id = "updateVideo"
    )]
    async fn update(
        &self,
        auth: BearerAuth,
        id: Path<String>,
        body: Json<UpdateVideo>,
        #[oai(name = "If-Match")] if_match: Header<Option<String>>,
        #[oai(name = "Idempotency-Key")] idempotency_key: Header<Option<String>>,
    ) -> Result<Json<Accepted>, ApiError> {
        let change = body.0;
        let change = Change {
            title: change.title.0.map(|t| t.0),
            description: change.description.0.map(|d| d.0),
            tags: change.tags.0.map(|tags| tags.into_iter().map(|t| t.0).collect()),
        };
        let conditions = conditions(&if_match, &idempotency_key)?;
        let accepted = self.state.app.videos().update(&auth.0, &id, change, conditions).await?;
        Ok(Json(accepted))
    }

    /// Publish
    ///
    /// Makes an encoded video visible to viewers.
    #[oai(
        path = "/videos/:id/publish",
        method = "post",
        tag = "Tag::Videos",
        operation_id = "publishVideo"
    )]
    async fn publish(
        &self,
        auth: BearerAuth,
        id: Path<String>,
        #[oai(name = "If-Match")] if_match: Header<Option<String>>,
        #[oai(name = "Idempotency-Key")] idempotency_key: Header<Option<String>>,
    ) -> Result<Json<Accepted>, ApiError> {
        let conditions = conditions(&if_match, &idempotency_key)?;
        Ok(Json(self.state.app.videos().publish(&auth.0, &id, conditions).await?))
    }

    /// Unpublish
    #[oai(
        path = "/videos/:id/unpublish",
        method = "post",
        tag = "Tag::Videos",
        operation_id = "unpublishVideo"
    )]
    async fn unpublish(
        &self,
        auth: BearerAuth,
        id: Path<String>,
        #[oai(name = "If-Match")] if_match: Header<Option<String>>,
        #[oai(name = "Idempotency-Key")] idempotency_key: Header<Option<String>>,
    ) -> Result<Json<Accepted>, ApiError> {
        let conditions = conditions(&if_match, &idempotency_key)?;
        Ok(Json(self.state.app.videos().unpublish(&auth.0, &id, conditions).await?))
    }

    /// Retry encoding
    ///
    /// Starts a new round of attempts after a terminal failure.
    #[oai(
        path = "/videos/:id/retry",
        method = "post",
        tag = "Tag::Videos",
        operation_id = "retryEncoding"
    )]
    async fn retry(
        &self,
        auth: BearerAuth,
        id: Path<String>,
        #[oai(name = "If-Match")] if_match: Header<Option<String>>,
        #[oai(name = "Idempotency-Key")] idempotency_key: Header<Option<String>>,
    ) -> Result<Json<Accepted>, ApiError> {
        let conditions = conditions(&if_match, &idempotency_key)?;
        Ok(Json(self.state.app.videos().retry(&auth.0, &id, conditions).await?))
    }

    /// Delete
    ///
    /// Removes the video from the catalog and its media from storage; its history stays.
    #[oai(
        path = "/videos/:id",
        method = "delete",
        tag = "Tag::Videos",
        operation_id = "deleteVideo"
    )]
    async fn delete(
        &self,
        auth: BearerAuth,
        id: Path<String>,
        #[oai(name = "If-Match")] if_match: Header<Option<String>>,
        #[oai(name = "Idempotency-Key")] idempotency_key: Header<Option<String>>,
    ) -> Result<Json<Accepted>, ApiError> {
        let conditions = conditions(&if_match, &idempotency_key)?;
        Ok(Json(self.state.app.videos().delete(&auth.0, &id, conditions).await?))
    }

    /// List videos
    ///
    /// The catalog, newest first, filtered. Viewers (and creators outside their own
    /// videos) see published videos only. `min_position` waits for the catalog to reach a
    /// command's position first.
    #[oai(path = "/videos", method = "get", tag = "Tag::Catalog", operation_id = "listVideos")]
    #[allow(clippy::too_many_arguments)]
    async fn list(
        &self,
        auth: BearerAuth,
        status: Query<Option<VideoStatus>>,
        published: Query<Option<bool>>,
        tag: Query<Option<String>>,
        owner: Query<Option<String>>,
        cursor: Query<Option<String>>,
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))] limit: Query<Option<u32>>,
        min_position: Query<Option<u64>>,
    ) -> Result<Json<VideoPage>, ApiError> {
        let filter = CatalogFilter {
            status: status.0,
            published: published.0,
            tag: tag.0,
            owner: owner.0,
        };
        let limit = limit.0.unwrap_or(20) as usize;
        let page = self
            .state
            .app
            .catalog()
            .list(&auth.0, filter, cursor.0.as_deref(), limit, min_position.0)
            .await?;
        Ok(Json(VideoPage {
            items: page.items.into_iter().map(Video::from).collect(),
            next_cursor: page.next_cursor,
        }))
    }

    /// Get a video
    ///
    /// With `min_position` (the `position` a command answered with), waits until the catalog
    /// has applied it: read-your-writes over an eventually consistent view.
    #[oai(
        path = "/videos/:id",
        method = "get",
        tag = "Tag::Catalog",
        operation_id = "getVideo"
    )]
    async fn get(
        &self,
        auth: BearerAuth,
        id: Path<String>,
        min_position: Query<Option<u64>>,
        #[oai(name = "If-None-Match")] if_none_match: Header<Option<String>>,
    ) -> Result<VideoResponse, ApiError> {
        let view = self.state.app.catalog().get(&auth.0, &id, min_position.0).await?;
        let etag = format!("\"{}\"", view.version);
        let unchanged = if_none_match.0.as_deref().is_some_and(|tags| {
            tags.split(',')
                .any(|t| t.trim().trim_start_matches("W/") == etag || t.trim() == "*")
        });
        if unchanged {
            return Ok(VideoResponse::NotModified(etag));
        }
        Ok(VideoResponse::Ok(Json(Video::from(view)), etag))
    }

    /// Encoding status
    ///
    /// Progress of the current encoding attempt. Owner or admin. `min_position` waits for
    /// the status view to reach a command's position first.
    #[oai(
        path = "/videos/:id/status",
        method = "get",
        tag = "Tag::Catalog",
        operation_id = "getStatus"
    )]
    async fn status(
        &self,
        auth: BearerAuth,
        id: Path<String>,
        min_position: Query<Option<u64>>,
    ) -> Result<Json<EncodingStatus>, ApiError> {
        let view = self.state.app.catalog().status(&auth.0, &id, min_position.0).await?;
        Ok(Json(EncodingStatus::from(view)))
    }

    /// History
    ///
    /// The video's events, oldest first. Owner or admin. The history is the audit trail and
    /// outlives the video: it is a resource of its own, not under `/v1/videos/{id}` (which a
    /// DELETE removes with everything beneath it), and a deleted video's history ends with
    /// `VideoDeleted`.
    #[oai(
        path = "/history/:id",
        method = "get",
        tag = "Tag::Catalog",
        operation_id = "getHistory"
    )]
    async fn history(
        &self,
        auth: BearerAuth,
        id: Path<String>,
        after_version: Query<Option<u64>>,
        #[oai(validator(minimum(value = "1"), maximum(value = "1000")))] limit: Query<Option<u32>>,
    ) -> Result<Json<HistoryPage>, ApiError> {
        let limit = limit.0.unwrap_or(100) as usize;
        let page = self
            .state
            .app
            .catalog()
            .history(&auth.0, &id, after_version.0.unwrap_or(0), limit)
            .await?;
        Ok(Json(HistoryPage {
            events: page.events.iter().map(history_event).collect(),
            next_after_version: page.next_after_version,
        }))
    }

    /// Live status events
    ///
    /// Server-Sent Events of the video's events as they are recorded; each event's id is
    /// its global position, so a reconnect with `Last-Event-ID` resumes after it. The
    /// stream ends when the video is deleted. Owner or admin. A caller may hold 16 streams
    /// open (the server 1,000 in all); past that the answer is 429 with `Retry-After`.
    #[oai(
        path = "/videos/:id/events",
        method = "get",
        tag = "Tag::Catalog",
        operation_id = "videoEvents"
    )]
    async fn events(
        &self,
        auth: BearerAuth,
        id: Path<String>,
        #[oai(name = "Last-Event-ID")] last_event_id: Header<Option<u64>>,
    ) -> Result<EventStream<EventItemStream>, ApiError> {
        let events = self
            .state
            .app
            .catalog()
            .follow(&auth.0, &id, last_event_id.0.unwrap_or(0), self.state.shutdown.clone())
            .await?;
        let slot = self.state.streams.take(&auth.0.subject)?;
        Ok(video_events(events, slot))
    }

    /// Playback URLs
    ///
    /// Signed, expiring URLs of a published video: HLS master playlist, DASH MPD, poster and
    /// the WebVTT index of scrubbing thumbnails. `min_position` (from the publish command's
    /// answer) waits until the catalog has applied it.
    #[oai(
        path = "/videos/:id/playback",
        method = "get",
        tag = "Tag::Catalog",
        operation_id = "getPlayback"
    )]
    async fn playback(
        &self,
        auth: BearerAuth,
        id: Path<String>,
        min_position: Query<Option<u64>>,
    ) -> Result<Json<Playback>, ApiError> {
        Ok(Json(
            self.state.app.catalog().playback(&auth.0, &id, min_position.0).await?,
        ))
    }
}
