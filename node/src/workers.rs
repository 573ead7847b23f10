//! The node's background workers (registration and heartbeats, repair, the hot tier, the
//! scrubber, the admin endpoint), run as named tasks in one [`JoinSet`] that a supervisor
//! watches.
//!
//! Data flow: `bind` spawns each worker with a child of the node's cancellation token; the
//! supervisor joins them as they end. A worker that panics is logged and recorded in
//! [`WorkerHealth`], which `/status` and `/metrics` show, so a dead repair loop does not go
//! unnoticed while the data plane keeps serving. Shutdown cancels the token and waits a
//! bounded time for every worker, then aborts the rest.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use medley_net::CancellationToken;
use tokio::task::JoinSet;
use tracing::{error, warn};

/// What became of the workers.
#[derive(Debug, Default)]
pub struct WorkerHealth {
    /// Workers that panicked, each with its panic message, in the order they ended.
    panics: parking_lot::Mutex<Vec<(&'static str, String)>>,
}

impl WorkerHealth {
    /// Workers that panicked, with their messages.
    pub fn panics(&self) -> Vec<(&'static str, String)> {
        self.panics.lock().clone()
    }

    fn panicked(&self, worker: &'static str, message: String) {
        error!(
            worker,
            message, "a background worker panicked; the node runs on without it"
        );
        self.panics.lock().push((worker, message));
    }
}

/// Workers being set up: spawn them, then [`Workers::supervise`].
#[derive(Debug)]
pub(crate) struct Workers {
    set: JoinSet<&'static str>,
    /// Each task's name by its id: a panicked task returns none.
    names: HashMap<tokio::task::Id, &'static str>,
    cancel: CancellationToken,
    health: Arc<WorkerHealth>,
}

impl Workers {
    /// Workers that stop when `cancel` fires.
    pub(crate) fn new(cancel: CancellationToken, health: Arc<WorkerHealth>) -> Self {
        Self {
            set: JoinSet::new(),
            names: HashMap::new(),
            cancel,
            health,
        }
    }

    /// A token for a worker: fires on shutdown.
    pub(crate) fn token(&self) -> CancellationToken {
        self.cancel.child_token()
    }

    /// Runs `worker` as `name`.
    pub(crate) fn spawn(
        &mut self,
        name: &'static str,
        worker: impl Future<Output = ()> + Send + 'static,
    ) {
        let handle = self.set.spawn(async move {
            worker.await;
            name
        });
        self.names.insert(handle.id(), name);
    }

    /// Hands the workers to a supervisor task that records panics until they all end.
    pub(crate) fn supervise(self) -> Supervisor {
        let Self {
            mut set,
            names,
            cancel,
            health,
        } = self;
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<JoinSet<&'static str>>();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => break,
                    next = set.join_next_with_id() => match next {
                        None => {
                            cancel.cancelled().await;
                            break;
                        }
                        Some(r) => record(&health, &names, r),
                    },
                }
            }
            let _ = done_tx.send(set);
        });
        Supervisor { task, done_rx }
    }
}

fn record(
    health: &WorkerHealth,
    names: &HashMap<tokio::task::Id, &'static str>,
    r: Result<(tokio::task::Id, &'static str), tokio::task::JoinError>,
) {
    match r {
        Ok((_, name)) => tracing::debug!(worker = name, "worker ended"),
        Err(e) if e.is_panic() => {
            let name = names.get(&e.id()).copied().unwrap_or("worker");
            let payload = e.into_panic();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".into());
            health.panicked(name, message);
        }
        Err(_) => {}
    }
}

/// The running supervisor.
#[derive(Debug)]
pub(crate) struct Supervisor {
    task: tokio::task::JoinHandle<()>,
    done_rx: tokio::sync::oneshot::Receiver<JoinSet<&'static str>>,
}

impl Supervisor {
    /// Waits up to `timeout` for every worker to end after the token fired; aborts the rest.
    pub(crate) async fn shutdown(self, timeout: Duration) {
        let _ = self.task.await;
        let Ok(mut set) = self.done_rx.await else {
            return;
        };
        let deadline = tokio::time::Instant::now() + timeout;
        while !set.is_empty() {
            match tokio::time::timeout_at(deadline, set.join_next()).await {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => {
                    warn!(
                        left = set.len(),
                        "background workers did not stop in time; aborting them"
                    );
                    set.abort_all();
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_is_recorded_by_name_and_shutdown_is_bounded() {
        let health = Arc::new(WorkerHealth::default());
        let cancel = CancellationToken::new();
        let mut w = Workers::new(cancel.clone(), health.clone());
        let token = w.token();
        w.spawn("polite", async move { token.cancelled().await });
        w.spawn("doomed", async { panic!("the disk is gone") });
        // Ignores its token: shutdown must not wait for it forever.
        w.spawn("stubborn", std::future::pending());
        let sup = w.supervise();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while health.panics().is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            health.panics(),
            vec![("doomed", "the disk is gone".to_string())]
        );
        cancel.cancel();
        let started = std::time::Instant::now();
        sup.shutdown(Duration::from_millis(200)).await;
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(150) && took < Duration::from_secs(3),
            "{took:?}"
        );
    }
}
