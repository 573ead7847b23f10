//! The node's counters, in one place: what the data plane served, the maintenance work
//! (repair, handover, scrubbing), the hot tier, and the tracker link's health. Workers
//! update them; heartbeats, `/status` and `/metrics` read them.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use medley_api::RepairLoad;

/// Counters of what the data plane served, shared with the request handler.
#[derive(Debug)]
pub struct ServeStats {
    /// Bytes of shards and segments sent.
    pub bytes_served: AtomicU64,
    /// Requests being handled now.
    pub in_flight: AtomicUsize,
    /// Requests handled, by kind (`get_shard`, ...) and outcome (`ok`, `refused`, `failed`).
    pub requests: parking_lot::Mutex<std::collections::BTreeMap<(&'static str, &'static str), u64>>,
    /// Time to answer a request, by kind.
    pub latency: medley_daemon::metrics::Latencies<medley_daemon::metrics::Label>,
}

impl Default for ServeStats {
    fn default() -> Self {
        Self {
            bytes_served: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            requests: parking_lot::Mutex::default(),
            latency: medley_daemon::metrics::latencies(),
        }
    }
}

impl ServeStats {
    /// Counts one request of `kind` with `outcome`.
    pub fn count(&self, kind: &'static str, outcome: &'static str) {
        *self.requests.lock().entry((kind, outcome)).or_default() += 1;
    }
}

/// What the node knows of its tracker: when it last answered, and the last failure.
#[derive(Debug, Default)]
pub struct TrackerHealth {
    /// Unix time in milliseconds of the last accepted registration or heartbeat; 0: never.
    pub last_ok_ms: AtomicU64,
    /// Failed registrations and heartbeats since start.
    pub failures: AtomicU64,
    /// The last failure, cleared by the next success.
    last_error: parking_lot::Mutex<Option<String>>,
    /// What the tracker last said of this node's admission, and why it is evicted if it is.
    admission: parking_lot::Mutex<Option<(medley_api::Admission, Option<String>)>>,
}

impl TrackerHealth {
    pub(crate) fn ok(&self) {
        self.last_ok_ms
            .store(medley_core::unix_now_ms(), Ordering::Relaxed);
        *self.last_error.lock() = None;
    }

    /// Counts a failure and keeps `error` as the last one.
    pub(crate) fn failed_with(&self, error: &dyn std::error::Error) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock() = Some(medley_core::error_chain(error));
    }

    /// The last failure, if any since the last success.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().clone()
    }

    /// Keeps what the tracker said of the node's admission; returns whether it changed.
    pub(crate) fn set_admission(
        &self,
        admission: medley_api::Admission,
        evicted: Option<String>,
    ) -> bool {
        let new = Some((admission, evicted));
        let mut cur = self.admission.lock();
        let changed = *cur != new;
        *cur = new;
        changed
    }

    /// What the tracker last said of the node's admission (`None`: not registered yet).
    pub fn admission(&self) -> Option<(medley_api::Admission, Option<String>)> {
        self.admission.lock().clone()
    }
}

/// Counters of the node's maintenance work, reported in heartbeats.
#[derive(Debug, Default)]
pub struct MaintenanceStats {
    /// Shards the slots call for that are missing here, as of the last pass.
    pub backlog: AtomicU64,
    /// Shards rebuilt from `k` others since start.
    pub rebuilt: AtomicU64,
    /// Shards copied whole from an earlier holder since start.
    pub copied: AtomicU64,
    /// Failed repair attempts since start.
    pub failed: AtomicU64,
    /// Shard bytes read from other nodes by repair and handover since start.
    pub bytes_read: AtomicU64,
    /// Shards deleted after their new holder proved it holds them.
    pub handed_over: AtomicU64,
    /// Handover audits the new holder passed.
    pub handover_audits_passed: AtomicU64,
    /// Handover audits the new holder answered with no proof (the shard was kept).
    pub handover_audits_failed: AtomicU64,
    /// Corrupt shards found (by the scrubber or when serving) and deleted.
    pub scrub_bad: AtomicU64,
    /// The newest layout version of a repair pass that found nothing missing and failed
    /// nothing (0: none yet): every shard of this node's slots in it is here.
    pub repaired_version: AtomicU64,
    /// Bytes of durable shards held, as of the last collection.
    pub gc_held_bytes: AtomicU64,
    /// Bytes of those a slot of this node calls for.
    pub gc_referenced_bytes: AtomicU64,
    /// Bytes of unreferenced shards waiting out the grace period.
    pub gc_pending_bytes: AtomicU64,
    /// Shards collected since start.
    pub gc_collected: AtomicU64,
    /// Their bytes.
    pub gc_collected_bytes: AtomicU64,
}

impl MaintenanceStats {
    /// Shards rebuilt or copied since start.
    pub fn done(&self) -> u64 {
        self.rebuilt.load(Ordering::Relaxed) + self.copied.load(Ordering::Relaxed)
    }

    /// The work as a heartbeat reports it.
    pub fn load(&self) -> RepairLoad {
        RepairLoad {
            backlog: self.backlog.load(Ordering::Relaxed),
            done: self.done(),
            failed: self.failed.load(Ordering::Relaxed),
            scrub_bad: self.scrub_bad.load(Ordering::Relaxed),
            handed_over: self.handed_over.load(Ordering::Relaxed),
            bytes_read: self.bytes_read.load(Ordering::Relaxed),
        }
    }
}

/// Counters of the hot tier.
#[derive(Debug, Default)]
pub struct HotStats {
    /// Songs filled since start.
    pub filled: AtomicU64,
    /// Songs dropped since start.
    pub dropped: AtomicU64,
    /// Segments copied whole from another copy.
    pub copied_segments: AtomicU64,
    /// Segments rebuilt from shards.
    pub rebuilt_segments: AtomicU64,
    /// Fills that failed.
    pub failures: AtomicU64,
}
