//! Tells the tracker this node exists and how loaded it is: a registration at start (retried
//! until the tracker answers), then a heartbeat every interval. A heartbeat the tracker does
//! not recognise (it lost its registry, or this node is new to it) triggers a new
//! registration.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use medley_api::{Admission, Heartbeat, Load, Registration, TrackerError};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::hot::HotTier;
use crate::stats::{MaintenanceStats, ServeStats, TrackerHealth};
use crate::store::Store;
use crate::tracker::TrackerLink;

/// Why a registration did not go through.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RegisterError {
    /// The tracker did not take it.
    #[error(transparent)]
    Tracker(#[from] TrackerError),
    /// The tracker's key is not the one this node trusts.
    #[error(transparent)]
    Key(#[from] crate::tracker::KeyRefused),
}

/// What the node announces about itself, and where it reads what it reports.
#[derive(Debug, Clone)]
pub(crate) struct Announcer {
    /// The tracker; its client signs with the node's identity.
    pub(crate) tracker: TrackerLink,
    pub(crate) peer_id: String,
    pub(crate) addrs: Vec<String>,
    pub(crate) region: String,
    /// The operator's join token, shown until the tracker admits the node.
    pub(crate) join: Option<String>,
    pub(crate) interval: Duration,
    pub(crate) store: Arc<Store>,
    pub(crate) serve: Arc<ServeStats>,
    pub(crate) maintenance: Arc<MaintenanceStats>,
    pub(crate) health: Arc<TrackerHealth>,
    pub(crate) hot: Option<Arc<HotTier>>,
}

impl Announcer {
    /// Registers, then heartbeats until `cancel` fires.
    pub(crate) async fn run(self, cancel: CancellationToken) {
        let mut registered = false;
        let mut backoff = Duration::from_millis(100);
        let mut last = (
            Instant::now(),
            self.serve.bytes_served.load(Ordering::Relaxed),
        );
        loop {
            if !registered {
                match self.register().await {
                    Ok(placeable) => {
                        info!(tracker = %self.tracker.client.url(), "registered with the tracker");
                        self.health.ok();
                        // A node the tracker does not place registers again at each
                        // interval (its heartbeat), to learn when that changes.
                        registered = placeable;
                        backoff = Duration::from_millis(100);
                        if !placeable {
                            tokio::select! {
                                () = cancel.cancelled() => return,
                                () = tokio::time::sleep(self.interval) => {}
                            }
                            continue;
                        }
                    }
                    Err(e) => {
                        self.health.failed_with(&e);
                        match &e {
                            RegisterError::Key(_) => error!(error = %e, "registration refused"),
                            RegisterError::Tracker(_) => {
                                warn!(error = %e, "registration failed; retrying")
                            }
                        }
                        tokio::select! {
                            () = cancel.cancelled() => return,
                            () = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(self.interval.max(Duration::from_secs(1)));
                        continue;
                    }
                }
            }
            // A hot song filled or dropped is told at once: clients find the copy while
            // the crowd that made the song hot is still arriving.
            let hot_changed = async {
                match &self.hot {
                    Some(hot) => hot.changed().notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(self.interval) => {}
                () = hot_changed => {}
            }
            let now = (
                Instant::now(),
                self.serve.bytes_served.load(Ordering::Relaxed),
            );
            let secs = now.0.duration_since(last.0).as_secs_f64().max(0.001);
            let bytes_per_sec = ((now.1.saturating_sub(last.1)) as f64 / secs) as u64;
            last = now;
            match self
                .tracker
                .client
                .heartbeat(&self.heartbeat(bytes_per_sec))
                .await
            {
                Ok(()) => {
                    self.health.ok();
                    debug!("heartbeat sent");
                }
                Err(e) if e.status() == Some(404) => {
                    info!("the tracker does not know this node; registering again");
                    registered = false;
                }
                Err(e) => {
                    self.health.failed_with(&e);
                    warn!(error = %e, "heartbeat failed");
                }
            }
        }
    }

    /// Registers and takes the tracker's key from the answer (refused if it is not the key
    /// this node trusts). Returns whether the tracker places the node (admitted, not
    /// evicted); says in the log why not when that changes.
    async fn register(&self) -> Result<bool, RegisterError> {
        let registered = self
            .tracker
            .client
            .register(&Registration {
                peer_id: self.peer_id.clone(),
                addrs: self.addrs.clone(),
                region: self.region.clone(),
                capacity: self.store.capacity(),
                join: self.join.clone(),
            })
            .await?;
        self.tracker.key.learn(registered.tracker_key)?;
        let (admission, evicted) = (registered.admission, registered.evicted);
        let changed = self.health.set_admission(admission, evicted.clone());
        let placeable = admission == Admission::Admitted && evicted.is_none();
        if changed {
            match (admission, &evicted) {
                (Admission::Pending, _) => error!(
                    node = %self.peer_id,
                    "the tracker has not admitted this node: it holds no data until its operator runs `medley-tracker nodes approve {}`, or this node is set up with a join token (`medley-node init --join TOKEN`, or join_token in its config)",
                    self.peer_id
                ),
                (Admission::Revoked, _) => error!(
                    node = %self.peer_id,
                    "the tracker's operator revoked this node's admission: it holds no data until approved again"
                ),
                (Admission::Admitted, Some(why)) => error!(
                    node = %self.peer_id,
                    reason = %why,
                    "the tracker put this node out of the layout after failed storage audits; it holds no data until its operator approves it again"
                ),
                (Admission::Admitted, None) => info!("the tracker admits this node"),
            }
        }
        Ok(placeable)
    }

    /// The heartbeat to send now.
    fn heartbeat(&self, bytes_per_sec: u64) -> Heartbeat {
        let store = &self.store;
        Heartbeat {
            peer_id: self.peer_id.clone(),
            load: Load {
                free: store.capacity().saturating_sub(store.used()),
                bytes_per_sec,
                transfers: self.serve.in_flight.load(Ordering::Relaxed) as u32,
                used: store.used(),
                shards: store.shard_count(),
                repair: self.maintenance.load(),
                hot_free: self.hot.as_ref().map(|h| h.free()),
            },
            hot: self.hot.as_ref().map(|h| h.songs()),
            repaired_version: Some(self.maintenance.repaired_version.load(Ordering::Relaxed))
                .filter(|v| *v > 0),
        }
    }
}

/// Tells the tracker this node is stopping, so it stops offering it as a source before the
/// heartbeats run out. Best effort within `timeout`: a tracker that does not answer learns
/// it from the missing heartbeats.
pub(crate) async fn leave(tracker: &TrackerLink, peer_id: &str, timeout: Duration) {
    match tokio::time::timeout(timeout, tracker.client.leave(peer_id)).await {
        Ok(Ok(())) => info!("told the tracker this node is stopping"),
        Ok(Err(e)) => warn!(error = %e, "could not tell the tracker this node is stopping"),
        Err(_) => warn!("the tracker did not answer the leave notice in time"),
    }
}
