//! `/v1/direct/{grant}/s3/multipart…`: a source's parts sent straight to the bucket, in Uppy
//! Companion's S3 multipart protocol (so `@uppy/aws-s3` with `companionEndpoint` set to the
//! registration's `multipart.endpoint` needs nothing else). The grant in the path authorizes
//! every call and is rate limited per video; the use case is
//! `vodsource_app::resumable` (`direct_*`).

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};
use vodsource_app::resumable::DirectUpload;
use vodsource_app::{Principal, Role};

use super::auth::Gate;
use super::error::ApiError;
use super::state::AppState;

#[derive(Tags)]
enum Tag {
    /// A source's parts straight to the object store (S3 multipart, Uppy Companion's
    /// protocol), for object stores that take them.
    DirectUploads,
}

/// The direct-upload endpoints.
pub struct DirectApi {
    pub(super) state: AppState,
}

/// What Uppy sends to start an upload; this service knows the file from the registration
/// and only checks the form.
#[derive(Debug, Object)]
struct CreateMultipart {
    /// The file's name (the object's key was fixed at registration).
    #[oai(validator(max_length = 1024))]
    filename: Option<String>,
    /// The file's type.
    #[oai(rename = "type", validator(max_length = 255))]
    content_type: Option<String>,
    /// The file's metadata, as Uppy sends it.
    metadata: Option<BTreeMap<String, serde_json::Value>>,
}

/// A started upload.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
struct MultipartCreated {
    /// The upload's id: the path segment of every other call.
    upload_id: String,
    /// The object the parts become.
    key: String,
    /// Every part but the last is exactly this many bytes.
    part_size: u64,
    /// How many parts.
    part_count: u32,
    /// Complete the upload before this time.
    expires_at: DateTime<Utc>,
}

impl From<DirectUpload> for MultipartCreated {
    fn from(upload: DirectUpload) -> Self {
        Self {
            upload_id: upload.id,
            key: upload.key,
            part_size: upload.part_size,
            part_count: upload.parts,
            expires_at: upload.expires_at,
        }
    }
}

/// Where to send one part.
#[derive(Debug, Object)]
struct PartUrl {
    /// `PUT` the part's bytes here.
    url: String,
    /// Seconds the URL works for.
    expires: i64,
    /// What the request must carry: `Content-Length` is signed, so exactly this length.
    headers: BTreeMap<String, String>,
}

/// A part the bucket holds.
#[derive(Debug, Object)]
#[oai(rename_all = "PascalCase")]
struct StoredPart {
    /// Its number, from 1.
    part_number: u32,
    /// Its size in bytes.
    size: u64,
    /// The bucket's tag of it.
    #[oai(rename = "ETag")]
    etag: String,
}

/// A part as Uppy names it when completing.
#[derive(Debug, Object)]
#[oai(rename_all = "PascalCase")]
struct NamedPart {
    /// Its number.
    #[oai(validator(minimum(value = "1"), maximum(value = "10000")))]
    part_number: u32,
    /// Its ETag.
    #[oai(rename = "ETag", validator(max_length = 64, pattern = "^[!-~]*$"))]
    etag: String,
}

/// What Uppy sends to complete; the parts assembled are the ones the bucket holds.
#[derive(Debug, Object)]
struct CompleteMultipart {
    /// The parts, as the client saw them (at most 1,000: 8 GiB in 8 MiB parts; the body must
    /// fit the JSON limit).
    #[oai(validator(max_items = 1000))]
    parts: Option<Vec<NamedPart>>,
}

/// A completed upload.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
struct MultipartCompleted {
    /// The video's URL in this API.
    location: String,
    /// The object's key.
    key: String,
    /// The video whose source it is (now recorded; encoding has started).
    video_id: String,
}

#[derive(ApiResponse)]
enum CreatedResponse {
    /// Started; sign and send parts 1 to `partCount`.
    #[oai(status = 200)]
    Ok(Json<MultipartCreated>),
}

#[derive(ApiResponse)]
enum PartResponse {
    /// The part's URL.
    #[oai(status = 200)]
    Ok(Json<PartUrl>, #[oai(header = "Cache-Control")] String),
}

#[derive(ApiResponse)]
enum PartsResponse {
    /// The parts the bucket holds, in order: resume by sending the others.
    #[oai(status = 200)]
    Ok(Json<Vec<StoredPart>>, #[oai(header = "Cache-Control")] String),
}

#[derive(ApiResponse)]
enum CompletedResponse {
    /// Assembled and recorded.
    #[oai(status = 200)]
    Ok(Json<MultipartCompleted>),
}

#[derive(ApiResponse)]
enum AbortedResponse {
    /// The upload and its parts are gone.
    #[oai(status = 204)]
    Aborted,
}

impl DirectApi {
    /// Admits a call of a valid grant, one bucket of requests per video.
    fn admit(&self, gate: &Gate, grant: &str) -> Result<(), ApiError> {
        let video = self.state.app.resumable().direct_video(grant)?;
        gate.admit(&Principal::new(format!("direct/{video}"), Role::Creator))
    }
}

#[OpenApi(prefix_path = "/v1")]
impl DirectApi {
    /// Start a direct upload
    ///
    /// Starts a multipart upload of the source the grant names (Companion's `POST
    /// /s3/multipart`). Only where the object store takes parts from clients (409
    /// DIRECT_UPLOAD_UNAVAILABLE on a local folder).
    #[oai(
        path = "/direct/:grant/s3/multipart",
        method = "post",
        tag = "Tag::DirectUploads",
        operation_id = "createDirectUpload"
    )]
    async fn create(
        &self,
        gate: Data<&Arc<Gate>>,
        grant: Path<String>,
        body: Json<CreateMultipart>,
    ) -> Result<CreatedResponse, ApiError> {
        self.admit(&gate, &grant)?;
        let _ = body;
        let upload = self.state.app.resumable().direct_create(&grant).await?;
        Ok(CreatedResponse::Ok(Json(upload.into())))
    }

    /// Sign a part
    ///
    /// The URL to `PUT` part `part_number` to, with exactly the part's length (every part
    /// is `partSize` bytes but the last).
    #[oai(
        path = "/direct/:grant/s3/multipart/:upload_id/:part_number",
        method = "get",
        tag = "Tag::DirectUploads",
        operation_id = "signDirectPart"
    )]
    async fn sign(
        &self,
        gate: Data<&Arc<Gate>>,
        grant: Path<String>,
        upload_id: Path<String>,
        #[oai(validator(minimum(value = "1"), maximum(value = "10000")))] part_number: Path<u32>,
        /// The object's key, as Uppy repeats it (unused: the upload knows its key).
        #[oai(validator(max_length = 1024))]
        key: Query<Option<String>>,
    ) -> Result<PartResponse, ApiError> {
        self.admit(&gate, &grant)?;
        let _ = key;
        let part = self
            .state
            .app
            .resumable()
            .direct_sign(&grant, &upload_id, part_number.0)
            .await?;
        let expires = (part.expires_at - Utc::now()).num_seconds().max(0);
        let headers = BTreeMap::from([("Content-Length".to_owned(), part.length.to_string())]);
        Ok(PartResponse::Ok(
            Json(PartUrl {
                url: part.url,
                expires,
                headers,
            }),
            "no-store".into(),
        ))
    }

    /// List a direct upload's parts
    ///
    /// The parts the bucket holds (S3's ListParts), in order.
    #[oai(
        path = "/direct/:grant/s3/multipart/:upload_id",
        method = "get",
        tag = "Tag::DirectUploads",
        operation_id = "listDirectParts"
    )]
    async fn parts(
        &self,
        gate: Data<&Arc<Gate>>,
        grant: Path<String>,
        upload_id: Path<String>,
        /// The object's key, as Uppy repeats it (unused).
        #[oai(validator(max_length = 1024))]
        key: Query<Option<String>>,
    ) -> Result<PartsResponse, ApiError> {
        self.admit(&gate, &grant)?;
        let _ = key;
        let (_, parts) = self.state.app.resumable().direct_parts(&grant, &upload_id).await?;
        let parts = parts
            .into_iter()
            .map(|p| StoredPart {
                part_number: p.number,
                size: p.size,
                etag: p.etag,
            })
            .collect();
        Ok(PartsResponse::Ok(Json(parts), "no-store".into()))
    }

    /// Complete a direct upload
    ///
    /// Assembles parts 1 to `partCount` as the bucket holds them, each of its exact size
    /// (409 PARTS_INCOMPLETE names the ones missing or of another size), and records the
    /// source: encoding starts. A retry after success answers the same.
    #[oai(
        path = "/direct/:grant/s3/multipart/:upload_id/complete",
        method = "post",
        tag = "Tag::DirectUploads",
        operation_id = "completeDirectUpload"
    )]
    async fn complete(
        &self,
        gate: Data<&Arc<Gate>>,
        grant: Path<String>,
        upload_id: Path<String>,
        /// The object's key, as Uppy repeats it (unused).
        #[oai(validator(max_length = 1024))]
        key: Query<Option<String>>,
        body: Json<CompleteMultipart>,
    ) -> Result<CompletedResponse, ApiError> {
        self.admit(&gate, &grant)?;
        let _ = (key, body);
        let upload = self.state.app.resumable().direct_complete(&grant, &upload_id).await?;
        Ok(CompletedResponse::Ok(Json(MultipartCompleted {
            location: format!("{}/v1/videos/{}", self.state.app.settings().public_url, upload.video_id),
            key: upload.key,
            video_id: upload.video_id,
        })))
    }

    /// Abort a direct upload
    ///
    /// Removes an unfinished upload and its parts.
    #[oai(
        path = "/direct/:grant/s3/multipart/:upload_id",
        method = "delete",
        tag = "Tag::DirectUploads",
        operation_id = "abortDirectUpload"
    )]
    async fn abort(
        &self,
        gate: Data<&Arc<Gate>>,
        grant: Path<String>,
        upload_id: Path<String>,
        /// The object's key, as Uppy repeats it (unused).
        #[oai(validator(max_length = 1024))]
        key: Query<Option<String>>,
    ) -> Result<AbortedResponse, ApiError> {
        self.admit(&gate, &grant)?;
        let _ = key;
        self.state.app.resumable().direct_abort(&grant, &upload_id).await?;
        Ok(AbortedResponse::Aborted)
    }
}
