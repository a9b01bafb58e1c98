//! What every handler shares: the application, and what only HTTP has (metrics, stream
//! slots, limits, shutdown).

use std::sync::Arc;

use tokio::sync::watch;
use vodsource_app::App;

use super::error::ApiError;
use super::limits::{HttpLimits, StreamSlots};
use super::metrics::Metrics;

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    /// The use cases.
    pub app: App,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Raised when the server is shutting down (ends SSE streams).
    pub shutdown: watch::Receiver<bool>,
    /// Live event stream slots.
    pub streams: Arc<StreamSlots>,
    /// Timeouts and caps.
    pub limits: HttpLimits,
}

/// `If-Match` as a version: `*` (any), the ETag this API sends (`"3"`, or weak `W/"3"`), or
/// the bare version `3` — exactly what [`IF_MATCH_PATTERN`] says.
///
/// # Errors
/// VALIDATION_FAILED for anything else.
pub fn if_match(header: Option<&str>) -> Result<Option<u64>, ApiError> {
    let Some(value) = header else {
        return Ok(None);
    };
    if value == "*" {
        return Ok(None);
    }
    let tag = value.strip_prefix("W/").unwrap_or(value);
    let digits = match tag.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        Some(quoted) => quoted,
        None if tag.len() == value.len() => tag,
        // A weak tag is always quoted.
        None => "",
    };
    if digits.is_empty() || digits.len() > 19 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::invalid(
            "If-Match",
            format!("If-Match must be *, a version (3) or its ETag (\"3\"), got {value:?}"),
        ));
    }
    digits
        .parse()
        .map(Some)
        .map_err(|_| ApiError::invalid("If-Match", format!("If-Match is out of range: {value:?}")))
}

/// The form [`if_match`] accepts, for the OpenAPI document.
pub const IF_MATCH_PATTERN: &str = r#"^(\*|(W/)?"[0-9]{1,19}"|[0-9]{1,19})$"#;
