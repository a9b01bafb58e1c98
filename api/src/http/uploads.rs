//! `/v1/uploads`: resumable uploads of a video's source over tus 1.0 (core, creation,
//! creation-with-upload, termination, expiration, checksum). The protocol's headers are
//! operation parameters and response headers here, so the OpenAPI document states the
//! protocol as served; the use case is `vodsource_app::resumable`.

use chrono::{DateTime, Utc};
use poem::{Body, Request, RequestBody};
use poem_openapi::param::{Header, Path};
use poem_openapi::payload::Payload;
use poem_openapi::registry::{MetaMediaType, MetaRequest, MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::{ApiExtractor, ApiExtractorType, ApiResponse, ExtractParamOptions, OpenApi, Tags};
use vodsource_app::resumable::{Checksum, UploadState, CHECKSUM_ALGORITHMS, TUS_EXTENSIONS, TUS_VERSION};

use super::auth::BearerAuth;
use super::error::ApiError;
use super::state::AppState;

/// The content type of tus request bodies.
pub const CHUNK_TYPE: &str = "application/offset+octet-stream";

#[derive(Tags)]
enum Tag {
    /// Resumable uploads of a video's source (tus 1.0).
    Uploads,
}

/// The tus endpoints.
pub struct UploadsApi {
    pub(super) state: AppState,
}

/// A request body of bytes at an upload's offset (`application/offset+octet-stream`).
pub struct Chunk(pub Body);

impl Payload for Chunk {
    const CONTENT_TYPE: &'static str = CHUNK_TYPE;

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            format: Some("binary"),
            ..MetaSchema::new("string")
        }))
    }
}

impl<'a> ApiExtractor<'a> for Chunk {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];
    type ParamType = ();
    type ParamRawType = ();

    fn register(_registry: &mut Registry) {}

    fn request_meta() -> Option<MetaRequest> {
        Some(chunk_meta("The bytes at `Upload-Offset`.", true))
    }

    async fn from_request(
        request: &'a Request,
        body: &mut RequestBody,
        _options: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        match request.content_type() {
            Some(t) if t == CHUNK_TYPE => Ok(Self(body.take()?)),
            other => Err(unsupported(other)),
        }
    }
}

fn chunk_meta(description: &'static str, required: bool) -> MetaRequest {
    MetaRequest {
        description: Some(description),
        content: vec![MetaMediaType {
            content_type: CHUNK_TYPE,
            schema: Chunk::schema_ref(),
        }],
        required,
    }
}

fn unsupported(content_type: Option<&str>) -> poem::Error {
    match content_type {
        Some(t) => poem_openapi::error::ContentTypeError::NotSupported {
            content_type: t.to_owned(),
        }
        .into(),
        None => poem_openapi::error::ContentTypeError::ExpectContentType.into(),
    }
}

/// A creation's optional first bytes (creation-with-upload): a body of
/// `application/offset+octet-stream`, or none at all.
pub struct FirstChunk(pub Option<Body>);

impl<'a> ApiExtractor<'a> for FirstChunk {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];
    type ParamType = ();
    type ParamRawType = ();

    fn register(_registry: &mut Registry) {}

    fn request_meta() -> Option<MetaRequest> {
        Some(chunk_meta(
            "The upload's first bytes (creation-with-upload); optional.",
            false,
        ))
    }

    async fn from_request(
        request: &'a Request,
        body: &mut RequestBody,
        _options: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        match request.content_type() {
            None => Ok(Self(None)),
            Some(t) if t == CHUNK_TYPE => Ok(Self(Some(body.take()?))),
            other => Err(unsupported(other)),
        }
    }
}

#[derive(ApiResponse)]
enum OptionsResponse {
    /// What this server supports of tus.
    #[oai(status = 204)]
    Supported(
        #[oai(header = "Tus-Resumable")] String,
        #[oai(header = "Tus-Version")] String,
        #[oai(header = "Tus-Extension")] String,
        #[oai(header = "Tus-Max-Size")] u64,
        #[oai(header = "Tus-Checksum-Algorithm")] String,
    ),
}

#[derive(ApiResponse)]
enum CreatedResponse {
    /// Created; send the bytes to `Location` with PATCH. `Upload-Offset` says how many of
    /// the request's bytes were kept (creation-with-upload).
    #[oai(status = 201)]
    Created(
        #[oai(header = "Location")] String,
        #[oai(header = "Tus-Resumable")] String,
        #[oai(header = "Upload-Offset")] u64,
        #[oai(header = "Upload-Expires")] String,
    ),
}

#[derive(ApiResponse)]
enum OffsetResponse {
    /// The upload's offset: the bytes stored and acknowledged.
    #[oai(status = 200)]
    Ok(
        #[oai(header = "Tus-Resumable")] String,
        #[oai(header = "Upload-Offset")] u64,
        #[oai(header = "Upload-Length")] u64,
        #[oai(header = "Upload-Metadata")] String,
        #[oai(header = "Upload-Expires")] String,
        #[oai(header = "Cache-Control")] String,
    ),
}

#[derive(ApiResponse)]
enum AppendedResponse {
    /// Stored; the upload is now at `Upload-Offset`. At the declared length the source is
    /// recorded and encoding starts.
    #[oai(status = 204)]
    Appended(
        #[oai(header = "Tus-Resumable")] String,
        #[oai(header = "Upload-Offset")] u64,
        #[oai(header = "Upload-Expires")] String,
    ),
}

#[derive(ApiResponse)]
enum TerminatedResponse {
    /// The upload and its bytes are gone.
    #[oai(status = 204)]
    Terminated(#[oai(header = "Tus-Resumable")] String),
}

/// RFC 9110's date, as `Upload-Expires` is written.
fn http_date(at: DateTime<Utc>) -> String {
    at.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// Refuses a request of another tus version than the one served (412, with `Tus-Version`).
fn check_version(header: &Header<Option<String>>) -> Result<(), ApiError> {
    match header.0.as_deref() {
        Some(TUS_VERSION) => Ok(()),
        other => Err(ApiError::with(
            412,
            "TUS_VERSION_UNSUPPORTED",
            format!("Tus-Resumable must be {TUS_VERSION}, not {other:?}"),
            serde_json::json!({ "supported": TUS_VERSION }),
        )),
    }
}

/// `Upload-Checksum`, if it names one (an empty header names none).
fn checksum(header: &Header<Option<String>>) -> Result<Option<Checksum>, ApiError> {
    Ok(header
        .0
        .as_deref()
        .filter(|h| !h.is_empty())
        .map(Checksum::parse)
        .transpose()?)
}

fn location(state: &UploadState) -> String {
    format!("/v1/uploads/{}", state.id)
}

#[OpenApi(prefix_path = "/v1")]
impl UploadsApi {
    /// What tus this server speaks
    ///
    /// tus's discovery: the version, extensions, largest upload and checksum algorithms.
    #[oai(
        path = "/uploads",
        method = "options",
        tag = "Tag::Uploads",
        operation_id = "tusOptions"
    )]
    async fn options(&self) -> OptionsResponse {
        OptionsResponse::Supported(
            TUS_VERSION.into(),
            TUS_VERSION.into(),
            TUS_EXTENSIONS.into(),
            self.state.app.videos().max_source_bytes(),
            CHECKSUM_ALGORITHMS.into(),
        )
    }

    /// Create a resumable upload
    ///
    /// tus creation of an upload of the source of the video `Upload-Metadata` names
    /// (`video_id <base64 of its id>`); `Upload-Length` is the size it was registered with.
    /// A body of `application/offset+octet-stream` is its first bytes. The upload expires
    /// `Upload-Expires`, unless a request moves it on.
    #[oai(
        path = "/uploads",
        method = "post",
        tag = "Tag::Uploads",
        operation_id = "createUpload"
    )]
    async fn create(
        &self,
        auth: BearerAuth,
        #[oai(name = "Tus-Resumable")] tus_resumable: Header<Option<String>>,
        #[oai(name = "Upload-Length")] upload_length: Header<u64>,
        #[oai(name = "Upload-Metadata")] upload_metadata: Header<String>,
        #[oai(name = "Upload-Checksum")] upload_checksum: Header<Option<String>>,
        body: FirstChunk,
    ) -> Result<CreatedResponse, ApiError> {
        check_version(&tus_resumable)?;
        let checksum = checksum(&upload_checksum)?;
        let resumable = self.state.app.resumable();
        let mut state = resumable.create(&auth.0, upload_length.0, &upload_metadata.0).await?;
        if let Some(body) = body.0 {
            state = resumable
                .append(&auth.0, &state.id, 0, checksum, Box::new(body.into_async_read()))
                .await?;
        }
        Ok(CreatedResponse::Created(
            location(&state),
            TUS_VERSION.into(),
            state.offset,
            http_date(state.expires_at),
        ))
    }

    /// An upload's offset
    ///
    /// How many bytes are stored: resume from there.
    #[oai(
        path = "/uploads/:upload_id",
        method = "head",
        tag = "Tag::Uploads",
        operation_id = "getUploadOffset"
    )]
    async fn offset(
        &self,
        auth: BearerAuth,
        upload_id: Path<String>,
        #[oai(name = "Tus-Resumable")] tus_resumable: Header<Option<String>>,
    ) -> Result<OffsetResponse, ApiError> {
        check_version(&tus_resumable)?;
        let state = self.state.app.resumable().state(&auth.0, &upload_id).await?;
        Ok(OffsetResponse::Ok(
            TUS_VERSION.into(),
            state.offset,
            state.length,
            state.metadata,
            http_date(state.expires_at),
            "no-store".into(),
        ))
    }

    /// Send bytes of an upload
    ///
    /// Stores the body at `Upload-Offset`, which must be the upload's (409 otherwise, with
    /// the upload's offset in the details). With `Upload-Checksum`, a body whose checksum
    /// differs is refused with 460 and nothing is kept; without one, the bytes that arrive
    /// before a connection breaks are kept. At the declared length the source is recorded.
    #[oai(
        path = "/uploads/:upload_id",
        method = "patch",
        tag = "Tag::Uploads",
        operation_id = "appendUpload"
    )]
    async fn append(
        &self,
        auth: BearerAuth,
        upload_id: Path<String>,
        #[oai(name = "Tus-Resumable")] tus_resumable: Header<Option<String>>,
        #[oai(name = "Upload-Offset")] upload_offset: Header<u64>,
        #[oai(name = "Upload-Checksum")] upload_checksum: Header<Option<String>>,
        body: Chunk,
    ) -> Result<AppendedResponse, ApiError> {
        check_version(&tus_resumable)?;
        let checksum = checksum(&upload_checksum)?;
        let state = self
            .state
            .app
            .resumable()
            .append(
                &auth.0,
                &upload_id,
                upload_offset.0,
                checksum,
                Box::new(body.0.into_async_read()),
            )
            .await?;
        Ok(AppendedResponse::Appended(
            TUS_VERSION.into(),
            state.offset,
            http_date(state.expires_at),
        ))
    }

    /// Terminate an upload
    ///
    /// Removes an unfinished upload and its bytes.
    #[oai(
        path = "/uploads/:upload_id",
        method = "delete",
        tag = "Tag::Uploads",
        operation_id = "terminateUpload"
    )]
    async fn terminate(
        &self,
        auth: BearerAuth,
        upload_id: Path<String>,
        #[oai(name = "Tus-Resumable")] tus_resumable: Header<Option<String>>,
    ) -> Result<TerminatedResponse, ApiError> {
        check_version(&tus_resumable)?;
        self.state.app.resumable().terminate(&auth.0, &upload_id).await?;
        Ok(TerminatedResponse::Terminated(TUS_VERSION.into()))
    }
}
