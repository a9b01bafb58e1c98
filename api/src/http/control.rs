//! The projection runners and the encoding supervisor of a process (`serve`, `projector`),
//! and rebuilds through them: a rebuild stops that projection's runner (its lease is released), fills a
//! shadow generation, swaps it in, and starts the runner again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use vodsource_projections::{CatalogProjector, DeadLetterProjector, Projector, StatusProjector, PROJECTIONS};

use crate::roles::{rebuild_named, Stores};

type Task = JoinHandle<Result<(), String>>;

/// A rebuild's progress as the admin API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct RebuildState {
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Position reached.
    pub position: u64,
    /// Head when last reported.
    pub head: u64,
    /// Set when it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// Set when it failed.
    pub error: Option<String>,
}

struct Slot {
    stop: watch::Sender<bool>,
    task: Option<Task>,
    rebuild: Option<Arc<Mutex<RebuildState>>>,
    rebuilding: bool,
}

/// Runs the in-process components.
pub struct Control {
    stores: Stores,
    slots: Mutex<HashMap<&'static str, Slot>>,
    supervisor: Mutex<Option<(watch::Sender<bool>, Task)>>,
}

/// Completes when `stopped` turns true.
pub(crate) async fn until(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// A component's result, reported when it stops with an error (the others go on).
fn reported<E: std::fmt::Display>(component: &str, result: Result<(), E>) -> Result<(), String> {
    result.map_err(|e| {
        tracing::error!(component, error = %e, "a component stopped; the others go on");
        e.to_string()
    })
}

fn spawn_runner<P: Projector>(stores: &Stores, projector: P, stopped: watch::Receiver<bool>) -> Task {
    let runner = stores.runner(projector);
    tokio::spawn(async move {
        let name = runner.name();
        reported(name, runner.run(until(stopped)).await)
    })
}

fn start(stores: &Stores, name: &str) -> (watch::Sender<bool>, Task) {
    let (stop, stopped) = watch::channel(false);
    let task = match name {
        CatalogProjector::NAME => spawn_runner(stores, CatalogProjector, stopped),
        StatusProjector::NAME => spawn_runner(stores, StatusProjector, stopped),
        _ => spawn_runner(stores, DeadLetterProjector, stopped),
    };
    (stop, task)
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

impl Control {
    /// Starts every projection runner and the encoding supervisor.
    pub fn start(stores: Stores) -> Arc<Self> {
        let mut slots = HashMap::new();
        for name in PROJECTIONS {
            let (stop, task) = start(&stores, name);
            slots.insert(
                name,
                Slot {
                    stop,
                    task: Some(task),
                    rebuild: None,
                    rebuilding: false,
                },
            );
        }
        let (stop, stopped) = watch::channel(false);
        let supervisor = stores.supervisor();
        let task = tokio::spawn(async move { reported("encoding supervisor", supervisor.run(until(stopped)).await) });
        Arc::new(Self {
            stores,
            slots: Mutex::new(slots),
            supervisor: Mutex::new(Some((stop, task))),
        })
    }

    /// The last rebuild of `name`, if any.
    pub fn rebuild_state(&self, name: &str) -> Option<RebuildState> {
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots
            .get(name)
            .and_then(|s| s.rebuild.as_ref())
            .map(|r| r.lock().unwrap_or_else(PoisonError::into_inner).clone())
    }

    /// Starts a rebuild of `name` in the background.
    ///
    /// # Errors
    /// `Unknown` or `Running`.
    pub fn rebuild(self: &Arc<Self>, name: &str) -> Result<RebuildState, RebuildError> {
        let name: &'static str = PROJECTIONS
            .iter()
            .find(|p| **p == name)
            .copied()
            .ok_or_else(|| RebuildError::Unknown(name.to_owned()))?;
        let (old, state) = {
            let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            let slot = slots
                .get_mut(name)
                .ok_or_else(|| RebuildError::Unknown(name.to_owned()))?;
            if slot.rebuilding {
                return Err(RebuildError::Running(name.to_owned()));
            }
            slot.rebuilding = true;
            let state = Arc::new(Mutex::new(RebuildState {
                started_at: Utc::now(),
                position: 0,
                head: 0,
                finished_at: None,
                error: None,
            }));
            slot.rebuild = Some(state.clone());
            let _ = slot.stop.send(true);
            (slot.task.take(), state)
        };
        let snapshot = state.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let control = self.clone();
        tokio::spawn(async move {
            if let Some(task) = old {
                let _ = task.await;
            }
            let progress = state.clone();
            let result = rebuild_named(&control.stores, name, move |p| {
                let mut s = progress.lock().unwrap_or_else(PoisonError::into_inner);
                s.position = p.position;
                s.head = p.head;
            })
            .await;
            {
                let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
                s.finished_at = Some(Utc::now());
                match result {
                    Ok(position) => {
                        s.position = position;
                        tracing::info!(projection = name, position, "rebuild finished");
                    }
                    Err(e) => {
                        tracing::error!(projection = name, error = %e, "rebuild failed");
                        s.error = Some(e.to_string());
                    }
                }
            }
            let mut slots = control.slots.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(slot) = slots.get_mut(name) {
                let (stop, task) = start(&control.stores, name);
                slot.stop = stop;
                slot.task = Some(task);
                slot.rebuilding = false;
            }
        });
        Ok(snapshot)
    }

    /// Whether a rebuild of `name` is running.
    pub fn rebuilding(&self, name: &str) -> bool {
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.get(name).is_some_and(|s| s.rebuilding)
    }

    /// Stops everything: each runner checkpoints what it applied and releases its lease.
    /// Returns how many components had stopped with an error.
    pub async fn shutdown(&self) -> usize {
        let mut tasks = Vec::new();
        {
            let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            for (name, slot) in slots.iter_mut() {
                let _ = slot.stop.send(true);
                if let Some(task) = slot.task.take() {
                    tasks.push((*name, task));
                }
            }
        }
        if let Some((stop, task)) = self.supervisor.lock().unwrap_or_else(PoisonError::into_inner).take() {
            let _ = stop.send(true);
            tasks.push(("encoding supervisor", task));
        }
        let mut failures = 0;
        for (name, task) in tasks {
            match task.await {
                Ok(Ok(())) => tracing::info!(component = name, "stopped"),
                // Reported when it happened.
                Ok(Err(_)) => failures += 1,
                Err(e) => {
                    tracing::error!(component = name, error = %e, "task failed");
                    failures += 1;
                }
            }
        }
        failures
    }
}

/// Long-running components of a process besides the runners and the supervisor (encoding
/// workers, the watch-state consumer, the relay), each on its own task with its own stop.
#[derive(Default)]
pub struct Tasks {
    tasks: Vec<(String, watch::Sender<bool>, Task)>,
}

impl Tasks {
    /// Starts the component `start` makes from its stop signal.
    pub fn spawn<F, E>(&mut self, name: impl Into<String>, start: impl FnOnce(watch::Receiver<bool>) -> F)
    where
        F: std::future::Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display,
    {
        let name = name.into();
        let (stop, stopped) = watch::channel(false);
        let component = start(stopped);
        let label = name.clone();
        let task = tokio::spawn(async move { reported(&label, component.await) });
        self.tasks.push((name, stop, task));
    }

    /// Starts each encoding worker (named by its id).
    pub fn workers(&mut self, workers: Vec<vodsource_encoder::Worker>) {
        for worker in workers {
            self.spawn(worker.id().to_owned(), |stopped| worker.run(until(stopped)));
        }
    }

    /// Stops every component (an encoding worker fails its job in progress as retryable so
    /// another worker takes it at once) and waits for them. Returns how many stopped with an
    /// error.
    pub async fn shutdown(self) -> usize {
        for (_, stop, _) in &self.tasks {
            let _ = stop.send(true);
        }
        let mut failures = 0;
        for (name, _, task) in self.tasks {
            match task.await {
                Ok(Ok(())) => tracing::info!(component = %name, "stopped"),
                // Reported when it happened.
                Ok(Err(_)) => failures += 1,
                Err(e) => {
                    tracing::error!(component = %name, error = %e, "task failed");
                    failures += 1;
                }
            }
        }
        failures
    }
}
