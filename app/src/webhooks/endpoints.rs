//! The use cases of webhook endpoints: create (with its secret, shown once), list, read,
//! change, rotate the secret, delete. An admin's endpoints hear of every video; a creator's
//! of their own videos only, and a creator sees and changes only their own endpoints.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;

use super::deliveries::DeliveryRecord;
use super::registry::{
    check_event_types, Created, Deleted, Endpoint, RecordError, Redriven, Registry, RegistryEvent, ReplayRequested,
    SecretRotated, Updated, MAX_DESCRIPTION_CHARS, MAX_ENDPOINTS_PER_OWNER, MAX_PER_SECOND, MAX_URL_BYTES,
};
use crate::error::{AppError, ErrorKind};
use crate::principal::{Principal, Role};
use crate::Core;

/// The longest a rotated-out secret keeps signing.
pub const MAX_SECRET_OVERLAP: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long a rotated-out secret keeps signing unless asked otherwise.
pub const DEFAULT_SECRET_OVERLAP: Duration = Duration::from_secs(24 * 3600);

/// The form of an endpoint id.
pub const WEBHOOK_ID_PATTERN: &str = "^wh_[0-9a-f]{32}$";

fn check_id(id: &str) -> Result<(), AppError> {
    let hex = id.strip_prefix("wh_").unwrap_or_default();
    if hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        Ok(())
    } else {
        Err(AppError::invalid(
            "webhook_id",
            "a webhook id is wh_ and 32 lowercase hex digits",
        ))
    }
}

/// An endpoint to create.
#[derive(Debug, Clone, Default)]
pub struct NewEndpoint {
    /// Where events are sent.
    pub url: String,
    /// The public event types wanted; none: every type that is not opt-in.
    pub event_types: Vec<String>,
    /// For people.
    pub description: String,
    /// Whether events are sent from now on (default true).
    pub enabled: bool,
    /// Requests per second at most; 0: no limit.
    pub max_per_second: u32,
}

/// Changes to an endpoint; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct EndpointChanges {
    /// A new URL.
    pub url: Option<String>,
    /// New event types.
    pub event_types: Option<Vec<String>>,
    /// A new description.
    pub description: Option<String>,
    /// Enable or disable.
    pub enabled: Option<bool>,
    /// A new rate limit (0: none).
    pub max_per_second: Option<u32>,
}

/// An endpoint with a secret the caller sees this once.
#[derive(Debug, Clone)]
pub struct WithSecret {
    /// The endpoint.
    pub endpoint: Endpoint,
    /// Its current secret.
    pub secret: String,
}

/// An endpoint with how far its dispatcher is.
#[derive(Debug, Clone)]
pub struct Listed {
    /// The endpoint.
    pub endpoint: Endpoint,
    /// Every event up to this position of the log has been delivered to it (or was not
    /// for it).
    pub position: u64,
    /// Events of the log after `position`.
    pub lag: u64,
}

/// What a test request got.
#[derive(Debug, Clone)]
pub struct TestOutcome {
    /// The event sent.
    pub event: super::PublicEvent,
    /// The answer's status, if one came.
    pub status: Option<u16>,
    /// Why no answer came (refused, unreachable, too slow).
    pub error: Option<String>,
    /// From sending to the answer's head, ms.
    pub latency_ms: u64,
}

/// Where a replay starts.
#[derive(Debug, Clone, Copy)]
pub enum ReplayFrom {
    /// After this position of the log.
    Position(u64),
    /// With the first event recorded at or after this time.
    Time(DateTime<Utc>),
}

/// A replay under way.
#[derive(Debug, Clone, Copy)]
pub struct ReplayStarted {
    /// Events after this position are sent again.
    pub from_position: u64,
    /// The position of the request in the log: the dispatcher starts the replay when it
    /// reads it.
    pub requested_position: u64,
}

/// A page of an endpoint's delivery log.
#[derive(Debug, Clone)]
pub struct DeliveryPage {
    /// Newest position first.
    pub deliveries: Vec<DeliveryRecord>,
    /// Where the next page starts (`before`), when there may be one.
    pub next_before: Option<u64>,
}

/// The longest page of a delivery log.
pub const MAX_DELIVERY_PAGE: usize = 100;

/// How long a test request may take.
const TEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The webhook endpoints' use cases.
pub struct Webhooks<'a> {
    core: &'a Core,
}

fn not_found(id: &str) -> AppError {
    AppError::new(
        ErrorKind::NotFound,
        "WEBHOOK_NOT_FOUND",
        format!("no webhook endpoint {id:?}"),
        json!({ "webhook_id": id }),
    )
}

/// The endpoint `id` if `principal` may see it.
fn visible<'r>(registry: &'r Registry, principal: &Principal, id: &str) -> Result<&'r Endpoint, AppError> {
    check_id(id)?;
    registry
        .endpoints
        .get(id)
        .filter(|e| principal.role == Role::Admin || e.owner.as_deref() == Some(principal.subject.as_str()))
        .ok_or_else(|| not_found(id))
}

fn url_error(code: &str, message: String) -> AppError {
    AppError::new(ErrorKind::Unprocessable, code, message, json!({ "field": "url" }))
}

impl<'a> Webhooks<'a> {
    pub(crate) fn new(core: &'a Core) -> Self {
        Self { core }
    }

    /// Refuses a URL that events would never be sent to.
    fn check_url(&self, url: &str) -> Result<(), AppError> {
        if url.len() > MAX_URL_BYTES || url.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(url_error(
                "WEBHOOK_URL_INVALID",
                format!("url must be at most {MAX_URL_BYTES} bytes, without spaces or control characters"),
            ));
        }
        let parsed =
            url::Url::parse(url).map_err(|e| url_error("WEBHOOK_URL_INVALID", format!("url is not a URL: {e}")))?;
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(url_error("WEBHOOK_URL_INVALID", "url names no host".into()));
        }
        if parsed.fragment().is_some() {
            return Err(url_error(
                "WEBHOOK_URL_INVALID",
                "url has a fragment, which is never sent".into(),
            ));
        }
        self.core
            .ports
            .webhooks
            .check_url(url)
            .map_err(|reason| url_error("WEBHOOK_URL_REFUSED", format!("url is refused: {reason}")))
    }

    fn check_fields(
        &self,
        event_types: Option<&[String]>,
        description: Option<&str>,
        max_per_second: Option<u32>,
    ) -> Result<(), AppError> {
        if max_per_second.is_some_and(|n| n > MAX_PER_SECOND) {
            return Err(AppError::invalid(
                "max_per_second",
                format!("max_per_second is 0 (no limit) to {MAX_PER_SECOND}"),
            ));
        }
        if let Some(types) = event_types {
            check_event_types(types).map_err(|message| AppError::invalid("event_types", message))?;
        }
        if description.is_some_and(|d| d.chars().count() > MAX_DESCRIPTION_CHARS || d.chars().any(char::is_control)) {
            return Err(AppError::invalid(
                "description",
                format!("description is at most {MAX_DESCRIPTION_CHARS} characters, none of them control characters"),
            ));
        }
        Ok(())
    }

    /// Refuses to sign for `endpoint` with a signing secret other than its own (a process
    /// started without the shared `VODSOURCE_SIGNING_SECRET`).
    fn check_key(&self, endpoint: &Endpoint) -> Result<(), AppError> {
        endpoint
            .check_key(&self.core.signer.webhook_key_id())
            .map_err(|message| {
                AppError::conflict(
                    "WEBHOOK_KEY_MISMATCH",
                    message,
                    json!({ "webhook_id": endpoint.id, "expected_key": endpoint.key_id }),
                )
            })
    }

    fn with_secret(&self, endpoint: Endpoint) -> WithSecret {
        let secret = self.core.signer.webhook_secret(&endpoint.id, endpoint.secret_version);
        WithSecret { endpoint, secret }
    }

    async fn record(
        &self,
        principal: &Principal,
        decide: impl Fn(&Registry) -> Result<Vec<RegistryEvent>, AppError>,
    ) -> Result<Registry, AppError> {
        self.record_at(principal, decide).await.map(|(registry, _)| registry)
    }

    /// As [`Webhooks::record`], with where the events landed.
    async fn record_at(
        &self,
        principal: &Principal,
        decide: impl Fn(&Registry) -> Result<Vec<RegistryEvent>, AppError>,
    ) -> Result<(Registry, Option<vodsource_commands::ports::Appended>), AppError> {
        let actor = format!("{}:{}", principal.role.name(), principal.subject);
        match self.core.registry.record(&actor, self.core.now(), decide).await {
            Ok(recorded) => Ok(recorded),
            Err(RecordError::Refused(e)) => Err(e),
            Err(RecordError::Store(e)) => Err(AppError::store("recording a webhook change", &e)),
        }
    }

    /// Creates an endpoint: for an admin over every video, for a creator over their own.
    /// The answer holds its secret, which no read shows again.
    ///
    /// # Errors
    /// FORBIDDEN below creator; the URL refused or invalid (422); VALIDATION_FAILED;
    /// TOO_MANY_WEBHOOKS (409) past [`MAX_ENDPOINTS_PER_OWNER`].
    pub async fn create(&self, principal: &Principal, new: NewEndpoint) -> Result<WithSecret, AppError> {
        principal.require(Role::Creator)?;
        self.check_url(&new.url)?;
        self.check_fields(Some(&new.event_types), Some(&new.description), Some(new.max_per_second))?;
        let owner = (principal.role != Role::Admin).then(|| principal.subject.clone());
        let id = format!("wh_{}", uuid::Uuid::now_v7().simple());
        let registry = self
            .record(principal, |registry| {
                if registry.count_of(owner.as_deref()) >= MAX_ENDPOINTS_PER_OWNER {
                    return Err(AppError::conflict(
                        "TOO_MANY_WEBHOOKS",
                        format!("at most {MAX_ENDPOINTS_PER_OWNER} webhook endpoints per owner; delete one first"),
                        json!({ "limit": MAX_ENDPOINTS_PER_OWNER }),
                    ));
                }
                Ok(vec![RegistryEvent::Created(Created {
                    endpoint_id: id.clone(),
                    owner: owner.clone(),
                    url: new.url.clone(),
                    event_types: new.event_types.clone(),
                    description: new.description.clone(),
                    enabled: new.enabled,
                    max_per_second: new.max_per_second,
                    key_id: Some(self.core.signer.webhook_key_id()),
                })])
            })
            .await?;
        let endpoint = registry.endpoints.get(&id).cloned().ok_or_else(|| not_found(&id))?;
        Ok(self.with_secret(endpoint))
    }

    /// The endpoints `principal` may see, oldest first, with how far each is.
    ///
    /// # Errors
    /// FORBIDDEN below creator; UNAVAILABLE.
    pub async fn list(&self, principal: &Principal) -> Result<Vec<Listed>, AppError> {
        principal.require(Role::Creator)?;
        let registry = self.current().await?;
        let mut endpoints: Vec<Endpoint> = registry
            .endpoints
            .into_values()
            .filter(|e| principal.role == Role::Admin || e.owner.as_deref() == Some(principal.subject.as_str()))
            .collect();
        endpoints.sort_by_key(|e| e.created_position);
        self.progress(endpoints).await
    }

    /// One endpoint, with how far it is.
    ///
    /// # Errors
    /// FORBIDDEN below creator; WEBHOOK_NOT_FOUND (also another creator's).
    pub async fn get(&self, principal: &Principal, id: &str) -> Result<Listed, AppError> {
        principal.require(Role::Creator)?;
        check_id(id)?;
        let registry = self.current().await?;
        let endpoint = visible(&registry, principal, id)?.clone();
        let mut listed = self.progress(vec![endpoint]).await?;
        listed.pop().ok_or_else(|| not_found(id))
    }

    /// Every endpoint with how far it is: for metrics.
    ///
    /// # Errors
    /// UNAVAILABLE.
    pub async fn all_progress(&self) -> Result<Vec<Listed>, AppError> {
        let registry = self.current().await?;
        self.progress(registry.endpoints.into_values().collect()).await
    }

    async fn progress(&self, endpoints: Vec<Endpoint>) -> Result<Vec<Listed>, AppError> {
        let ports = &self.core.ports;
        let head = ports
            .log
            .head()
            .await
            .map_err(|e| AppError::store("reading the log head", &e))?;
        let mut listed = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            let position = super::dispatch::resume_position(&*ports.checkpoints, &endpoint)
                .await
                .map_err(|e| AppError::store("reading a webhook checkpoint", &e))?;
            listed.push(Listed {
                endpoint,
                position,
                lag: head.saturating_sub(position),
            });
        }
        Ok(listed)
    }

    /// Changes an endpoint; events after the change are sent as it says.
    ///
    /// # Errors
    /// As [`Webhooks::create`], and WEBHOOK_NOT_FOUND.
    pub async fn update(
        &self,
        principal: &Principal,
        id: &str,
        changes: EndpointChanges,
    ) -> Result<Endpoint, AppError> {
        principal.require(Role::Creator)?;
        check_id(id)?;
        if let Some(url) = &changes.url {
            self.check_url(url)?;
        }
        self.check_fields(
            changes.event_types.as_deref(),
            changes.description.as_deref(),
            changes.max_per_second,
        )?;
        let registry = self
            .record(principal, |registry| {
                let endpoint = visible(registry, principal, id)?;
                let update = Updated {
                    endpoint_id: id.to_owned(),
                    url: changes.url.clone().filter(|u| *u != endpoint.url),
                    event_types: changes.event_types.clone().filter(|t| *t != endpoint.event_types),
                    description: changes.description.clone().filter(|d| *d != endpoint.description),
                    enabled: changes.enabled.filter(|e| *e != endpoint.enabled),
                    max_per_second: changes.max_per_second.filter(|n| *n != endpoint.max_per_second),
                };
                let unchanged = Updated {
                    endpoint_id: id.to_owned(),
                    ..Updated::default()
                };
                Ok(if update == unchanged {
                    Vec::new()
                } else {
                    vec![RegistryEvent::Updated(update)]
                })
            })
            .await?;
        registry.endpoints.get(id).cloned().ok_or_else(|| not_found(id))
    }

    /// Replaces the endpoint's secret with a new one; the previous one keeps signing (a
    /// second signature in each request) for `overlap`.
    ///
    /// # Errors
    /// FORBIDDEN below creator; WEBHOOK_NOT_FOUND; VALIDATION_FAILED for an overlap past
    /// [`MAX_SECRET_OVERLAP`].
    pub async fn rotate_secret(
        &self,
        principal: &Principal,
        id: &str,
        overlap: Duration,
    ) -> Result<WithSecret, AppError> {
        principal.require(Role::Creator)?;
        check_id(id)?;
        if overlap > MAX_SECRET_OVERLAP {
            return Err(AppError::invalid(
                "overlap_seconds",
                format!("the overlap is at most {} s", MAX_SECRET_OVERLAP.as_secs()),
            ));
        }
        let now = self.core.now();
        let until: DateTime<Utc> = now + chrono::Duration::from_std(overlap).unwrap_or_default();
        let registry = self
            .record(principal, |registry| {
                let endpoint = visible(registry, principal, id)?;
                self.check_key(endpoint)?;
                Ok(vec![RegistryEvent::SecretRotated(SecretRotated {
                    endpoint_id: id.to_owned(),
                    version: endpoint.secret_version + 1,
                    previous_valid_until: until,
                })])
            })
            .await?;
        let endpoint = registry.endpoints.get(id).cloned().ok_or_else(|| not_found(id))?;
        Ok(self.with_secret(endpoint))
    }

    /// Deletes an endpoint: nothing more is sent to it.
    ///
    /// # Errors
    /// FORBIDDEN below creator; WEBHOOK_NOT_FOUND.
    pub async fn delete(&self, principal: &Principal, id: &str) -> Result<(), AppError> {
        principal.require(Role::Creator)?;
        check_id(id)?;
        self.record(principal, |registry| {
            visible(registry, principal, id)?;
            Ok(vec![RegistryEvent::Deleted(Deleted {
                endpoint_id: id.to_owned(),
            })])
        })
        .await
        .map(|_| ())
    }

    /// Sends the endpoint every event after a position (or from a time) again, in log order
    /// per video, then goes on with what follows: each is delivered again under its own
    /// event id. The events are those the endpoint would be sent today (its types, its
    /// owner's videos), also from before its creation.
    ///
    /// # Errors
    /// FORBIDDEN below creator; WEBHOOK_NOT_FOUND; WEBHOOK_DISABLED (409);
    /// REPLAY_POSITION_AHEAD (422) for a position past the log's head.
    pub async fn replay(&self, principal: &Principal, id: &str, from: ReplayFrom) -> Result<ReplayStarted, AppError> {
        principal.require(Role::Creator)?;
        check_id(id)?;
        let log = &self.core.ports.log;
        let head = log
            .head()
            .await
            .map_err(|e| AppError::store("reading the log head", &e))?;
        let from_position = match from {
            ReplayFrom::Position(position) if position > head => {
                return Err(AppError::new(
                    ErrorKind::Unprocessable,
                    "REPLAY_POSITION_AHEAD",
                    format!("position {position} is past the log's head, {head}"),
                    json!({ "field": "from_position", "head": head }),
                ))
            }
            ReplayFrom::Position(position) => position,
            ReplayFrom::Time(time) => self.position_before(time, head).await?,
        };
        let (_, appended) = self
            .record_at(principal, |registry| {
                let endpoint = visible(registry, principal, id)?;
                if !endpoint.enabled {
                    return Err(AppError::conflict(
                        "WEBHOOK_DISABLED",
                        "the endpoint is disabled; enable it first",
                        json!({ "webhook_id": id }),
                    ));
                }
                Ok(vec![RegistryEvent::ReplayRequested(ReplayRequested {
                    endpoint_id: id.to_owned(),
                    from_position,
                })])
            })
            .await?;
        let appended = appended.ok_or_else(|| AppError::internal("recording a replay", &"nothing was recorded"))?;
        Ok(ReplayStarted {
            from_position,
            requested_position: appended.last_position,
        })
    }

    /// The position just before the first event recorded at or after `time` (the log's
    /// order follows time): a binary search over the log.
    async fn position_before(&self, time: DateTime<Utc>, head: u64) -> Result<u64, AppError> {
        let log = &self.core.ports.log;
        // The answer is in [low, high]: events up to `low` are older than `time`.
        let (mut low, mut high) = (0, head);
        while low < high {
            let middle = low + (high - low).div_ceil(2);
            let event = log
                .read_all(middle - 1, 1)
                .await
                .map_err(|e| AppError::store("reading the log", &e))?;
            match event.first() {
                Some(event) if event.occurred_at < time => low = event.position.max(middle),
                _ => high = middle - 1,
            }
        }
        Ok(low)
    }

    /// A page of the endpoint's delivery log: each event's attempts, last answer and next
    /// try, newest position first, below `before`.
    ///
    /// # Errors
    /// FORBIDDEN below creator; WEBHOOK_NOT_FOUND; VALIDATION_FAILED for a limit outside
    /// 1..=[`MAX_DELIVERY_PAGE`].
    pub async fn deliveries(
        &self,
        principal: &Principal,
        id: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<DeliveryPage, AppError> {
        principal.require(Role::Creator)?;
        check_id(id)?;
        if !(1..=MAX_DELIVERY_PAGE).contains(&limit) {
            return Err(AppError::invalid("limit", format!("limit is 1 to {MAX_DELIVERY_PAGE}")));
        }
        let registry = self.current().await?;
        visible(&registry, principal, id)?;
        let deliveries = super::deliveries::page(&*self.core.ports.views, id, before, limit)
            .await
            .map_err(|e| AppError::store("reading the delivery log", &e))?;
        let next_before = (deliveries.len() == limit)
            .then(|| deliveries.last().map(|d| d.position))
            .flatten();
        Ok(DeliveryPage {
            deliveries,
            next_before,
        })
    }

    /// Re-drives a failing endpoint: its parked deliveries (every event from its checkpoint
    /// on) are tried again, each for a new retry period.
    ///
    /// # Errors
    /// FORBIDDEN below creator; WEBHOOK_NOT_FOUND; WEBHOOK_NOT_FAILING (409) when nothing is
    /// parked.
    pub async fn redrive(&self, principal: &Principal, id: &str) -> Result<Endpoint, AppError> {
        principal.require(Role::Creator)?;
        check_id(id)?;
        let registry = self
            .record(principal, |registry| {
                let endpoint = visible(registry, principal, id)?;
                if endpoint.failing.is_none() {
                    return Err(AppError::conflict(
                        "WEBHOOK_NOT_FAILING",
                        "the endpoint is not failing: nothing is parked",
                        json!({ "webhook_id": id }),
                    ));
                }
                Ok(vec![RegistryEvent::Redriven(Redriven {
                    endpoint_id: id.to_owned(),
                })])
            })
            .await?;
        registry.endpoints.get(id).cloned().ok_or_else(|| not_found(id))
    }

    /// Sends the endpoint a `webhook.test` event now, once, signed as every event is, and
    /// says what it answered.
    ///
    /// # Errors
    /// FORBIDDEN below creator; WEBHOOK_NOT_FOUND.
    pub async fn test(&self, principal: &Principal, id: &str) -> Result<TestOutcome, AppError> {
        principal.require(Role::Creator)?;
        check_id(id)?;
        let registry = self.current().await?;
        let endpoint = visible(&registry, principal, id)?.clone();
        self.check_key(&endpoint)?;
        let head = self
            .core
            .ports
            .log
            .head()
            .await
            .map_err(|e| AppError::store("reading the log head", &e))?;
        let now = self.core.now();
        let event = super::contract::test_event(id, now, head);
        let body = serde_json::to_vec(&event).map_err(|e| AppError::internal("serializing a test event", &e))?;
        let request = super::dispatch::signed_request(
            &self.core.signer,
            &endpoint,
            now,
            &event.id,
            &event.event_type,
            body,
            1,
            TEST_TIMEOUT,
        );
        let started = std::time::Instant::now();
        let sent = self.core.ports.webhooks.send(request).await;
        let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (status, error) = match sent {
            Ok(answer) => (Some(answer.status), None),
            Err(e) => (None, Some(e.to_string())),
        };
        Ok(TestOutcome {
            event,
            status,
            error,
            latency_ms,
        })
    }

    async fn current(&self) -> Result<Registry, AppError> {
        self.core
            .registry
            .current()
            .await
            .map_err(|e| AppError::store("reading the webhook registry", &e))
    }
}
