//! One supervisor for every long-running component of a process: each runs on its own task
//! with its own stop signal; one that stops with an error is reported and does not stop the
//! others, but makes the process's exit a failure. Shutdown is one path, in stages: the
//! components that serve requests stop first (letting requests in flight finish), then the
//! workers, relay and sinks at once (workers hand their job back, sinks flush), then the
//! projection runners (which checkpoint).

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Completes when `stopped` turns true.
pub(crate) async fn until(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// A component's result, reported when it stops with an error (the others go on).
pub(crate) fn reported<E: std::fmt::Display>(component: &str, result: Result<(), E>) -> Result<(), String> {
    result.map_err(|e| {
        tracing::error!(component, error = %e, "a component stopped; the others go on");
        e.to_string()
    })
}

/// When a component stops at shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// Serves requests: stopped first, and waited for.
    Serve,
    /// Does the work requests cause: stopped after the servers, all at once.
    Work,
    /// Folds what the others recorded (the projection runners): stopped last, so they see
    /// the others' last events.
    Fold,
}

struct Component {
    name: String,
    stage: Stage,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), String>>,
}

/// The components of a process.
pub struct Supervisor {
    components: Vec<Component>,
    /// How many components have stopped, by themselves or told to.
    finished: std::sync::Arc<watch::Sender<usize>>,
}

impl Default for Supervisor {
    fn default() -> Self {
        Self {
            components: Vec::new(),
            finished: std::sync::Arc::new(watch::channel(0).0),
        }
    }
}

impl Supervisor {
    /// Starts the component `start` makes from its stop signal.
    pub fn spawn<F, E>(&mut self, name: impl Into<String>, stage: Stage, start: impl FnOnce(watch::Receiver<bool>) -> F)
    where
        F: std::future::Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display,
    {
        let name = name.into();
        let (stop, stopped) = watch::channel(false);
        let component = start(stopped);
        let label = name.clone();
        let finished = self.finished.clone();
        let task = tokio::spawn(async move {
            let result = reported(&label, component.await);
            finished.send_modify(|n| *n += 1);
            result
        });
        self.components.push(Component {
            name,
            stage,
            stop,
            task,
        });
    }

    /// Completes once every component has stopped by itself (a process whose only component
    /// failed has nothing left to wait for); never when there are none.
    pub async fn all_stopped(&self) {
        let total = self.components.len();
        if total == 0 {
            return std::future::pending().await;
        }
        let mut finished = self.finished.subscribe();
        let _ = finished.wait_for(|n| *n >= total).await;
    }

    /// Stops every component, stage by stage, and waits for them. Returns how many stopped
    /// with an error.
    pub async fn shutdown(self) -> usize {
        let mut failures = 0;
        let mut components = self.components;
        for stage in [Stage::Serve, Stage::Work, Stage::Fold] {
            let (now, later): (Vec<_>, Vec<_>) = components.into_iter().partition(|c| c.stage == stage);
            components = later;
            for component in &now {
                let _ = component.stop.send(true);
            }
            for component in now {
                match component.task.await {
                    Ok(Ok(())) => tracing::info!(component = %component.name, "stopped"),
                    // Reported when it happened.
                    Ok(Err(_)) => failures += 1,
                    Err(e) => {
                        tracing::error!(component = %component.name, error = %e, "task failed");
                        failures += 1;
                    }
                }
            }
        }
        failures
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[tokio::test]
    async fn servers_stop_first_runners_last_and_failures_are_counted() {
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut supervisor = Supervisor::default();
        for (name, stage) in [
            ("runners", Stage::Fold),
            ("worker", Stage::Work),
            ("http", Stage::Serve),
        ] {
            let order = order.clone();
            supervisor.spawn(name, stage, move |stopped| async move {
                until(stopped).await;
                order.lock().map(|mut o| o.push(name)).ok();
                if name == "worker" {
                    Err("the job could not be handed back")
                } else {
                    Ok(())
                }
            });
        }
        assert_eq!(supervisor.shutdown().await, 1);
        assert_eq!(*order.lock().expect("order"), vec!["http", "worker", "runners"]);
    }

    #[tokio::test]
    async fn a_process_whose_components_all_stopped_has_nothing_to_wait_for() {
        let mut supervisor = Supervisor::default();
        supervisor.spawn("relay", Stage::Work, |_| async { Err::<(), _>("the stream is gone") });
        tokio::time::timeout(std::time::Duration::from_secs(10), supervisor.all_stopped())
            .await
            .expect("noticed");
        assert_eq!(supervisor.shutdown().await, 1);
    }
}
