//! What a use case answers when it refuses: a kind (what the client should do about it), a
//! stable code, a message for people and structured details. Transports map the kind (HTTP
//! to a status); internal error text is logged here, never handed out.

use vodsource_commands::ports::StoreError;
use vodsource_commands::CommandError;
use vodsource_domain::VideoError;

/// What kind of refusal, which decides what a client can do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request breaks a rule; change it.
    Invalid,
    /// The principal may not do this.
    Forbidden,
    /// No such resource, or one the principal may not see.
    NotFound,
    /// The resource's state does not allow it now.
    Conflict,
    /// The version the request names is not the current one.
    PreconditionFailed,
    /// A body or declared size above the limit.
    TooLarge,
    /// A content type the service does not take.
    UnsupportedType,
    /// Well-formed, but it contradicts what is recorded (sizes, reused keys).
    Unprocessable,
    /// The resource existed and is gone for good (an expired upload).
    Gone,
    /// A body's checksum is not the one its request named (tus's 460); nothing was kept.
    ChecksumMismatch,
    /// A dependency cannot be reached; retry.
    Unavailable,
    /// A fault of the service (details in its log).
    Internal,
}

impl ErrorKind {
    /// The HTTP status of this kind (RFC 9110). The HTTP layer answers with it, and an
    /// idempotency key's stored answer records it.
    pub const fn status(self) -> u16 {
        match self {
            Self::Invalid => 400,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::Conflict => 409,
            Self::PreconditionFailed => 412,
            Self::TooLarge => 413,
            Self::UnsupportedType => 415,
            Self::Unprocessable => 422,
            Self::Gone => 410,
            Self::ChecksumMismatch => 460,
            Self::Unavailable => 503,
            Self::Internal => 500,
        }
    }

    /// The kind a recorded status stands for (anything unknown is internal).
    pub const fn from_status(status: u16) -> Self {
        match status {
            400 => Self::Invalid,
            403 => Self::Forbidden,
            404 => Self::NotFound,
            409 => Self::Conflict,
            412 => Self::PreconditionFailed,
            413 => Self::TooLarge,
            415 => Self::UnsupportedType,
            422 => Self::Unprocessable,
            410 => Self::Gone,
            460 => Self::ChecksumMismatch,
            503 => Self::Unavailable,
            _ => Self::Internal,
        }
    }
}

/// A refusal of a use case.
#[derive(Debug, Clone, PartialEq)]
pub struct AppError {
    /// What kind.
    pub kind: ErrorKind,
    /// Stable machine-readable code, for example `VIDEO_NOT_FOUND`.
    pub code: String,
    /// What happened, for people.
    pub message: String,
    /// Structured context (the field at fault, the versions that differ, …).
    pub details: serde_json::Value,
}

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for AppError {}

impl AppError {
    /// A refusal of this kind, code and message.
    pub fn new(kind: ErrorKind, code: &str, message: impl Into<String>, details: serde_json::Value) -> Self {
        Self {
            kind,
            code: code.to_owned(),
            message: message.into(),
            details,
        }
    }

    /// VALIDATION_FAILED about `field`.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::new(
            ErrorKind::Invalid,
            "VALIDATION_FAILED",
            message,
            serde_json::json!({ "field": field }),
        )
    }

    /// VIDEO_NOT_FOUND.
    pub fn video_not_found(id: &str) -> Self {
        Self::new(
            ErrorKind::NotFound,
            "VIDEO_NOT_FOUND",
            format!("no video {id:?}"),
            serde_json::json!({ "video_id": id }),
        )
    }

    /// FORBIDDEN.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, "FORBIDDEN", message, serde_json::Value::Null)
    }

    /// A conflict with the resource's state under `code`.
    pub fn conflict(code: &str, message: impl Into<String>, details: serde_json::Value) -> Self {
        Self::new(ErrorKind::Conflict, code, message, details)
    }

    /// INTERNAL, logging what happened.
    pub fn internal(what: &str, error: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %error, "{what}");
        Self::new(
            ErrorKind::Internal,
            "INTERNAL",
            "internal error; see the server log",
            serde_json::Value::Null,
        )
    }

    /// A store's error: UNAVAILABLE when it may pass (retry), else INTERNAL. Either way the
    /// store's text goes to the log only.
    pub fn store(what: &str, error: &StoreError) -> Self {
        if error.is_transient() {
            tracing::warn!(error = %error, "{what}");
            return Self::new(
                ErrorKind::Unavailable,
                "UNAVAILABLE",
                "a dependency is unavailable; try again",
                serde_json::Value::Null,
            );
        }
        Self::internal(what, error)
    }

    /// What a command's refusal of video `id` means to a client.
    pub fn command(id: &str, error: CommandError) -> Self {
        match error {
            CommandError::Domain(e) => match e {
                VideoError::NotRegistered => Self::video_not_found(id),
                VideoError::Deleted => Self::new(
                    ErrorKind::NotFound,
                    "VIDEO_NOT_FOUND",
                    format!("video {id:?} was deleted"),
                    serde_json::json!({ "video_id": id, "deleted": true }),
                ),
                VideoError::InvalidMetadata { field, reason } => {
                    Self::invalid(field, format!("invalid {field}: {reason}"))
                }
                VideoError::InvalidSource(reason) => Self::invalid("source", reason),
                VideoError::SizeMismatch { declared, actual } => Self::new(
                    ErrorKind::Unprocessable,
                    "SIZE_MISMATCH",
                    e.to_string(),
                    serde_json::json!({ "declared": declared, "actual": actual }),
                ),
                other => Self::conflict("INVALID_STATE", other.to_string(), serde_json::Value::Null),
            },
            CommandError::VersionMismatch { expected, actual } => Self::new(
                ErrorKind::PreconditionFailed,
                "PRECONDITION_FAILED",
                format!("If-Match names version {expected}; the video is at version {actual}"),
                serde_json::json!({ "expected": expected, "actual": actual }),
            ),
            CommandError::Conflict => Self::conflict(
                "VERSION_CONFLICT",
                "the video changed concurrently; read it again and retry",
                serde_json::Value::Null,
            ),
            CommandError::Store(e) => Self::store("command failed", &e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_survives_its_recorded_status() {
        use ErrorKind::*;
        for kind in [
            Invalid,
            Forbidden,
            NotFound,
            Conflict,
            PreconditionFailed,
            TooLarge,
            UnsupportedType,
            Unprocessable,
            Gone,
            ChecksumMismatch,
            Unavailable,
            Internal,
        ] {
            assert_eq!(ErrorKind::from_status(kind.status()), kind);
        }
    }

    #[test]
    fn transient_store_errors_ask_for_a_retry_and_others_hide_their_text() {
        let down = AppError::store("x", &StoreError::unavailable("connection refused"));
        assert_eq!((down.kind, down.code.as_str()), (ErrorKind::Unavailable, "UNAVAILABLE"));
        assert!(!down.message.contains("refused"));
        let broken = AppError::store("x", &StoreError::Invalid("bad row 7".into()));
        assert_eq!((broken.kind, broken.code.as_str()), (ErrorKind::Internal, "INTERNAL"));
        assert!(!broken.message.contains("row"));
    }

    #[test]
    fn command_refusals_name_what_the_client_can_do() {
        let stale = AppError::command("v", CommandError::VersionMismatch { expected: 2, actual: 3 });
        assert_eq!(stale.kind, ErrorKind::PreconditionFailed);
        assert_eq!(stale.details, serde_json::json!({ "expected": 2, "actual": 3 }));
        let gone = AppError::command("v", CommandError::Domain(VideoError::Deleted));
        assert_eq!(
            (gone.kind, gone.code.as_str()),
            (ErrorKind::NotFound, "VIDEO_NOT_FOUND")
        );
    }
}
