use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use uuid::Uuid;
use vodsource_domain::{Video, VideoCommand, VideoError, VideoServices};

use crate::ports::{EventMetadata, StoreError};
use crate::store::VideoStore;

/// How many times a command without an explicit expected version is re-decided after a
/// concurrent write moved the stream on.
const CONFLICT_RETRIES: usize = 5;

/// Who sends a command and under which conditions.
#[derive(Debug, Clone, Default)]
pub struct CommandContext {
    /// The principal.
    pub actor: Option<String>,
    /// The flow the command belongs to.
    pub correlation_id: Option<Uuid>,
    /// The event or request that caused it.
    pub causation_id: Option<Uuid>,
    /// When set, the command applies only at exactly this stream version.
    pub expected_version: Option<u64>,
}

impl CommandContext {
    /// A context naming only the actor.
    pub fn actor(actor: impl Into<String>) -> Self {
        Self {
            actor: Some(actor.into()),
            ..Self::default()
        }
    }
}

/// What a command did.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandOutcome {
    /// The stream version after the command (unchanged when it recorded nothing).
    pub version: u64,
    /// The events recorded, in order.
    pub events: Vec<vodsource_domain::VideoEvent>,
    /// Global position of the last event recorded, if any.
    pub position: Option<u64>,
}

/// Why a command did not take effect.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CommandError {
    /// The aggregate refused it.
    #[error(transparent)]
    Domain(#[from] VideoError),
    /// The caller's expected version is not the current one.
    #[error("expected version {expected}, the video is at {actual}")]
    VersionMismatch {
        /// What the caller expected.
        expected: u64,
        /// What the stream holds.
        actual: u64,
    },
    /// Concurrent writes kept winning.
    #[error("the video changed concurrently; try again")]
    Conflict,
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
}

/// Executes Video commands: load (cached), decide, append with the version check.
#[derive(Clone)]
pub struct VideoCommands {
    store: VideoStore,
    services: VideoServices,
}

impl VideoCommands {
    /// Commands over `store`, deciding with `services`.
    pub fn new(store: VideoStore, services: VideoServices) -> Self {
        Self { store, services }
    }

    /// The store underneath.
    pub fn store(&self) -> &VideoStore {
        &self.store
    }

    /// The services (clock, policy) commands are decided with.
    pub fn services(&self) -> &VideoServices {
        &self.services
    }

    /// Runs `command` against video `id`, in a `command` span that carries the video id, the
    /// command's name, its actor and correlation id, so everything logged on its way (the
    /// append included) names the flow it belongs to.
    ///
    /// # Errors
    /// The domain's refusal, a version mismatch when `context.expected_version` is set, a
    /// conflict when concurrent writers kept winning, or a store failure.
    #[tracing::instrument(
        name = "command",
        skip_all,
        fields(
            video_id = %id,
            command = command.name(),
            actor = context.actor.as_deref(),
            correlation_id = context.correlation_id.map(tracing::field::display),
        )
    )]
    pub async fn execute(
        &self,
        id: &str,
        command: VideoCommand,
        context: &CommandContext,
    ) -> Result<CommandOutcome, CommandError> {
        let metadata = EventMetadata {
            correlation_id: context.correlation_id,
            causation_id: context.causation_id,
            actor: context.actor.clone(),
            extra: Default::default(),
        };
        let mut tries = 0;
        loop {
            tries += 1;
            let mut loaded = self.store.load(id).await.map_err(CommandError::Store)?;
            let mut refreshed = false;
            let events = loop {
                let decided = match context.expected_version {
                    Some(expected) if expected != loaded.version => Err(CommandError::VersionMismatch {
                        expected,
                        actual: loaded.version,
                    }),
                    _ => {
                        // `handle` decides first and applies only what it decided, so a
                        // refusal leaves the state as it was.
                        let sink = EventSink::<Video>::default();
                        match loaded.video.handle(command.clone(), &self.services, &sink).await {
                            Ok(()) => Ok(sink.collect().await),
                            Err(e) => Err(e.into()),
                        }
                    }
                };
                // The cache is trusted where the append's version check would catch it being
                // behind another process. A refusal, a version mismatch and a no-op append
                // nothing, so they are checked against the log before they are answered.
                let unchecked = !matches!(&decided, Ok(events) if !events.is_empty());
                if unchecked && !refreshed && self.store.refresh(&mut loaded).await.map_err(CommandError::Store)? {
                    refreshed = true;
                    continue;
                }
                break decided?;
            };
            let version = loaded.version;
            match self.store.append(loaded, &events, &metadata).await {
                Ok(None) => {
                    return Ok(CommandOutcome {
                        version,
                        events,
                        position: None,
                    })
                }
                Ok(Some(appended)) => {
                    tracing::debug!(
                        version = appended.version,
                        position = appended.last_position,
                        events = events.len(),
                        "recorded"
                    );
                    return Ok(CommandOutcome {
                        version: appended.version,
                        events,
                        position: Some(appended.last_position),
                    });
                }
                Err(StoreError::Conflict { actual, .. }) => {
                    if let Some(expected) = context.expected_version {
                        return Err(CommandError::VersionMismatch { expected, actual });
                    }
                    if tries > CONFLICT_RETRIES {
                        return Err(CommandError::Conflict);
                    }
                }
                Err(e) => return Err(CommandError::Store(e)),
            }
        }
    }
}
