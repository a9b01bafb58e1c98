//! Webhook endpoints, kept as one stream of the log: the registry (`$webhooks`). Its events
//! say when an endpoint was created, changed, had its secret rotated or was deleted; the
//! state of every endpoint is their fold. Keeping endpoints in the log puts their changes in
//! the same order as the video events they filter: a dispatcher reading the log learns that
//! an endpoint was disabled exactly between the events before and after it.
//!
//! Secrets are not stored anywhere: an endpoint's secret of version `n` is derived from the
//! service's signing secret, its id and `n` (see [`crate::Signer::webhook_secret`]), so the
//! log (relayed, replayed, kept forever) never holds one.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use vodsource_commands::ports::{
    AppendRequest, Appended, EventLog, EventMetadata, ExpectedVersion, NewEvent, RecordedEvent, StoreError,
};

use super::contract::{EVENT_TYPES, OPT_IN_TYPES};

/// The registry's stream; `$` keeps it out of the videos' id space.
pub const REGISTRY_STREAM: &str = "$webhooks";
/// The registry's stream type.
pub const REGISTRY_STREAM_TYPE: &str = "webhooks";
/// Endpoints one owner (or the admins together) may have.
pub const MAX_ENDPOINTS_PER_OWNER: usize = 20;
/// Longest endpoint URL.
pub const MAX_URL_BYTES: usize = 2048;
/// The highest rate limit an endpoint may set, requests per second.
pub const MAX_PER_SECOND: u32 = 10_000;
/// Longest description.
pub const MAX_DESCRIPTION_CHARS: usize = 256;

/// Schema version of the registry's events.
const SCHEMA_VERSION: u32 = 1;
/// Events read per page.
const PAGE: usize = 1000;

/// An endpoint was created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Created {
    /// Its id.
    pub endpoint_id: String,
    /// The owner whose videos it hears of; `None`: every video (an admin's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Where events are sent.
    pub url: String,
    /// The public event types it wants; empty: every type that is not opt-in.
    pub event_types: Vec<String>,
    /// For people.
    pub description: String,
    /// Whether events are sent.
    pub enabled: bool,
    /// Requests per second at most; 0: no limit but the concurrency.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_per_second: u32,
    /// Which signing secret its secrets derive from ([`crate::Signer::webhook_key_id`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
}

#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// An endpoint was changed (the fields that changed).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Updated {
    /// Its id.
    pub endpoint_id: String,
    /// A new URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// New event types.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_types: Option<Vec<String>>,
    /// A new description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Enabled or disabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// A new rate limit (0: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_second: Option<u32>,
}

/// An endpoint's secret was replaced by the next version; the previous one still signs
/// until `previous_valid_until`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecretRotated {
    /// Its id.
    pub endpoint_id: String,
    /// The new secret's version.
    pub version: u32,
    /// Until when the previous secret signs too.
    pub previous_valid_until: DateTime<Utc>,
}

/// An endpoint was deleted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deleted {
    /// Its id.
    pub endpoint_id: String,
}

/// A replay was asked for: the endpoint is sent again every event after `from_position`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplayRequested {
    /// Its id.
    pub endpoint_id: String,
    /// Events after this position are sent again.
    pub from_position: u64,
}

/// An event was tried for the whole retry period and never delivered: the endpoint is
/// failing, and its deliveries are parked (its dispatcher sends nothing more) until it is
/// re-driven or replayed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failing {
    /// Its id.
    pub endpoint_id: String,
    /// The log position of the event that failed.
    pub position: u64,
    /// That event's public id.
    pub event_id: String,
    /// Attempts made.
    pub attempts: u32,
    /// Why the last one failed.
    pub reason: String,
    /// The first attempt.
    pub since: DateTime<Utc>,
}

/// A failing endpoint's parked deliveries were re-driven: its dispatcher tries them again
/// from its checkpoint, each for a new retry period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Redriven {
    /// Its id.
    pub endpoint_id: String,
}

/// What happened to the registry.
#[derive(Debug, Clone, PartialEq)]
pub enum RegistryEvent {
    /// [`Created`].
    Created(Created),
    /// [`Updated`].
    Updated(Updated),
    /// [`SecretRotated`].
    SecretRotated(SecretRotated),
    /// [`Deleted`].
    Deleted(Deleted),
    /// [`ReplayRequested`].
    ReplayRequested(ReplayRequested),
    /// [`Failing`].
    Failing(Failing),
    /// [`Redriven`].
    Redriven(Redriven),
}

impl RegistryEvent {
    /// The stored type name.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Created(_) => "WebhookEndpointCreated",
            Self::Updated(_) => "WebhookEndpointUpdated",
            Self::SecretRotated(_) => "WebhookSecretRotated",
            Self::Deleted(_) => "WebhookEndpointDeleted",
            Self::ReplayRequested(_) => "WebhookReplayRequested",
            Self::Failing(_) => "WebhookEndpointFailing",
            Self::Redriven(_) => "WebhookEndpointRedriven",
        }
    }

    /// The endpoint it is about.
    pub fn endpoint_id(&self) -> &str {
        match self {
            Self::Created(e) => &e.endpoint_id,
            Self::Updated(e) => &e.endpoint_id,
            Self::SecretRotated(e) => &e.endpoint_id,
            Self::Deleted(e) => &e.endpoint_id,
            Self::ReplayRequested(e) => &e.endpoint_id,
            Self::Failing(e) => &e.endpoint_id,
            Self::Redriven(e) => &e.endpoint_id,
        }
    }

    fn payload(&self) -> String {
        match self {
            Self::Created(e) => serde_json::to_string(e),
            Self::Updated(e) => serde_json::to_string(e),
            Self::SecretRotated(e) => serde_json::to_string(e),
            Self::Deleted(e) => serde_json::to_string(e),
            Self::ReplayRequested(e) => serde_json::to_string(e),
            Self::Failing(e) => serde_json::to_string(e),
            Self::Redriven(e) => serde_json::to_string(e),
        }
        .unwrap_or_default()
    }

    /// The event a stored one is.
    ///
    /// # Errors
    /// An unknown type or a payload that does not fit it.
    pub fn decode(event: &RecordedEvent) -> Result<Self, String> {
        fn parse<T: serde::de::DeserializeOwned>(event: &RecordedEvent) -> Result<T, String> {
            serde_json::from_str(&event.payload).map_err(|e| {
                format!(
                    "registry event {} at position {} does not deserialize: {e}",
                    event.event_type, event.position
                )
            })
        }
        if event.schema_version > SCHEMA_VERSION {
            return Err(format!(
                "registry event {} at position {} has schema version {}, newer than {SCHEMA_VERSION}",
                event.event_type, event.position, event.schema_version
            ));
        }
        Ok(match event.event_type.as_str() {
            "WebhookEndpointCreated" => Self::Created(parse(event)?),
            "WebhookEndpointUpdated" => Self::Updated(parse(event)?),
            "WebhookSecretRotated" => Self::SecretRotated(parse(event)?),
            "WebhookEndpointDeleted" => Self::Deleted(parse(event)?),
            "WebhookReplayRequested" => Self::ReplayRequested(parse(event)?),
            "WebhookEndpointFailing" => Self::Failing(parse(event)?),
            "WebhookEndpointRedriven" => Self::Redriven(parse(event)?),
            other => {
                return Err(format!(
                    "unknown registry event type {other:?} at position {}",
                    event.position
                ))
            }
        })
    }
}

/// An endpoint as the registry's events leave it.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    /// Its id.
    pub id: String,
    /// Whose videos it hears of; `None`: every video.
    pub owner: Option<String>,
    /// Where events are sent.
    pub url: String,
    /// The public event types it wants; empty: every type that is not opt-in.
    pub event_types: Vec<String>,
    /// For people.
    pub description: String,
    /// Whether events are sent.
    pub enabled: bool,
    /// Requests per second at most; 0: no limit but the concurrency.
    pub max_per_second: u32,
    /// Which signing secret its secrets derive from, when recorded.
    pub key_id: Option<String>,
    /// The current secret's version (1 at creation).
    pub secret_version: u32,
    /// Until when the previous secret signs too, if a rotation's overlap is running.
    pub previous_valid_until: Option<DateTime<Utc>>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// The global position of its creation: it hears of events after it.
    pub created_position: u64,
    /// Set while it is failing: its deliveries are parked.
    pub failing: Option<Failing>,
}

impl Endpoint {
    /// Whether it wants events of public type `event_type`.
    pub fn wants(&self, event_type: &str) -> bool {
        if self.event_types.is_empty() {
            !OPT_IN_TYPES.contains(&event_type)
        } else {
            self.event_types.iter().any(|t| t == event_type)
        }
    }

    /// Failing (its deliveries parked), else enabled or disabled.
    pub fn state(&self) -> EndpointState {
        match (&self.failing, self.enabled) {
            (Some(_), _) => EndpointState::Failing,
            (None, true) => EndpointState::Enabled,
            (None, false) => EndpointState::Disabled,
        }
    }

    /// Refuses to sign for it with a signing secret other than the one its secrets derive
    /// from (`key_id`: this process's [`crate::Signer::webhook_key_id`]).
    ///
    /// # Errors
    /// What is wrong and how to mend it.
    pub fn check_key(&self, key_id: &str) -> Result<(), String> {
        match &self.key_id {
            Some(recorded) if recorded != key_id => Err(format!(
                "webhook endpoint {}'s secrets derive from signing secret {recorded}, this process has {key_id}: \
                 give every API and projector process the same VODSOURCE_SIGNING_SECRET",
                self.id
            )),
            _ => Ok(()),
        }
    }

    /// Whether it hears of videos owned by `owner`.
    pub fn covers(&self, owner: &str) -> bool {
        self.owner.as_deref().is_none_or(|o| o == owner)
    }

    /// The secret versions that sign at `now`, newest first.
    pub fn signing_versions(&self, now: DateTime<Utc>) -> Vec<u32> {
        let mut versions = vec![self.secret_version];
        if self.secret_version > 1 && self.previous_valid_until.is_some_and(|until| now < until) {
            versions.push(self.secret_version - 1);
        }
        versions
    }
}

/// Whether an endpoint is sent events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointState {
    /// Events are sent.
    Enabled,
    /// Nothing that happens meanwhile is sent.
    Disabled,
    /// Deliveries are parked until it is re-driven.
    Failing,
}

impl EndpointState {
    /// `enabled`, `disabled` or `failing`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Enabled => "enabled",
            Self::Disabled => "disabled",
            Self::Failing => "failing",
        }
    }
}

/// Every endpoint, as of a position of the log.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Registry {
    /// The stream's version folded in.
    pub version: u64,
    /// The global position of the last event folded in.
    pub position: u64,
    /// Live endpoints by id.
    pub endpoints: BTreeMap<String, Endpoint>,
}

impl Registry {
    /// Folds one stored event in.
    ///
    /// # Errors
    /// An event this build cannot read.
    pub fn apply(&mut self, recorded: &RecordedEvent) -> Result<(), String> {
        let event = RegistryEvent::decode(recorded)?;
        self.version = recorded.version;
        self.position = recorded.position;
        let at = recorded.occurred_at;
        match event {
            RegistryEvent::Created(e) => {
                self.endpoints.insert(
                    e.endpoint_id.clone(),
                    Endpoint {
                        id: e.endpoint_id,
                        owner: e.owner,
                        url: e.url,
                        event_types: e.event_types,
                        description: e.description,
                        enabled: e.enabled,
                        max_per_second: e.max_per_second,
                        key_id: e.key_id,
                        secret_version: 1,
                        previous_valid_until: None,
                        created_at: at,
                        updated_at: at,
                        created_position: recorded.position,
                        failing: None,
                    },
                );
            }
            RegistryEvent::Updated(e) => {
                if let Some(endpoint) = self.endpoints.get_mut(&e.endpoint_id) {
                    if let Some(url) = e.url {
                        endpoint.url = url;
                    }
                    if let Some(types) = e.event_types {
                        endpoint.event_types = types;
                    }
                    if let Some(description) = e.description {
                        endpoint.description = description;
                    }
                    if let Some(enabled) = e.enabled {
                        endpoint.enabled = enabled;
                    }
                    if let Some(limit) = e.max_per_second {
                        endpoint.max_per_second = limit;
                    }
                    endpoint.updated_at = at;
                }
            }
            RegistryEvent::SecretRotated(e) => {
                if let Some(endpoint) = self.endpoints.get_mut(&e.endpoint_id) {
                    endpoint.secret_version = e.version;
                    endpoint.previous_valid_until = Some(e.previous_valid_until);
                    endpoint.updated_at = at;
                }
            }
            RegistryEvent::Deleted(e) => {
                self.endpoints.remove(&e.endpoint_id);
            }
            // The dispatcher acts on a replay where it reads it; a replay also ends parking
            // (it is an admin's decision of where deliveries go on from).
            RegistryEvent::ReplayRequested(ReplayRequested { endpoint_id, .. })
            | RegistryEvent::Redriven(Redriven { endpoint_id }) => {
                if let Some(endpoint) = self.endpoints.get_mut(&endpoint_id) {
                    endpoint.failing = None;
                }
            }
            RegistryEvent::Failing(e) => {
                if let Some(endpoint) = self.endpoints.get_mut(&e.endpoint_id) {
                    endpoint.failing = Some(e);
                }
            }
        }
        Ok(())
    }

    /// Endpoints of `owner` (`None`: the admins' endpoints over every video).
    pub fn count_of(&self, owner: Option<&str>) -> usize {
        self.endpoints.values().filter(|e| e.owner.as_deref() == owner).count()
    }
}

/// An endpoint's URL as operators' listings show it: without credentials, query or fragment
/// (they may hold secrets).
pub fn shown_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.set_query(None);
            parsed.set_fragment(None);
            parsed.to_string()
        }
        Err(_) => "(not a URL)".into(),
    }
}

/// The lines `vodsource webhooks` prints: each endpoint with its scope, state, position and
/// lag behind `head`, its URL as [`shown_url`] shows it; then the count and the head.
pub fn operators_table(endpoints: &[(Endpoint, u64)], head: u64) -> Vec<String> {
    let mut lines = vec![format!(
        "{:<35} {:<8} {:<8} {:>10} {:>10}  url",
        "endpoint", "scope", "state", "position", "lag"
    )];
    for (endpoint, position) in endpoints {
        lines.push(format!(
            "{:<35} {:<8} {:<8} {:>10} {:>10}  {}",
            endpoint.id,
            endpoint.owner.as_deref().unwrap_or("all"),
            endpoint.state().name(),
            position,
            head.saturating_sub(*position),
            shown_url(&endpoint.url),
        ));
    }
    lines.push(format!("{} endpoint(s); log head: {head}", endpoints.len()));
    lines
}

/// Checks the event types an endpoint asks for: known, each once.
///
/// # Errors
/// The first type that is not known, or one named twice.
pub fn check_event_types(types: &[String]) -> Result<(), String> {
    for (i, event_type) in types.iter().enumerate() {
        if !EVENT_TYPES.iter().any(|(known, _)| known == event_type) {
            return Err(format!("{event_type:?} is not an event type"));
        }
        if types[..i].contains(event_type) {
            return Err(format!("{event_type:?} is named twice"));
        }
    }
    Ok(())
}

/// The registry over the log, with the last state read kept in memory.
#[derive(Clone)]
pub struct RegistryStore {
    log: Arc<dyn EventLog>,
    cached: Arc<Mutex<Registry>>,
}

/// Why a registry change did not take.
#[derive(Debug)]
pub enum RecordError<E> {
    /// The decision refused it.
    Refused(E),
    /// The store failed, or concurrent writers kept winning.
    Store(StoreError),
}

impl RegistryStore {
    /// The registry in `log`.
    pub fn new(log: Arc<dyn EventLog>) -> Self {
        Self {
            log,
            cached: Arc::default(),
        }
    }

    /// The registry as the log holds it now.
    ///
    /// # Errors
    /// The log failed; an event that cannot be read is `Corrupt`.
    pub async fn current(&self) -> Result<Registry, StoreError> {
        let mut registry = self.cached.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let before = registry.version;
        self.fold(&mut registry, u64::MAX).await?;
        if registry.version > before {
            let mut cached = self.cached.lock().unwrap_or_else(PoisonError::into_inner);
            if cached.version < registry.version {
                *cached = registry.clone();
            }
        }
        Ok(registry)
    }

    /// The registry as it was at global `position` (its events at or before it).
    ///
    /// # Errors
    /// As [`RegistryStore::current`].
    pub async fn as_of(&self, position: u64) -> Result<Registry, StoreError> {
        let mut registry = Registry::default();
        self.fold(&mut registry, position).await?;
        Ok(registry)
    }

    async fn fold(&self, registry: &mut Registry, until: u64) -> Result<(), StoreError> {
        loop {
            let page = self.log.read_stream(REGISTRY_STREAM, registry.version, PAGE).await?;
            let done = page.len() < PAGE;
            for event in &page {
                if event.position > until {
                    return Ok(());
                }
                registry.apply(event).map_err(|reason| StoreError::Corrupt {
                    position: event.position,
                    reason,
                })?;
            }
            if done {
                return Ok(());
            }
        }
    }

    /// Decides on the current registry and appends what `decide` returns; decides again on
    /// a newer registry when another writer got in first. Returns the registry after it.
    ///
    /// # Errors
    /// The decision's refusal, or the store's failure.
    pub async fn record<E>(
        &self,
        actor: &str,
        now: DateTime<Utc>,
        decide: impl Fn(&Registry) -> Result<Vec<RegistryEvent>, E>,
    ) -> Result<(Registry, Option<Appended>), RecordError<E>> {
        const ATTEMPTS: usize = 5;
        for _ in 0..ATTEMPTS {
            let registry = self.current().await.map_err(RecordError::Store)?;
            let events = decide(&registry).map_err(RecordError::Refused)?;
            if events.is_empty() {
                return Ok((registry, None));
            }
            let metadata = EventMetadata {
                actor: Some(actor.to_owned()),
                correlation_id: Some(Uuid::now_v7()),
                ..EventMetadata::default()
            };
            let request = AppendRequest {
                stream_id: REGISTRY_STREAM.to_owned(),
                stream_type: REGISTRY_STREAM_TYPE.to_owned(),
                expected: ExpectedVersion::Exact(registry.version),
                events: events
                    .iter()
                    .map(|event| NewEvent {
                        event_id: Uuid::now_v7(),
                        event_type: event.type_name().to_owned(),
                        schema_version: SCHEMA_VERSION,
                        payload: event.payload(),
                        metadata: metadata.clone(),
                        occurred_at: now,
                    })
                    .collect(),
            };
            match self.log.append(request).await {
                Ok(appended) => {
                    let after = self.current().await.map_err(RecordError::Store)?;
                    return Ok((after, Some(appended)));
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(RecordError::Store(e)),
            }
        }
        Err(RecordError::Store(StoreError::unavailable(
            "the webhook registry kept changing; try again",
        )))
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use vodsource_commands::ports::EventMetadata;

    use super::*;

    fn at(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 5, 12, minute, 0).single().expect("date")
    }

    fn stored(version: u64, position: u64, event: &RegistryEvent) -> RecordedEvent {
        RecordedEvent {
            position,
            stream_id: REGISTRY_STREAM.into(),
            stream_type: REGISTRY_STREAM_TYPE.into(),
            version,
            event_id: Uuid::from_u128(position.into()),
            event_type: event.type_name().into(),
            schema_version: SCHEMA_VERSION,
            occurred_at: at(u32::try_from(position).unwrap_or(0)),
            metadata: EventMetadata::default(),
            payload: event.payload(),
        }
    }

    fn created(id: &str, owner: Option<&str>, types: &[&str]) -> RegistryEvent {
        RegistryEvent::Created(Created {
            endpoint_id: id.into(),
            owner: owner.map(Into::into),
            url: format!("https://example.com/{id}"),
            event_types: types.iter().map(|t| (*t).to_owned()).collect(),
            description: String::new(),
            enabled: true,
            max_per_second: 0,
            key_id: None,
        })
    }

    #[test]
    fn the_registry_is_the_fold_of_its_events() {
        let events = [
            created("a", None, &[]),
            created("b", Some("alice"), &["video.ready"]),
            RegistryEvent::Updated(Updated {
                endpoint_id: "a".into(),
                url: Some("https://example.com/new".into()),
                enabled: Some(false),
                ..Updated::default()
            }),
            RegistryEvent::SecretRotated(SecretRotated {
                endpoint_id: "b".into(),
                version: 2,
                previous_valid_until: at(30),
            }),
            RegistryEvent::Deleted(Deleted {
                endpoint_id: "a".into(),
            }),
        ];
        let mut registry = Registry::default();
        for (i, event) in events.iter().enumerate() {
            let n = i as u64 + 1;
            registry.apply(&stored(n, n * 10, event)).expect("applies");
            if n == 3 {
                let a = &registry.endpoints["a"];
                assert_eq!(
                    (a.url.as_str(), a.enabled, a.updated_at),
                    ("https://example.com/new", false, at(30))
                );
                assert_eq!(a.created_position, 10);
            }
        }
        assert_eq!((registry.version, registry.position), (5, 50));
        assert_eq!(registry.endpoints.keys().collect::<Vec<_>>(), ["b"]);
        let b = &registry.endpoints["b"];
        assert_eq!((b.secret_version, b.previous_valid_until), (2, Some(at(30))));
        assert_eq!(b.signing_versions(at(29)), [2, 1], "both sign during the overlap");
        assert_eq!(b.signing_versions(at(30)), [2], "then only the new one");
        assert_eq!(registry.count_of(Some("alice")), 1);
        assert_eq!(registry.count_of(None), 0);
    }

    #[test]
    fn a_failing_endpoint_is_parked_until_re_driven_or_replayed() {
        let failing = |n: u64| {
            RegistryEvent::Failing(Failing {
                endpoint_id: "a".into(),
                position: n,
                event_id: format!("evt_{n}"),
                attempts: 30,
                reason: "answered 500".into(),
                since: at(1),
            })
        };
        let events = [
            created("a", None, &[]),
            failing(1),
            RegistryEvent::Redriven(Redriven {
                endpoint_id: "a".into(),
            }),
            failing(2),
            RegistryEvent::ReplayRequested(ReplayRequested {
                endpoint_id: "a".into(),
                from_position: 0,
            }),
        ];
        let mut registry = Registry::default();
        let mut states = Vec::new();
        for (i, event) in events.iter().enumerate() {
            let n = i as u64 + 1;
            registry.apply(&stored(n, n, event)).expect("applies");
            let a = &registry.endpoints["a"];
            states.push((a.state().name(), a.failing.as_ref().map(|f| f.position)));
        }
        assert_eq!(
            states,
            [
                ("enabled", None),
                ("failing", Some(1)),
                ("enabled", None),
                ("failing", Some(2)),
                ("enabled", None)
            ]
        );
    }

    #[test]
    fn an_endpoint_is_signed_for_only_with_the_secret_its_secrets_derive_from() {
        let mut registry = Registry::default();
        let mut event = created("a", None, &[]);
        if let RegistryEvent::Created(c) = &mut event {
            c.key_id = Some("key_1".into());
        }
        registry.apply(&stored(1, 1, &event)).expect("applies");
        registry
            .apply(&stored(2, 2, &created("old", None, &[])))
            .expect("applies");
        assert!(registry.endpoints["a"].check_key("key_1").is_ok());
        let refused = registry.endpoints["a"].check_key("key_2").expect_err("refused");
        assert!(
            refused.contains("key_1") && refused.contains("VODSOURCE_SIGNING_SECRET"),
            "{refused}"
        );
        assert!(
            registry.endpoints["old"].check_key("key_2").is_ok(),
            "endpoints recorded before key ids are not judged"
        );
    }

    #[test]
    fn an_endpoint_wants_what_it_names_else_every_type_not_opt_in_and_covers_its_owners_videos() {
        let mut registry = Registry::default();
        registry
            .apply(&stored(1, 1, &created("all", None, &[])))
            .expect("applies");
        registry
            .apply(&stored(
                2,
                2,
                &created("mine", Some("alice"), &["video.encoding.progressed"]),
            ))
            .expect("applies");
        let (all, mine) = (&registry.endpoints["all"], &registry.endpoints["mine"]);
        assert!(all.wants("video.ready") && !all.wants("video.encoding.progressed"));
        assert!(mine.wants("video.encoding.progressed") && !mine.wants("video.ready"));
        assert!(all.covers("alice") && all.covers("bob"));
        assert!(mine.covers("alice") && !mine.covers("bob"));
    }

    #[test]
    fn unknown_types_newer_schemas_and_bad_payloads_are_refused_not_skipped() {
        let mut event = stored(1, 1, &created("a", None, &[]));
        event.event_type = "WebhookEndpointRenamed".into();
        assert!(RegistryEvent::decode(&event)
            .expect_err("refused")
            .contains("unknown registry event type"));
        let mut event = stored(1, 1, &created("a", None, &[]));
        event.schema_version = SCHEMA_VERSION + 1;
        assert!(RegistryEvent::decode(&event)
            .expect_err("refused")
            .contains("newer than"));
        let mut event = stored(1, 1, &created("a", None, &[]));
        event.payload = "{}".into();
        assert!(RegistryEvent::decode(&event)
            .expect_err("refused")
            .contains("does not deserialize"));
    }

    #[test]
    fn the_operators_table_shows_scope_state_lag_and_no_secret_in_urls() {
        let mut registry = Registry::default();
        let mut event = created("wh_a", Some("alice"), &[]);
        if let RegistryEvent::Created(c) = &mut event {
            c.url = "https://user:pw@hooks.example.com/in?token=secret#x".into();
            c.enabled = false;
        }
        registry.apply(&stored(1, 5, &event)).expect("applies");
        let rows = vec![(registry.endpoints["wh_a"].clone(), 7)];
        let lines = operators_table(&rows, 10);
        assert_eq!(lines.len(), 3);
        let row: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            row,
            ["wh_a", "alice", "disabled", "7", "3", "https://hooks.example.com/in"]
        );
        assert_eq!(lines[2], "1 endpoint(s); log head: 10");
    }

    #[test]
    fn event_types_must_be_known_and_named_once() {
        assert!(check_event_types(&["video.ready".into(), "video.deleted".into()]).is_ok());
        assert!(check_event_types(&["video.readyy".into()])
            .expect_err("refused")
            .contains("not an event type"));
        assert!(check_event_types(&["video.ready".into(), "video.ready".into()])
            .expect_err("refused")
            .contains("twice"));
    }
}
