//! The projection runners and the encoding supervisor of a process (`serve`, `projector`),
//! one component of its supervisor, and rebuilds through them: a rebuild stops that projection's runner (its lease is released), fills a
//! shadow generation, swaps it in, and starts the runner again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::Utc;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use vodsource_projections::{CatalogProjector, DeadLetterProjector, Projector, StatusProjector, PROJECTIONS};

use vodsource_app::admin::{RebuildError, RebuildInfo, Rebuilds};

use crate::roles::{rebuild_named, Stores};
use crate::supervisor::{reported, until};

type Task = JoinHandle<Result<(), String>>;

struct Slot {
    stop: watch::Sender<bool>,
    task: Option<Task>,
    rebuild: Option<Arc<Mutex<RebuildInfo>>>,
    rebuilding: bool,
}

/// Runs the in-process components.
pub struct Control {
    stores: Stores,
    slots: Mutex<HashMap<&'static str, Slot>>,
    supervisor: Mutex<Option<(watch::Sender<bool>, Task)>>,
}

/// The runners of a [`Control`] as the application's port for rebuilds.
pub struct Runners(pub Arc<Control>);

impl Rebuilds for Runners {
    fn last(&self, name: &str) -> Option<RebuildInfo> {
        self.0.rebuild_state(name)
    }

    fn running(&self, name: &str) -> bool {
        self.0.rebuilding(name)
    }

    fn start(&self, name: &str) -> Result<RebuildInfo, RebuildError> {
        self.0.rebuild(name)
    }
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
    pub fn rebuild_state(&self, name: &str) -> Option<RebuildInfo> {
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
    pub fn rebuild(self: &Arc<Self>, name: &str) -> Result<RebuildInfo, RebuildError> {
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
            let state = Arc::new(Mutex::new(RebuildInfo {
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
