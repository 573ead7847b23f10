//! The scrubber: re-reads every durable shard at a bounded byte rate and checks it against
//! its id. A shard whose bytes no longer match is deleted (it was never served: reads check
//! the hash too) and the repair worker is woken to rebuild it from the other slots.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use medley_core::Hash;
use medley_daemon::RateLimiter;
use medley_net::CancellationToken;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::stats::MaintenanceStats;
use crate::store::{Store, StoreError, Tier};

/// Keys read from the index at a time.
const PAGE: usize = 256;

/// Settings of the scrubber.
#[derive(Debug)]
pub(crate) struct Scrubber {
    pub(crate) store: Arc<Store>,
    pub(crate) stats: Arc<MaintenanceStats>,
    pub(crate) limiter: RateLimiter,
    /// Pause between the end of a full scrub and the next.
    pub(crate) interval: Duration,
    /// Woken when a corrupt shard was deleted.
    pub(crate) repair: Arc<Notify>,
}

/// What checking one stored shard found.
enum Checked {
    Good,
    Gone,
    Corrupt(String),
}

fn check(store: &Store, key: Hash) -> Result<Checked, StoreError> {
    match store.get(Tier::Durable, key) {
        Ok(Some(_)) => Ok(Checked::Good),
        Ok(None) => Ok(Checked::Gone),
        Err(StoreError::Corrupt { detail, .. }) => {
            if store.remove_if_corrupt(Tier::Durable, key)? {
                Ok(Checked::Corrupt(detail))
            } else {
                Ok(Checked::Gone)
            }
        }
        Err(e) => Err(e),
    }
}

impl Scrubber {
    /// Scrubs until `cancel` fires.
    pub(crate) async fn run(self, cancel: CancellationToken) {
        loop {
            let (checked, bad) = tokio::select! {
                () = cancel.cancelled() => return,
                r = self.scrub_all() => r,
            };
            if checked > 0 {
                info!(shards = checked, corrupt = bad, "scrub pass done");
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(self.interval) => {}
            }
        }
    }

    /// One pass over every durable shard; returns (shards checked, corrupt ones deleted).
    async fn scrub_all(&self) -> (u64, u64) {
        let (mut checked, mut bad) = (0, 0);
        let mut after = None;
        loop {
            let store = self.store.clone();
            let page = match tokio::task::spawn_blocking(move || {
                store.keys_after(Tier::Durable, after, PAGE)
            })
            .await
            {
                Ok(Ok(p)) => p,
                Ok(Err(e)) => {
                    warn!(error = %e, "scrub cannot list shards");
                    return (checked, bad);
                }
                Err(e) => {
                    warn!(error = %e, "scrub task failed");
                    return (checked, bad);
                }
            };
            let Some(last) = page.last().copied() else {
                return (checked, bad);
            };
            for key in page {
                let size = self
                    .store
                    .size_of(Tier::Durable, key)
                    .ok()
                    .flatten()
                    .unwrap_or(0);
                self.limiter.acquire(u64::from(size)).await;
                let store = self.store.clone();
                match tokio::task::spawn_blocking(move || check(&store, key)).await {
                    Ok(Ok(Checked::Good)) => checked += 1,
                    Ok(Ok(Checked::Gone)) => {}
                    Ok(Ok(Checked::Corrupt(detail))) => {
                        checked += 1;
                        bad += 1;
                        self.stats.scrub_bad.fetch_add(1, Ordering::Relaxed);
                        warn!(shard = %key, detail, "scrub found a corrupt shard; deleted it, repair will rebuild it");
                        self.repair.notify_one();
                    }
                    Ok(Err(e)) => debug!(shard = %key, error = %e, "scrub could not read a shard"),
                    Err(e) => debug!(error = %e, "scrub task failed"),
                }
            }
            after = Some(last);
        }
    }
}
