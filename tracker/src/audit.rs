//! Storage audits: every `audit_interval_secs`, the tracker asks each live admitted node to
//! prove a random 1 KiB range of the shard of a random segment of one of its settled slots
//! ([`medley_core::audit`]), over the data plane from a key of its own, and checks the answer
//! against the shard's id. A node that fails or leaves unanswered `audit_failures` in a row
//! leaves the layout ([`crate::State::record_audit`]); what nodes prove sets their layout
//! weight ([`crate::State::update_proven`]).
//!
//! Cost: one challenge (about 60 bytes) and one answer (about 1.5 KiB for a 64 KiB shard) per
//! node per interval: 90 KiB an hour per node at the default minute.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use medley_core::protocol::ErrorCode;
use medley_net::{
    CancellationToken, Keypair, Multiaddr, NoService, Peer, PeerConfig, PeerId, RequestError,
};
use rand::SeedableRng as _;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::api::App;
use crate::registry::AuditOutcome;
use crate::state::AuditTarget;

/// Audits in flight at once.
const CONCURRENCY: usize = 16;

/// The auditor's counters, for `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct AuditStats {
    pub(crate) passed: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) timeouts: AtomicU64,
    /// Bytes of answers received.
    pub(crate) bytes: AtomicU64,
}

/// What `target`'s audit found, and the bytes of its answer.
async fn audit(
    peer: &medley_net::PeerHandle,
    target: AuditTarget,
) -> Option<(String, AuditOutcome, usize)> {
    let node: PeerId = match target.node.parse() {
        Ok(p) => p,
        Err(e) => {
            debug!(node = %target.node, error = %e, "not a peer id; not audited");
            return None;
        }
    };
    let addrs: Vec<Multiaddr> = target.addrs.iter().filter_map(|a| a.parse().ok()).collect();
    let mut bytes = 0;
    let outcome = match peer.audit(node, addrs, target.challenge).await {
        Ok(n) => {
            bytes = n;
            AuditOutcome::Passed
        }
        Err(RequestError::Closed) => return None,
        Err(e @ RequestError::Remote { code, .. }) if code == ErrorCode::BUSY => {
            AuditOutcome::TimedOut(e.to_string())
        }
        Err(e) if e.on_the_way() => {
            // The connection may be to a process that is gone (the node restarted): the
            // next audit dials afresh.
            peer.disconnect(node).await;
            AuditOutcome::TimedOut(e.to_string())
        }
        Err(e) => AuditOutcome::Failed(e.to_string()),
    };
    Some((target.node, outcome, bytes))
}

/// Runs audit rounds until `stopped`.
pub(crate) async fn run(app: Arc<App>, mut stopped: watch::Receiver<bool>) {
    let secs = app.state.config().audit_interval_secs;
    if secs == 0 {
        return;
    }
    let interval = Duration::from_secs(secs);
    let cancel = CancellationToken::new();
    let config = PeerConfig {
        // An audit waits half an interval for its answer, at least 3 s (a busy node on a
        // busy machine is not a liar) and at most 10 s. Rounds never overlap.
        request_timeout: (interval / 2).clamp(Duration::from_secs(3), Duration::from_secs(10)),
        ..PeerConfig::default()
    };
    let peer = match Peer::spawn(
        Keypair::generate_ed25519(),
        config,
        Arc::new(NoService),
        cancel.clone(),
    )
    .await
    {
        Ok(p) => p,
        Err(e) => {
            warn!(error = %e, "cannot start the data-plane client: no audits");
            return;
        }
    };
    let mut rng = rand_pcg::Pcg64::seed_from_u64(getrandom::u64().unwrap_or(0));
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stopped.wait_for(|s| *s) => break,
            _ = tick.tick() => {}
        }
        let seed: u64 = rand::Rng::next_u64(&mut rng);
        let a = app.clone();
        let targets = match tokio::task::spawn_blocking(move || {
            let mut rng = rand_pcg::Pcg64::seed_from_u64(seed);
            a.state.audit_targets(&mut rng)
        })
        .await
        {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => {
                warn!(error = %e, "cannot choose what to audit");
                continue;
            }
            Err(e) => {
                warn!(error = %e, "audit task failed");
                continue;
            }
        };
        let mut results = futures::stream::iter(targets)
            .map(|t| audit(&peer, t))
            .buffer_unordered(CONCURRENCY);
        let mut found = Vec::new();
        while let Some(r) = results.next().await {
            if let Some(r) = r {
                found.push(r);
            }
        }
        drop(results);
        let stats = &app.audits;
        for (_, outcome, bytes) in &found {
            stats.bytes.fetch_add(*bytes as u64, Ordering::Relaxed);
            let counter = match outcome {
                AuditOutcome::Passed => &stats.passed,
                AuditOutcome::Failed(_) => &stats.failed,
                AuditOutcome::TimedOut(_) => &stats.timeouts,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        let a = app.clone();
        let recorded = tokio::task::spawn_blocking(move || {
            for (node, outcome, _) in found {
                if outcome != AuditOutcome::Passed {
                    debug!(node, ?outcome, "audit not passed");
                }
                a.state.record_audit(&node, outcome)?;
            }
            a.state.update_proven()
        })
        .await;
        match recorded {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "cannot record audits"),
            Err(e) => warn!(error = %e, "audit task failed"),
        }
    }
    peer.shutdown(Duration::from_secs(1)).await;
    cancel.cancel();
}
