//! The one error shape of the API: `{"error": {"code", "message", "details"}}` with a stable
//! code, and the mapping from the application's refusals (and store errors) to it. Internal
//! error text is logged, never sent.

use poem::http::StatusCode;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object};
use vodsource_app::AppError;
use vodsource_commands::ports::StoreError;

/// An error answer.
#[derive(Debug, Clone, Object)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Clone, Object)]
pub struct ErrorDetail {
    /// Stable machine-readable code, for example `VIDEO_NOT_FOUND`.
    pub code: String,
    /// What happened, for people.
    pub message: String,
    /// Structured context (the field at fault, the versions that differ, …).
    pub details: serde_json::Value,
}

/// Every error an operation can answer with.
#[derive(Debug, Clone, ApiResponse)]
#[oai(bad_request_handler = "from_poem_error")]
pub enum ApiError {
    /// VALIDATION_FAILED: the request is malformed or a value breaks a rule.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// UNAUTHORIZED: no valid bearer token.
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>, #[oai(header = "WWW-Authenticate")] String),
    /// FORBIDDEN: the principal may not do this.
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// VIDEO_NOT_FOUND, NOT_FOUND: no such resource (or one the caller may not see).
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// REQUEST_TIMEOUT: the body arrived too slowly.
    #[oai(status = 408)]
    RequestTimeout(Json<ErrorBody>),
    /// INVALID_STATE, VERSION_CONFLICT, NOT_PUBLISHED, UPLOAD_MISSING, REBUILD_RUNNING,
    /// IDEMPOTENCY_KEY_IN_USE, UPLOAD_IN_PROGRESS, UPLOAD_COMPLETED, OFFSET_MISMATCH (the
    /// upload's offset in `details.offset`).
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>),
    /// UPLOAD_EXPIRED: the upload outlived its `Upload-Expires` and is gone.
    #[oai(status = 410)]
    Gone(Json<ErrorBody>),
    /// PRECONDITION_FAILED: `If-Match` names another version. TUS_VERSION_UNSUPPORTED:
    /// `Tus-Resumable` is not 1.0.0.
    #[oai(status = 412)]
    PreconditionFailed(Json<ErrorBody>),
    /// PAYLOAD_TOO_LARGE: a body or declared size above the limit.
    #[oai(status = 413)]
    PayloadTooLarge(Json<ErrorBody>),
    /// UNSUPPORTED_MEDIA_TYPE: not JSON, or a content type that is not video/*.
    #[oai(status = 415)]
    UnsupportedMediaType(Json<ErrorBody>),
    /// IDEMPOTENCY_KEY_REUSED, SIZE_MISMATCH.
    #[oai(status = 422)]
    Unprocessable(Json<ErrorBody>),
    /// CHECKSUM_MISMATCH: the body's checksum is not the one `Upload-Checksum` names (tus);
    /// nothing was kept.
    #[oai(status = 460)]
    ChecksumMismatch(Json<ErrorBody>),
    /// RATE_LIMITED: the principal's token bucket is empty.
    #[oai(status = 429)]
    RateLimited(
        Json<ErrorBody>,
        #[oai(header = "Retry-After")] u64,
        #[oai(header = "X-RateLimit-Limit")] u32,
        #[oai(header = "X-RateLimit-Remaining")] u32,
        #[oai(header = "X-RateLimit-Reset")] u64,
    ),
    /// INTERNAL: a fault on the server (details are in its log).
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    /// UNAVAILABLE: a dependency cannot be reached; try again.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

fn body(code: &str, message: impl Into<String>, details: serde_json::Value) -> Json<ErrorBody> {
    Json(ErrorBody {
        error: ErrorDetail {
            code: code.to_owned(),
            message: message.into(),
            details,
        },
    })
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn with(status: u16, code: &str, message: impl Into<String>, details: serde_json::Value) -> Self {
        let b = body(code, message, details);
        match status {
            400 => Self::BadRequest(b),
            401 => Self::Unauthorized(b, "Bearer".into()),
            403 => Self::Forbidden(b),
            404 => Self::NotFound(b),
            408 => Self::RequestTimeout(b),
            409 => Self::Conflict(b),
            410 => Self::Gone(b),
            412 => Self::PreconditionFailed(b),
            413 => Self::PayloadTooLarge(b),
            415 => Self::UnsupportedMediaType(b),
            422 => Self::Unprocessable(b),
            460 => Self::ChecksumMismatch(b),
            429 => Self::RateLimited(b, 1, 0, 0, 1),
            503 => Self::Unavailable(b),
            _ => Self::Internal(b),
        }
    }

    /// VALIDATION_FAILED about `field`.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        AppError::invalid(field, message).into()
    }

    /// VIDEO_NOT_FOUND.
    pub fn video_not_found(id: &str) -> Self {
        AppError::video_not_found(id).into()
    }

    /// FORBIDDEN.
    pub fn forbidden(message: impl Into<String>) -> Self {
        AppError::forbidden(message).into()
    }

    /// UNAUTHORIZED.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::with(401, "UNAUTHORIZED", message, serde_json::Value::Null)
    }

    /// INTERNAL, logging what happened.
    pub fn internal(what: &str, error: &dyn std::fmt::Display) -> Self {
        AppError::internal(what, error).into()
    }

    /// The store error as an answer: UNAVAILABLE when it may pass, else INTERNAL.
    pub fn store(what: &str, error: &StoreError) -> Self {
        AppError::store(what, error).into()
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            Self::BadRequest(_) => 400,
            Self::Unauthorized(..) => 401,
            Self::Forbidden(_) => 403,
            Self::NotFound(_) => 404,
            Self::RequestTimeout(_) => 408,
            Self::Conflict(_) => 409,
            Self::Gone(_) => 410,
            Self::PreconditionFailed(_) => 412,
            Self::PayloadTooLarge(_) => 413,
            Self::UnsupportedMediaType(_) => 415,
            Self::Unprocessable(_) => 422,
            Self::ChecksumMismatch(_) => 460,
            Self::RateLimited(..) => 429,
            Self::Internal(_) => 500,
            Self::Unavailable(_) => 503,
        }
    }

    /// The body.
    pub fn body(&self) -> &ErrorBody {
        match self {
            Self::BadRequest(b)
            | Self::Unauthorized(b, _)
            | Self::Forbidden(b)
            | Self::NotFound(b)
            | Self::RequestTimeout(b)
            | Self::Conflict(b)
            | Self::Gone(b)
            | Self::ChecksumMismatch(b)
            | Self::PreconditionFailed(b)
            | Self::PayloadTooLarge(b)
            | Self::UnsupportedMediaType(b)
            | Self::Unprocessable(b)
            | Self::RateLimited(b, ..)
            | Self::Internal(b)
            | Self::Unavailable(b) => &b.0,
        }
    }
}

/// Carries an [`ApiError`] through poem's error type (from a security checker, say) so
/// the bad-request handler can hand back exactly it.
#[derive(Debug)]
pub struct Rejection(pub ApiError);

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.body().error.message)
    }
}

impl std::error::Error for Rejection {}

impl ApiError {
    /// As a poem error that keeps this exact answer (status, code and headers).
    pub fn into_poem(self) -> poem::Error {
        let status = StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        poem::Error::new(Rejection(self), status)
    }
}

/// Turns a request that could not be parsed (bad JSON, unknown field, wrong content type,
/// missing token) into the API's error shape.
pub fn from_poem_error(error: poem::Error) -> ApiError {
    let status = error.status().as_u16();
    match error.downcast::<Rejection>() {
        Ok(rejection) => rejection.0,
        Err(error) => {
            let message = error.to_string();
            match status {
                401 => ApiError::unauthorized("a bearer token is required"),
                413 => ApiError::with(413, "PAYLOAD_TOO_LARGE", message, serde_json::Value::Null),
                415 => ApiError::with(
                    415,
                    "UNSUPPORTED_MEDIA_TYPE",
                    "the body must be application/json",
                    serde_json::Value::Null,
                ),
                _ => ApiError::with(400, "VALIDATION_FAILED", message, serde_json::Value::Null),
            }
        }
    }
}

/// A use case's refusal, with the status of its kind.
impl From<AppError> for ApiError {
    fn from(error: AppError) -> Self {
        Self::with(error.kind.status(), &error.code, error.message, error.details)
    }
}
