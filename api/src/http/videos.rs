//! `/v1/videos`: the commands and queries of one video and the catalog.

use std::collections::BTreeMap;

use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::{EventStream, Json};
use poem_openapi::{ApiResponse, OpenApi, Tags};
use serde::Serialize;
use vodsource_commands::layout;
use vodsource_commands::ports::Access;
use vodsource_domain::VideoCommand;
use vodsource_projections::{CatalogProjector, CatalogView, StatusProjector, StatusView};

use super::auth::{BearerAuth, Principal, Role};
use super::error::ApiError;
use super::events::{history_event, video_events, EventItemStream};
use super::listing::{self, CatalogFilter};
use super::model::{
    Accepted, EncodingStatus, HistoryPage, Playback, RegisterVideo, Registered, UpdateVideo, UploadTarget, Video,
    VideoPage, VideoStatus,
};
use super::signing::{MediaClaims, UploadClaims};
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

const MAX_ID: usize = 64;

/// The form of a video id, for the OpenAPI document ([`check_id`] checks it by hand).
pub const ID_PATTERN: &str = "^[A-Za-z0-9_-]+$";

fn check_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > MAX_ID || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(ApiError::invalid(
            "id",
            format!("a video id is 1 to {MAX_ID} letters, digits, '-' or '_'"),
        ));
    }
    Ok(())
}

fn accepted(id: &str, outcome: &vodsource_commands::CommandOutcome) -> Accepted {
    Accepted {
        video_id: id.to_owned(),
        version: outcome.version,
        position: outcome.position.unwrap_or(0),
    }
}

/// The part of a request an idempotency key is bound to.
#[derive(Serialize)]
struct Fingerprint<'a, B: Serialize> {
    operation: &'static str,
    id: &'a str,
    if_match: Option<u64>,
    body: B,
}

impl VideosApi {
    async fn command(
        &self,
        principal: &Principal,
        id: &str,
        (if_match_header, key): (Option<&str>, Option<&str>),
        operation: &'static str,
        body: impl Serialize,
        command: VideoCommand,
    ) -> Result<Json<Accepted>, ApiError> {
        check_id(id)?;
        let expected = if_match(if_match_header)?;
        let fingerprint = Fingerprint {
            operation,
            id,
            if_match: expected,
            body,
        };
        let state = &self.state;
        state
            .idempotent(principal, key, &fingerprint, async {
                state.writable(principal, id).await?;
                let outcome = state.execute(principal, id, command, expected, operation).await?;
                Ok(accepted(id, &outcome))
            })
            .await
            .map(Json)
    }

    async fn catalog_doc(&self, id: &str) -> Result<Option<CatalogView>, ApiError> {
        let doc = self
            .state
            .views
            .get(CatalogProjector::NAME, id)
            .await
            .map_err(|e| ApiError::store("reading the catalog", &e))?;
        doc.map(|d| serde_json::from_str(&d.body).map_err(|e| ApiError::internal("a catalog document", &e)))
            .transpose()
    }

    /// The video as its owner or an admin sees it (status, history, events). The catalog
    /// knows the owner without replaying the stream, so a page of a long stream's history
    /// costs what the page does; a video it does not list yet (just registered) is judged
    /// on its events.
    async fn private(&self, principal: &Principal, id: &str) -> Result<(), ApiError> {
        check_id(id)?;
        match self.catalog_doc(id).await? {
            Some(view) if principal.owns_or_admin(&view.owner) => Ok(()),
            Some(_) => Err(ApiError::video_not_found(id)),
            None => self.state.owned(principal, id).await.map(|_| ()),
        }
    }
}

#[OpenApi(prefix_path = "/v1")]
impl VideosApi {
    /// Register a video
    ///
    /// Records the video and returns where to upload its source. Needs the creator role.
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
        let principal = auth.0;
        principal.require(Role::Creator)?;
        let request = body.0;
        if !vodsource_domain::is_video_type(&request.content_type) {
            return Err(ApiError::with(
                415,
                "UNSUPPORTED_MEDIA_TYPE",
                format!("content_type must be video/*, got {:?}", request.content_type),
                serde_json::json!({ "field": "content_type" }),
            ));
        }
        let max = self.state.commands.services().policy.max_source_bytes;
        if request.size_bytes > max {
            return Err(ApiError::with(
                413,
                "PAYLOAD_TOO_LARGE",
                format!("size_bytes {} is above the limit of {max} bytes", request.size_bytes),
                serde_json::json!({ "field": "size_bytes", "limit": max }),
            ));
        }
        let state = &self.state;
        let fingerprint = Fingerprint {
            operation: "registerVideo",
            id: "",
            if_match: None,
            body: &request,
        };
        let registered = state
            .idempotent(&principal, idempotency_key.0.as_deref(), &fingerprint, async {
                let id = uuid::Uuid::now_v7().to_string();
                let command = VideoCommand::Register {
                    owner: principal.subject.clone(),
                    title: request.title.0.clone(),
                    description: request.description.clone().map(|d| d.0).unwrap_or_default(),
                    tags: request.tags.iter().flatten().map(|t| t.0.clone()).collect(),
                    filename: request.filename.0.clone(),
                    content_type: request.content_type.0.clone(),
                    size_bytes: request.size_bytes,
                };
                let expires_at = state.now()
                    + chrono::Duration::from_std(state.settings.url_ttl).unwrap_or(chrono::Duration::hours(1));
                let key = layout::source_key(&id, &request.filename);
                // Straight to the object store where it presigns (S3); else through this API. Signed
                // before the registration is recorded, so a failure here records nothing.
                // A filename that makes no valid key is refused by the command below.
                let presigned = match vodsource_commands::ports::check_key(&key) {
                    Ok(()) => state
                        .objects
                        .presign(
                            &key,
                            Access::Write {
                                length: request.size_bytes,
                            },
                            state.settings.url_ttl,
                        )
                        .await
                        .map_err(|e| ApiError::store("object store", &e))?,
                    Err(_) => None,
                };
                let url = match presigned {
                    Some(url) => url,
                    None => {
                        let token = state.signer.sign(&UploadClaims {
                            v: id.clone(),
                            k: key,
                            s: request.size_bytes,
                            e: expires_at.timestamp(),
                        });
                        format!("{}/uploads/{token}", state.settings.public_url)
                    }
                };
                let outcome = state.execute(&principal, &id, command, Some(0), "register").await?;
                let mut headers = BTreeMap::new();
                headers.insert("Content-Type".to_owned(), request.content_type.0.clone());
                Ok(Registered {
                    upload: UploadTarget {
                        method: "PUT".into(),
                        url,
                        headers,
                        expires_at,
                    },
                    video_id: id,
                    version: outcome.version,
                    position: outcome.position.unwrap_or(0),
                })
            })
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
        let principal = auth.0;
        check_id(&id)?;
        let loaded = self.state.writable(&principal, &id).await?;
        let key = layout::source_key(&id, &loaded.video.filename);
        // Not while this server is still writing an upload of it (it would record the bytes
        // the upload is about to replace).
        let _upload = self.state.uploads.begin(&id)?;
        let head = |key: String| async move {
            self.state
                .objects
                .head(&key)
                .await
                .map_err(|e| ApiError::store("checking an upload", &e))
                .map(|object| object.map(|o| (key, o)))
        };
        let mut found = head(key.clone()).await?;
        let legacy = layout::legacy_source_key(&id, &loaded.video.filename);
        if found.is_none() && vodsource_commands::ports::check_key(&legacy).is_ok() {
            found = head(legacy).await?;
        }
        let Some((key, object)) = found else {
            if loaded.video.deleted {
                return Err(ApiError::video_not_found(&id));
            }
            return Err(ApiError::with(
                409,
                "UPLOAD_MISSING",
                "no source has been uploaded for this video yet",
                serde_json::json!({ "object_key": key }),
            ));
        };
        let size = object.size;
        self.command(
            &principal,
            &id,
            (if_match.0.as_deref(), idempotency_key.0.as_deref()),
            "completeUpload",
            size,
            VideoCommand::CompleteUpload {
                object_key: key,
                size_bytes: size,
                checksum: object.etag,
            },
        )
        .await
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
        if change.title.is_none() && change.description.is_none() && change.tags.is_none() {
            return Err(ApiError::invalid(
                "body",
                "name at least one of title, description, tags",
            ));
        }
        self.command(
            &auth.0,
            &id,
            (if_match.0.as_deref(), idempotency_key.0.as_deref()),
            "updateVideo",
            &change,
            VideoCommand::UpdateMetadata {
                title: change.title.clone().map(|t| t.0),
                description: change.description.clone().map(|d| d.0),
                tags: change.tags.clone().map(|tags| tags.into_iter().map(|t| t.0).collect()),
            },
        )
        .await
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
        self.command(
            &auth.0,
            &id,
            (if_match.0.as_deref(), idempotency_key.0.as_deref()),
            "publishVideo",
            (),
            VideoCommand::Publish,
        )
        .await
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
        self.command(
            &auth.0,
            &id,
            (if_match.0.as_deref(), idempotency_key.0.as_deref()),
            "unpublishVideo",
            (),
            VideoCommand::Unpublish,
        )
        .await
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
        self.command(
            &auth.0,
            &id,
            (if_match.0.as_deref(), idempotency_key.0.as_deref()),
            "retryEncoding",
            (),
            VideoCommand::RetryEncoding,
        )
        .await
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
        let accepted = self
            .command(
                &auth.0,
                &id,
                (if_match.0.as_deref(), idempotency_key.0.as_deref()),
                "deleteVideo",
                (),
                VideoCommand::Delete { reason: None },
            )
            .await?;
        // The event is the truth; media goes after it (a failure here leaves files to sweep,
        // never a live video without media).
        for prefix in layout::video_prefixes(&id.0) {
            if let Err(e) = self.state.objects.delete_prefix(&prefix).await {
                tracing::warn!(video_id = %id.0, prefix, error = %e, "could not remove media of a deleted video");
            }
        }
        Ok(accepted)
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
        self.state.caught_up(CatalogProjector::NAME, min_position.0).await?;
        let filter = CatalogFilter {
            status: status.0,
            published: published.0,
            tag: tag.0,
            owner: owner.0,
        };
        let Some(filter) = filter.for_principal(&auth.0) else {
            return Ok(Json(VideoPage {
                items: Vec::new(),
                next_cursor: None,
            }));
        };
        let limit = limit.0.unwrap_or(20) as usize;
        Ok(Json(
            listing::page(self.state.views.as_ref(), &filter, cursor.0.as_deref(), limit).await?,
        ))
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
        check_id(&id)?;
        self.state.caught_up(CatalogProjector::NAME, min_position.0).await?;
        let principal = auth.0;
        match self.catalog_doc(&id).await? {
            Some(view) if view.published || principal.owns_or_admin(&view.owner) => {
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
            _ => Err(ApiError::video_not_found(&id)),
        }
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
        self.private(&auth.0, &id).await?;
        self.state.caught_up(StatusProjector::NAME, min_position.0).await?;
        let doc = self
            .state
            .views
            .get(StatusProjector::NAME, &id)
            .await
            .map_err(|e| ApiError::store("reading the status", &e))?
            .ok_or_else(|| ApiError::video_not_found(&id))?;
        let view: StatusView =
            serde_json::from_str(&doc.body).map_err(|e| ApiError::internal("a status document", &e))?;
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
        self.private(&auth.0, &id).await?;
        let limit = limit.0.unwrap_or(100) as usize;
        let after = after_version.0.unwrap_or(0);
        let mut events = self
            .state
            .log
            .read_stream(&id, after, limit + 1)
            .await
            .map_err(|e| ApiError::store("reading history", &e))?;
        let more = events.len() > limit;
        events.truncate(limit);
        let next_after_version = if more { events.last().map(|e| e.version) } else { None };
        Ok(Json(HistoryPage {
            events: events.iter().map(history_event).collect(),
            next_after_version,
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
        self.private(&auth.0, &id).await?;
        let slot = self.state.streams.take(&auth.0.subject)?;
        Ok(video_events(&self.state, id.0, last_event_id.0.unwrap_or(0), slot))
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
        check_id(&id)?;
        self.state.caught_up(CatalogProjector::NAME, min_position.0).await?;
        let principal = auth.0;
        let view = match self.catalog_doc(&id).await? {
            Some(view) if view.published || principal.owns_or_admin(&view.owner) => view,
            _ => return Err(ApiError::video_not_found(&id)),
        };
        if !view.published {
            return Err(ApiError::with(
                409,
                "NOT_PUBLISHED",
                "the video is not published",
                serde_json::json!({ "status": VideoStatus::from_stage(view.status).as_str() }),
            ));
        }
        let Some(manifests) = view.manifests else {
            return Err(ApiError::with(
                409,
                "NOT_ENCODED",
                "the video has no manifests",
                serde_json::Value::Null,
            ));
        };
        let state = &self.state;
        let expires_at =
            state.now() + chrono::Duration::from_std(state.settings.url_ttl).unwrap_or(chrono::Duration::hours(1));
        let token = state.signer.sign(&MediaClaims {
            v: id.0.clone(),
            e: expires_at.timestamp(),
        });
        let prefix = layout::media_prefix(&id.0);
        let url = |key: &str| {
            key.strip_prefix(&prefix)
                .map(|rest| format!("{}/media/{token}/{}/{rest}", state.settings.public_url, id.0))
        };
        let (Some(hls_url), Some(dash_url)) = (url(&manifests.hls_master_key), url(&manifests.dash_mpd_key)) else {
            return Err(ApiError::internal(
                "playback",
                &format!("manifests of {} are outside {prefix}", id.0),
            ));
        };
        // A poster is one request: straight from the CDN when there is one.
        let grant = state
            .settings
            .cdn
            .as_ref()
            .map(|cdn| cdn.grant(&id.0, expires_at.timestamp()));
        let poster = |key: &str| match &grant {
            Some(grant) => key.strip_prefix(&prefix).map(|rest| grant.url(rest)),
            None => url(key),
        };
        Ok(Json(Playback {
            video_id: id.0.clone(),
            hls_url,
            dash_url,
            poster_url: view.thumbnail_key.as_deref().and_then(poster),
            thumbnails_url: view.thumbnails_vtt_key.as_deref().and_then(url),
            expires_at,
        }))
    }
}
