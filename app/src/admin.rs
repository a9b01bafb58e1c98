//! The operators' use cases: readiness of the dependencies, the projections' positions and
//! lag, rebuilds through the runners of this process, and the dead letters.

use chrono::{DateTime, Utc};
use vodsource_projections::{DeadLetterProjector, DeadLetterView, IndexCursor, ProjectionStatus, PROJECTIONS};

use crate::error::{AppError, ErrorKind};
use crate::listing::{decode_cursor, encode_cursor};
use crate::principal::{Principal, Role};
use crate::Core;

/// The projection runners of this process, which rebuilds go through.
pub trait Rebuilds: Send + Sync {
    /// The last rebuild of projection `name` started here, if any.
    fn last(&self, name: &str) -> Option<RebuildInfo>;
    /// Whether a rebuild of `name` is running.
    fn running(&self, name: &str) -> bool;
    /// Starts a rebuild of `name` in the background.
    ///
    /// # Errors
    /// An unknown name, or a rebuild of it already running.
    fn start(&self, name: &str) -> Result<RebuildInfo, RebuildError>;
}

/// Why a rebuild was not started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RebuildError {
    /// No such projection.
    #[error("no projection named {0:?}")]
    Unknown(String),
    /// One is running.
    #[error("a rebuild of {0} is already running")]
    Running(String),
}

/// One dependency and whether it answers.
#[derive(Debug, Clone, PartialEq)]
pub struct Dependency {
    /// Which (`event_store`, `view_store`, `object_store`).
    pub name: &'static str,
    /// Where it is (no secrets).
    pub target: String,
    /// Why it is down; `None` when up.
    pub error: Option<String>,
}

/// A projection's state.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
#[cfg_attr(feature = "openapi", oai(skip_serializing_if_is_none))]
pub struct ProjectionInfo {
    /// Name.
    pub name: String,
    /// Position applied.
    pub position: u64,
    /// Events behind the log head.
    pub lag: u64,
    /// Live generation.
    pub generation: u32,
    /// `running`, `failed` or `rebuilding`.
    pub state: String,
    /// Why it stopped, when failed.
    pub error: Option<String>,
    /// The last rebuild started through the API, if any.
    pub rebuild: Option<RebuildInfo>,
}

/// A rebuild's progress.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
#[cfg_attr(feature = "openapi", oai(skip_serializing_if_is_none))]
pub struct RebuildInfo {
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Position reached.
    pub position: u64,
    /// The log head it is catching up to.
    pub head: u64,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// Why it failed.
    pub error: Option<String>,
}

/// The projections.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
#[cfg_attr(feature = "openapi", oai(skip_serializing_if_is_none))]
pub struct Projections {
    /// Position of the last committed event.
    pub head: u64,
    /// Each projection.
    pub projections: Vec<ProjectionInfo>,
}

/// A video whose encoding failed for good.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
#[cfg_attr(feature = "openapi", oai(skip_serializing_if_is_none))]
pub struct DeadLetter {
    /// Id.
    pub video_id: String,
    /// The attempt that failed last.
    pub attempt: u32,
    /// Why.
    pub reason: String,
    /// When.
    pub failed_at: DateTime<Utc>,
}

/// A page of dead letters.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
#[cfg_attr(feature = "openapi", oai(skip_serializing_if_is_none))]
pub struct DeadLetterPage {
    /// In video id order.
    pub items: Vec<DeadLetter>,
    /// Pass as `cursor` for the next page.
    pub next_cursor: Option<String>,
}

/// The operators' use cases. Every one but [`Admin::readiness`] and [`Admin::gauges`]
/// (which their transports guard) needs the admin role.
pub struct Admin<'a> {
    core: &'a Core,
}

impl<'a> Admin<'a> {
    pub(crate) fn new(core: &'a Core) -> Self {
        Self { core }
    }

    /// Each dependency's state.
    pub async fn readiness(&self) -> Vec<Dependency> {
        let ports = &self.core.ports;
        let (log, views, objects) = tokio::join!(
            ports.log.head(),
            ports.views.projection(vodsource_projections::CatalogProjector::NAME),
            ports.objects.check(),
        );
        vec![
            Dependency {
                name: "event_store",
                target: ports.log.describe(),
                error: log.err().map(|e| e.to_string()),
            },
            Dependency {
                name: "view_store",
                target: "views".into(),
                error: views.err().map(|e| e.to_string()),
            },
            Dependency {
                name: "object_store",
                target: ports.objects.describe(),
                error: objects.err().map(|e| e.to_string()),
            },
        ]
    }

    /// Position, lag, generation and state of each projection.
    ///
    /// # Errors
    /// FORBIDDEN below admin; UNAVAILABLE.
    pub async fn projections(&self, principal: &Principal) -> Result<Projections, AppError> {
        principal.require(Role::Admin)?;
        self.gauges().await
    }

    /// [`Self::projections`] for the metrics, whose transport guards them.
    ///
    /// # Errors
    /// UNAVAILABLE.
    pub async fn gauges(&self) -> Result<Projections, AppError> {
        let ports = &self.core.ports;
        let head = ports
            .log
            .head()
            .await
            .map_err(|e| AppError::store("reading the log head", &e))?;
        let rebuilds = ports.rebuilds.as_deref();
        let mut projections = Vec::with_capacity(PROJECTIONS.len());
        for name in PROJECTIONS {
            let p = ports
                .views
                .projection(name)
                .await
                .map_err(|e| AppError::store("reading a projection", &e))?;
            let rebuilding = rebuilds.is_some_and(|r| r.running(name));
            let (state, error) = match p.status {
                _ if rebuilding => ("rebuilding".to_owned(), None),
                ProjectionStatus::Running => ("running".to_owned(), None),
                ProjectionStatus::Failed { error, .. } => ("failed".to_owned(), Some(error)),
            };
            projections.push(ProjectionInfo {
                name: name.to_owned(),
                position: p.position,
                lag: head.saturating_sub(p.position),
                generation: p.generation,
                state,
                error,
                rebuild: rebuilds.and_then(|r| r.last(name)),
            });
        }
        Ok(Projections { head, projections })
    }

    /// Starts a rebuild of projection `name`: the whole log replayed into a shadow
    /// generation that is swapped in at the end; reads see the old view until then.
    ///
    /// # Errors
    /// FORBIDDEN below admin; NOT_RUNNING_HERE when this process runs no projections;
    /// PROJECTION_NOT_FOUND; REBUILD_RUNNING; UNAVAILABLE.
    pub async fn rebuild(&self, principal: &Principal, name: &str) -> Result<ProjectionInfo, AppError> {
        principal.require(Role::Admin)?;
        let Some(rebuilds) = &self.core.ports.rebuilds else {
            return Err(AppError::conflict(
                "NOT_RUNNING_HERE",
                "this server does not run the projections; use `vodsource replay` where they run",
                serde_json::Value::Null,
            ));
        };
        match rebuilds.start(name) {
            Ok(_) => {}
            Err(RebuildError::Unknown(_)) => {
                return Err(AppError::new(
                    ErrorKind::NotFound,
                    "PROJECTION_NOT_FOUND",
                    format!("no projection named {name:?}; they are {}", PROJECTIONS.join(", ")),
                    serde_json::Value::Null,
                ))
            }
            Err(e @ RebuildError::Running(_)) => {
                return Err(AppError::conflict(
                    "REBUILD_RUNNING",
                    e.to_string(),
                    serde_json::Value::Null,
                ))
            }
        }
        self.gauges()
            .await?
            .projections
            .into_iter()
            .find(|p| p.name == name)
            .ok_or_else(|| AppError::internal("rebuild", &"the projection vanished"))
    }

    /// Videos whose encoding failed for good, in video id order, with file paths taken out
    /// of the reasons.
    ///
    /// # Errors
    /// FORBIDDEN below admin; a bad cursor; UNAVAILABLE.
    pub async fn dead_letters(
        &self,
        principal: &Principal,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<DeadLetterPage, AppError> {
        principal.require(Role::Admin)?;
        // Cursors have one form across the API; this one's place is a video id.
        let after = cursor.map(decode_cursor).transpose()?.map(|place| place.sort);
        let docs = self
            .core
            .ports
            .views
            .scan(DeadLetterProjector::NAME, after.as_deref(), limit + 1)
            .await
            .map_err(|e| AppError::store("reading dead letters", &e))?;
        let more = docs.len() > limit;
        let mut items = Vec::with_capacity(limit);
        for doc in docs.into_iter().take(limit) {
            let v: DeadLetterView =
                serde_json::from_str(&doc.body).map_err(|e| AppError::internal("a dead letter", &e))?;
            items.push(DeadLetter {
                video_id: v.video_id,
                attempt: v.attempt,
                reason: vodsource_domain::redact_paths(&v.reason),
                failed_at: v.failed_at,
            });
        }
        let next_cursor = if more {
            items.last().map(|d| {
                encode_cursor(&IndexCursor {
                    sort: d.video_id.clone(),
                    key: String::new(),
                })
            })
        } else {
            None
        };
        Ok(DeadLetterPage { items, next_cursor })
    }
}
