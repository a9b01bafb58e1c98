//! Idempotency keys: a command sent again with the same key gets the first answer, whatever
//! happened in between; the same key with another request is refused.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vodsource_commands::ports::{Reservation, StoredResponse};

use crate::error::{AppError, ErrorKind};
use crate::principal::Principal;
use crate::Core;

/// Longest key, in characters.
pub const MAX_KEY_CHARS: usize = 255;

/// How long a request may hold its key before a repeat may take it over.
const IN_FLIGHT: Duration = Duration::from_secs(60);

impl Core {
    /// Runs `work` at most once per idempotency key of `principal`: a repeat with the same
    /// request gets the first answer, a repeat with another request IDEMPOTENCY_KEY_REUSED.
    ///
    /// # Errors
    /// `work`'s error (remembered like a success, unless the service was at fault), or the
    /// key's.
    pub(crate) async fn idempotent<T, F>(
        &self,
        principal: &Principal,
        key: Option<&str>,
        request: &impl Serialize,
        work: F,
    ) -> Result<T, AppError>
    where
        T: Serialize + DeserializeOwned,
        F: std::future::Future<Output = Result<T, AppError>>,
    {
        let Some(key) = key else {
            return work.await;
        };
        if key.is_empty() || key.chars().count() > MAX_KEY_CHARS {
            return Err(AppError::invalid(
                "Idempotency-Key",
                format!("Idempotency-Key must be 1 to {MAX_KEY_CHARS} characters"),
            ));
        }
        let fingerprint = {
            let bytes = serde_json::to_vec(request).map_err(|e| AppError::internal("fingerprint", &e))?;
            format!("{:x}", Sha256::digest(bytes))
        };
        let scope = &principal.subject;
        let reservation = self
            .ports
            .idempotency
            .reserve(
                scope,
                key,
                &fingerprint,
                self.ports.clock.now(),
                self.settings.idempotency_ttl,
                IN_FLIGHT,
            )
            .await
            .map_err(|e| AppError::store("idempotency", &e))?;
        match reservation {
            Reservation::Fresh => {}
            Reservation::Replay(stored) => return replay(&stored),
            Reservation::Mismatch => {
                return Err(AppError::new(
                    ErrorKind::Unprocessable,
                    "IDEMPOTENCY_KEY_REUSED",
                    "this Idempotency-Key was used with a different request",
                    serde_json::json!({ "idempotency_key": key }),
                ))
            }
            Reservation::InFlight => {
                return Err(AppError::conflict(
                    "IDEMPOTENCY_KEY_IN_USE",
                    "a request with this Idempotency-Key is still running; retry later",
                    serde_json::json!({ "idempotency_key": key }),
                ))
            }
        }
        let result = work.await;
        let stored = match &result {
            Ok(value) => serde_json::to_string(value)
                .ok()
                .map(|body| StoredResponse { status: 200, body }),
            Err(error) if error.kind.status() < 500 => {
                serde_json::to_string(&Recorded::from(error))
                    .ok()
                    .map(|body| StoredResponse {
                        status: error.kind.status(),
                        body,
                    })
            }
            Err(_) => None,
        };
        let outcome = match &stored {
            Some(stored) => self.ports.idempotency.complete(scope, key, stored).await,
            None => self.ports.idempotency.release(scope, key).await,
        };
        if let Err(e) = outcome {
            tracing::warn!(error = %e, "could not record an idempotency key's answer");
        }
        result
    }
}

/// A refusal as an idempotency key remembers it.
#[derive(Serialize, Deserialize)]
struct Recorded {
    code: String,
    message: String,
    details: serde_json::Value,
}

impl From<&AppError> for Recorded {
    fn from(error: &AppError) -> Self {
        Self {
            code: error.code.clone(),
            message: error.message.clone(),
            details: error.details.clone(),
        }
    }
}

fn replay<T: DeserializeOwned>(stored: &StoredResponse) -> Result<T, AppError> {
    if stored.status < 300 {
        return serde_json::from_str(&stored.body).map_err(|e| AppError::internal("replaying an answer", &e));
    }
    let error: Recorded =
        serde_json::from_str(&stored.body).map_err(|e| AppError::internal("replaying an answer", &e))?;
    Err(AppError::new(
        ErrorKind::from_status(stored.status),
        &error.code,
        error.message,
        error.details,
    ))
}
