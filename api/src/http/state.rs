//! What every handler shares, and the command path: authorization against the video's
//! owner, `If-Match`, idempotency keys, and timing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use vodsource_commands::ports::{Clock, EventLog, IdempotencyStore, ObjectStore, Reservation, StoredResponse};
use vodsource_commands::{CommandContext, CommandOutcome, VideoCommands, VideoContext};
use vodsource_domain::VideoCommand;
use vodsource_projections::ViewStore;

use super::auth::{Principal, Role};
use super::control::Control;
use super::error::{command_error, ApiError, ErrorBody};
use super::limits::{HttpLimits, Playable, PlayableCache, StreamSlots, Uploads};
use super::metrics::Metrics;
use super::signing::Signer;

/// Settings of the HTTP layer.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// The base URL clients reach this server at (for upload and media links).
    pub public_url: String,
    /// How long signed upload and media URLs work.
    pub url_ttl: Duration,
    /// How long an idempotency key is remembered.
    pub idempotency_ttl: Duration,
    /// The CDN media is fetched from, if any (else from this server or presigned S3 URLs).
    pub cdn: Option<Arc<super::cdn::Cdn>>,
}

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    /// Command side.
    pub commands: VideoCommands,
    /// The event log (history, SSE, health).
    pub log: Arc<dyn EventLog>,
    /// Views.
    pub views: Arc<dyn ViewStore>,
    /// Idempotency keys.
    pub idempotency: Arc<dyn IdempotencyStore>,
    /// Media bytes.
    pub objects: Arc<dyn ObjectStore>,
    /// Signs upload and media URLs.
    pub signer: Signer,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// In-process runners, when this server runs them.
    pub control: Option<Arc<Control>>,
    /// Settings.
    pub settings: HttpSettings,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Raised when the server is shutting down (ends SSE streams).
    pub shutdown: watch::Receiver<bool>,
    /// Counters of this process's encoding workers.
    pub encoders: Arc<vodsource_encoder::EncoderStats>,
    /// Where accepted QoE beacons go; `None` answers beacons with 503.
    pub qoe: Option<Arc<dyn vodsource_commands::ports::StreamProducer>>,
    /// Videos whose source a request of this process is writing or recording.
    pub uploads: Uploads,
    /// Live event stream slots.
    pub streams: Arc<StreamSlots>,
    /// Who may play which video, for beacons.
    pub playable: Arc<PlayableCache>,
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

impl AppState {
    /// Now, by the configured clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The video's current state from the event log (aggregate cache), refusing callers
    /// that may not change it: below the creator role FORBIDDEN (whatever the id), another
    /// creator's video VIDEO_NOT_FOUND.
    ///
    /// # Errors
    /// VIDEO_NOT_FOUND, FORBIDDEN, UNAVAILABLE.
    pub async fn writable(&self, principal: &Principal, id: &str) -> Result<VideoContext, ApiError> {
        principal.require(Role::Creator)?;
        self.owned(principal, id).await
    }

    /// The video's current state, for its owner or an admin only. Another owner's video is
    /// VIDEO_NOT_FOUND, exactly as an unknown id is: the answer tells nothing of its existence.
    ///
    /// # Errors
    /// VIDEO_NOT_FOUND, UNAVAILABLE.
    pub async fn owned(&self, principal: &Principal, id: &str) -> Result<VideoContext, ApiError> {
        let loaded = self
            .commands
            .store()
            .load(id)
            .await
            .map_err(|e| ApiError::store("loading a video", &e))?;
        if loaded.version == 0 {
            return Err(ApiError::video_not_found(id));
        }
        if !principal.owns_or_admin(&loaded.video.owner) {
            return Err(ApiError::video_not_found(id));
        }
        Ok(loaded)
    }

    /// Waits until projection `name` has applied the event at `position` (read-your-writes:
    /// a client passes the position a command answered with). Returns at once without one.
    ///
    /// # Errors
    /// POSITION_AHEAD_OF_LOG (409) for a position past the log head; VIEW_BEHIND (503) when
    /// the view has not got there within 5 s.
    pub async fn caught_up(&self, name: &str, position: Option<u64>) -> Result<(), ApiError> {
        let Some(position) = position else {
            return Ok(());
        };
        let head = self
            .log
            .head()
            .await
            .map_err(|e| ApiError::store("reading the log head", &e))?;
        if position > head {
            return Err(ApiError::with(
                409,
                "POSITION_AHEAD_OF_LOG",
                format!("min_position {position} is beyond the last recorded event ({head})"),
                serde_json::json!({ "field": "min_position", "head": head }),
            ));
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let mut pause = Duration::from_millis(1);
        loop {
            let state = self
                .views
                .projection(name)
                .await
                .map_err(|e| ApiError::store("reading a projection", &e))?;
            if state.position >= position {
                return Ok(());
            }
            if tokio::time::Instant::now() + pause > deadline {
                return Err(ApiError::with(
                    503,
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

    /// Whether `principal` may play video `id` (and so send beacons about it): a published
    /// video, or one of the principal's own, or any existing video for an admin. Answers come
    /// from the catalog through a short-lived cache.
    ///
    /// # Errors
    /// UNAVAILABLE when the catalog cannot be read.
    pub async fn may_play(&self, principal: &Principal, id: &str) -> Result<bool, ApiError> {
        let answer = match self.playable.get(id) {
            Some(answer) => answer,
            None => {
                let doc = self
                    .views
                    .get(vodsource_projections::CatalogProjector::NAME, id)
                    .await
                    .map_err(|e| ApiError::store("reading the catalog", &e))?;
                let answer = doc
                    .map(|d| serde_json::from_str::<vodsource_projections::CatalogView>(&d.body))
                    .transpose()
                    .map_err(|e| ApiError::internal("a catalog document", &e))?
                    .map(|view| Playable {
                        owner: view.owner,
                        published: view.published,
                    });
                self.playable.put(id, answer.clone());
                answer
            }
        };
        Ok(answer.is_some_and(|video| {
            video.published || principal.role == Role::Admin || principal.owns_or_admin(&video.owner)
        }))
    }

    /// Runs a command as `principal` and times it.
    ///
    /// # Errors
    /// The command's error as an answer.
    pub async fn execute(
        &self,
        principal: &Principal,
        id: &str,
        command: VideoCommand,
        expected_version: Option<u64>,
        name: &'static str,
    ) -> Result<CommandOutcome, ApiError> {
        let context = CommandContext {
            actor: Some(principal.subject.clone()),
            correlation_id: Some(uuid::Uuid::now_v7()),
            causation_id: None,
            expected_version,
        };
        let started = Instant::now();
        let result = self.commands.execute(id, command, &context).await;
        self.metrics.command(name, started.elapsed());
        result.map_err(|e| command_error(id, e))
    }

    /// Runs `work` at most once per idempotency key: a repeat with the same request gets
    /// the first answer, a repeat with another request IDEMPOTENCY_KEY_REUSED (422).
    ///
    /// # Errors
    /// `work`'s error (remembered like a success, unless the server was at fault), or the
    /// key's.
    pub async fn idempotent<T, F>(
        &self,
        principal: &Principal,
        key: Option<&str>,
        request: &impl Serialize,
        work: F,
    ) -> Result<T, ApiError>
    where
        T: Serialize + DeserializeOwned,
        F: std::future::Future<Output = Result<T, ApiError>>,
    {
        let Some(key) = key else {
            return work.await;
        };
        if key.is_empty() || key.chars().count() > 255 {
            return Err(ApiError::invalid(
                "Idempotency-Key",
                "Idempotency-Key must be 1 to 255 characters",
            ));
        }
        let fingerprint = {
            let bytes = serde_json::to_vec(request).map_err(|e| ApiError::internal("fingerprint", &e))?;
            format!("{:x}", Sha256::digest(bytes))
        };
        let scope = &principal.subject;
        let reservation = self
            .idempotency
            .reserve(
                scope,
                key,
                &fingerprint,
                self.now(),
                self.settings.idempotency_ttl,
                Duration::from_secs(60),
            )
            .await
            .map_err(|e| ApiError::store("idempotency", &e))?;
        match reservation {
            Reservation::Fresh => {}
            Reservation::Replay(stored) => return replay(&stored),
            Reservation::Mismatch => {
                return Err(ApiError::with(
                    422,
                    "IDEMPOTENCY_KEY_REUSED",
                    "this Idempotency-Key was used with a different request",
                    serde_json::json!({ "idempotency_key": key }),
                ))
            }
            Reservation::InFlight => {
                return Err(ApiError::with(
                    409,
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
            Err(error) if error.status() < 500 => {
                serde_json::to_string(&ErrorJson::from(error.body()))
                    .ok()
                    .map(|body| StoredResponse {
                        status: error.status(),
                        body,
                    })
            }
            Err(_) => None,
        };
        let outcome = match &stored {
            Some(stored) => self.idempotency.complete(scope, key, stored).await,
            None => self.idempotency.release(scope, key).await,
        };
        if let Err(e) = outcome {
            tracing::warn!(error = %e, "could not record an idempotency key's answer");
        }
        result
    }
}

#[derive(Serialize, serde::Deserialize)]
struct ErrorJson {
    code: String,
    message: String,
    details: serde_json::Value,
}

impl From<&ErrorBody> for ErrorJson {
    fn from(body: &ErrorBody) -> Self {
        Self {
            code: body.error.code.clone(),
            message: body.error.message.clone(),
            details: body.error.details.clone(),
        }
    }
}

fn replay<T: DeserializeOwned>(stored: &StoredResponse) -> Result<T, ApiError> {
    if stored.status < 300 {
        return serde_json::from_str(&stored.body).map_err(|e| ApiError::internal("replaying an answer", &e));
    }
    let error: ErrorJson =
        serde_json::from_str(&stored.body).map_err(|e| ApiError::internal("replaying an answer", &e))?;
    Err(ApiError::with(stored.status, &error.code, error.message, error.details))
}
