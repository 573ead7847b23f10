//! The node registry: every node that registered, what it last reported, and whether it is
//! draining or stopped. Registrations and drain changes are persisted; heartbeats are
//! liveness hints kept in memory.
//!
//! Laws: a node is *recent* while heard from within the grace period; *alive* (offered as a
//! source) when recent and not stopped; *placeable* when admitted and not evicted after
//! failed audits; *eligible* (placed by the layout) when placeable, recent, not draining and
//! with capacity. A node's layout weight is the least of its declared capacity, its
//! admission's cap, the tracker's limit, and what it proved plus the median eligible node's
//! capacity. Every method takes `now` (Unix ms) from its caller.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use medley_api::{Admission, AuditRecord, Heartbeat, NodeRecord, Registration, RepairLoad};
use medley_core::Member;
use parking_lot::RwLock;
use tracing::info;

use crate::db::{CF_NODES, CF_SEEN, Db};
use crate::error::{StateError, corrupt};

/// Node counts and repair work summed over live nodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeTotals {
    /// Registered nodes.
    pub nodes: usize,
    /// Heard from within the grace period and not stopped.
    pub alive: usize,
    /// Handing their shards over before leaving.
    pub draining: usize,
    /// Registered without the operator's consent yet.
    pub pending: usize,
    /// Put out of the layout after failing audits.
    pub evicted: usize,
    /// Repair work of live nodes.
    pub repair: RepairLoad,
}

/// Checks the identity fields a node registration or a peer announcement carries.
pub(crate) fn check_peer(peer_id: &str, region: &str, addrs: &[String]) -> Result<(), StateError> {
    if peer_id.is_empty() || peer_id.len() > 128 {
        return Err(StateError::BadRegistration(
            "peer_id must be 1 to 128 characters",
        ));
    }
    if region.is_empty() || region.len() > 64 {
        return Err(StateError::BadRegistration(
            "region must be 1 to 64 characters",
        ));
    }
    if addrs.is_empty() || addrs.len() > 16 || addrs.iter().any(|a| a.len() > 256) {
        return Err(StateError::BadRegistration(
            "addrs must list 1 to 16 addresses of at most 256 characters",
        ));
    }
    Ok(())
}

/// Pending (unadmitted) nodes kept at most: strangers cannot grow the registry further.
pub const MAX_PENDING: usize = 1024;
/// A pending node unheard for this long makes room for a new one.
const PENDING_IDLE_MS: u64 = 3600 * 1000;

/// What a registration brings besides the node's own word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Consent {
    /// Nothing: the node keeps its admission (pending if new).
    None,
    /// The operator's consent (a join token, or a tracker that admits every node).
    Admit {
        /// Most capacity it may count with.
        capacity: Option<u64>,
        /// The join token's id, hex.
        invite: Option<String>,
    },
}

/// What an audit of a node found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditOutcome {
    /// It proved the range.
    Passed,
    /// It answered with no proof, or refused.
    Failed(String),
    /// It did not answer in time (or could not be reached).
    TimedOut(String),
}

/// What a heartbeat told one replica, shared with the others through the store.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Beat {
    last_seen_ms: u64,
    #[serde(default)]
    repaired_version: Option<u64>,
    #[serde(default)]
    load: medley_api::Load,
}

impl Beat {
    fn of(rec: &NodeRecord) -> Self {
        Self {
            last_seen_ms: rec.last_seen_ms,
            repaired_version: rec.repaired_version,
            load: rec.load.clone(),
        }
    }
}

/// A node's record as stored, with the newest heartbeat any replica heard: this replica's
/// (`mine`) or one shared through the store (`shared`). A shared heartbeat after the record
/// was written says the node runs again; this replica's newer view says whether it does.
fn merge(mut stored: NodeRecord, mine: Option<&NodeRecord>, shared: Option<&Beat>) -> NodeRecord {
    // This replica's own view carries whether the node stopped; a heartbeat another
    // replica heard says it runs.
    let newest = [
        mine.map(|r| (Beat::of(r), r.stopped)),
        shared.map(|b| (b.clone(), false)),
    ]
    .into_iter()
    .flatten()
    .max_by_key(|(b, _)| b.last_seen_ms);
    if let Some((beat, stopped)) = newest
        && beat.last_seen_ms > stored.last_seen_ms
    {
        stored.last_seen_ms = beat.last_seen_ms;
        stored.load = beat.load;
        stored.stopped = stopped;
        if beat.repaired_version.is_some() {
            stored.repaired_version = beat.repaired_version;
        }
    }
    stored
}

/// The registry.
#[derive(Debug)]
pub(crate) struct Registry {
    db: Arc<Db>,
    nodes: RwLock<BTreeMap<String, NodeRecord>>,
    /// Nodes heard from since their heartbeats were last shared with the other replicas
    /// (a shared store only).
    heard: parking_lot::Mutex<HashSet<String>>,
    /// How long a node may go unheard before it counts as down.
    grace_ms: u64,
    /// Most capacity a node counts with.
    max_capacity: u64,
    /// Whether nodes are audited: then what they say they repaired counts once an audit
    /// passed after they said it.
    audited: bool,
}

impl Registry {
    /// The registry as persisted. Heartbeats are not persisted: every node of `in_layout`
    /// gets a full grace period from `now` before it counts as down, so a tracker restart
    /// moves no data. Nodes outside the layout stay down until they are heard from.
    pub(crate) fn open(
        db: Arc<Db>,
        grace_ms: u64,
        max_capacity: u64,
        audited: bool,
        in_layout: &HashSet<&str>,
        now: u64,
    ) -> Result<Self, StateError> {
        let mut nodes = BTreeMap::new();
        for (k, v) in db.scan(CF_NODES)? {
            let mut rec: NodeRecord = serde_json::from_slice(&v)
                .map_err(|e| corrupt(format!("node {}", String::from_utf8_lossy(&k)), e))?;
            if in_layout.contains(rec.peer_id.as_str()) {
                rec.last_seen_ms = now;
            }
            nodes.insert(rec.peer_id.clone(), rec);
        }
        Ok(Self {
            db,
            nodes: RwLock::new(nodes),
            heard: parking_lot::Mutex::new(HashSet::new()),
            grace_ms,
            max_capacity,
            audited,
        })
    }

    /// Shares the heartbeats this replica heard since it last did, then takes up what every
    /// replica wrote: node records (registrations, admissions, drains, audits) and when each
    /// node was last heard from. A shared store only.
    pub(crate) fn follow(&self) -> Result<(), StateError> {
        if !self.db.is_shared() {
            return Ok(());
        }
        let heard: Vec<String> = self.heard.lock().drain().collect();
        let beats: Vec<(String, Vec<u8>)> = {
            let nodes = self.nodes.read();
            heard
                .iter()
                .filter_map(|id| nodes.get(id))
                .filter_map(|r| {
                    serde_json::to_vec(&Beat::of(r))
                        .ok()
                        .map(|b| (r.peer_id.clone(), b))
                })
                .collect()
        };
        if !beats.is_empty() {
            let records: Vec<(&'static str, &[u8], &[u8])> = beats
                .iter()
                .map(|(id, b)| (CF_SEEN, id.as_bytes(), b.as_slice()))
                .collect();
            self.db.put_all(&records)?;
        }
        // The store is read under the lock that changes hold while they write it: what is
        // read is never older than what is in memory.
        let mut nodes = self.nodes.write();
        let stored = self.db.scan(CF_NODES)?;
        let seen: HashMap<Box<[u8]>, Beat> = self
            .db
            .scan(CF_SEEN)?
            .into_iter()
            .filter_map(|(k, v)| serde_json::from_slice(&v).ok().map(|b| (k, b)))
            .collect();
        let mut present = HashSet::new();
        for (k, v) in stored {
            let rec: NodeRecord = serde_json::from_slice(&v)
                .map_err(|e| corrupt(format!("node {}", String::from_utf8_lossy(&k)), e))?;
            present.insert(rec.peer_id.clone());
            let merged = merge(rec, nodes.get(&*String::from_utf8_lossy(&k)), seen.get(&k));
            nodes.insert(merged.peer_id.clone(), merged);
        }
        nodes.retain(|id, _| present.contains(id));
        Ok(())
    }

    /// Takes up node `peer_id`'s record as stored before a change to it (a shared store
    /// only): another replica may have changed it since this one last looked.
    fn reread(
        &self,
        nodes: &mut BTreeMap<String, NodeRecord>,
        peer_id: &str,
    ) -> Result<(), StateError> {
        if !self.db.is_shared() {
            return Ok(());
        }
        if let Some(v) = self.db.get(CF_NODES, peer_id.as_bytes())? {
            let rec: NodeRecord =
                serde_json::from_slice(&v).map_err(|e| corrupt(format!("node {peer_id}"), e))?;
            let merged = merge(rec, nodes.get(peer_id), None);
            nodes.insert(peer_id.to_string(), merged);
        }
        Ok(())
    }

    /// Heard from within the grace period.
    fn is_recent(&self, rec: &NodeRecord, now: u64) -> bool {
        now.saturating_sub(rec.last_seen_ms) <= self.grace_ms
    }

    /// Serving: heard from recently and not stopped.
    pub(crate) fn is_alive(&self, rec: &NodeRecord, now: u64) -> bool {
        !rec.stopped && self.is_recent(rec, now)
    }

    /// Admitted and not evicted: the operator's consent holds.
    fn placeable(rec: &NodeRecord) -> bool {
        rec.admission == Admission::Admitted && rec.evicted.is_none()
    }

    /// Whether `rec` would get slots were its drain state `draining`.
    fn eligible_if(&self, rec: &NodeRecord, draining: bool, now: u64) -> bool {
        Self::placeable(rec) && !draining && rec.capacity > 0 && self.is_recent(rec, now)
    }

    /// Whether the layout must move `peer_id`'s slots at once, whatever the churn bound: it
    /// is down, evicted, revoked or unknown.
    pub(crate) fn must_move(&self, peer_id: &str, now: u64) -> bool {
        self.nodes
            .read()
            .get(peer_id)
            .is_none_or(|r| !Self::placeable(r) || !self.is_recent(r, now))
    }

    /// The newest layout version `peer_id` says it holds every shard of its slots in (its
    /// word: what audits check).
    pub(crate) fn repaired_version(&self, peer_id: &str) -> Option<u64> {
        self.nodes
            .read()
            .get(peer_id)
            .and_then(|r| r.repaired_version)
    }

    /// The newest layout version whose slots of `peer_id` count as settled: what it said it
    /// repaired when it last passed an audit (with audits off, its word).
    pub(crate) fn settled_version(&self, peer_id: &str) -> Option<u64> {
        let nodes = self.nodes.read();
        let rec = nodes.get(peer_id)?;
        if self.audited {
            rec.verified_version
        } else {
            rec.repaired_version
        }
    }

    /// Capacity `rec` counts with: the least of what it declared, its admission's cap and
    /// the tracker's limit.
    fn counted_capacity(&self, rec: &NodeRecord) -> u64 {
        rec.capacity
            .min(rec.capacity_cap.unwrap_or(u64::MAX))
            .min(self.max_capacity)
    }

    /// `nodes` as layout members, each weighed by the least of its counted capacity and
    /// what it proved plus the median node's counted capacity (its newcomer's allowance).
    fn members<'a>(&self, nodes: impl Iterator<Item = &'a NodeRecord>) -> Vec<Member> {
        let nodes: Vec<&NodeRecord> = nodes.collect();
        let mut counted: Vec<u64> = nodes.iter().map(|r| self.counted_capacity(r)).collect();
        counted.sort_unstable();
        // The lower median: with as many inflated claims as honest ones, still an honest
        // node's.
        let allowance = counted
            .get(counted.len().saturating_sub(1) / 2)
            .copied()
            .unwrap_or(0);
        nodes
            .into_iter()
            .map(|r| Member {
                id: r.peer_id.clone(),
                region: r.region.clone(),
                capacity: self
                    .counted_capacity(r)
                    .min(r.proven_bytes.saturating_add(allowance)),
            })
            .collect()
    }

    fn store(&self, rec: &NodeRecord) -> Result<(), StateError> {
        let json = serde_json::to_vec(rec).map_err(|e| corrupt("node record", e))?;
        Ok(self.db.put(CF_NODES, rec.peer_id.as_bytes(), &json)?)
    }

    /// Registers (or re-registers) a node; its drain state, last load, admission and audit
    /// record are kept, `consent` admitting it. Returns its record.
    pub(crate) fn register(
        &self,
        reg: Registration,
        consent: Consent,
        now: u64,
    ) -> Result<NodeRecord, StateError> {
        check_peer(&reg.peer_id, &reg.region, &reg.addrs)?;
        let mut nodes = self.nodes.write();
        self.reread(&mut nodes, &reg.peer_id)?;
        let previous = nodes.get(&reg.peer_id).cloned();
        if previous.is_none() && consent == Consent::None {
            let pending = nodes
                .values()
                .filter(|r| r.admission == Admission::Pending)
                .count();
            if pending >= MAX_PENDING {
                // Room is made by pending nodes long unheard, if any.
                let idle: Vec<String> = nodes
                    .values()
                    .filter(|r| {
                        r.admission == Admission::Pending
                            && now.saturating_sub(r.last_seen_ms) > PENDING_IDLE_MS
                    })
                    .map(|r| r.peer_id.clone())
                    .collect();
                if idle.is_empty() {
                    return Err(StateError::Busy("too many nodes are waiting for admission"));
                }
                for id in idle {
                    self.db.delete(CF_NODES, id.as_bytes())?;
                    nodes.remove(&id);
                }
            }
        }
        let mut rec = previous.clone().unwrap_or_else(|| NodeRecord {
            peer_id: reg.peer_id.clone(),
            addrs: Vec::new(),
            region: String::new(),
            capacity: 0,
            load: Default::default(),
            last_seen_ms: now,
            draining: false,
            stopped: false,
            admission: Admission::Pending,
            capacity_cap: None,
            invite: None,
            first_seen_ms: now,
            repaired_version: None,
            verified_version: None,
            proven_bytes: 0,
            audits: AuditRecord::default(),
            evicted: None,
        });
        rec.addrs = reg.addrs;
        rec.region = reg.region;
        rec.capacity = reg.capacity;
        rec.last_seen_ms = now;
        rec.stopped = false;
        if let Consent::Admit { capacity, invite } = consent
            && rec.admission == Admission::Pending
        {
            rec.admission = Admission::Admitted;
            rec.capacity_cap = capacity;
            rec.invite = invite;
            info!(node = %rec.peer_id, "node admitted");
        }
        // A registration that changes nothing but the time (a pending node asks again at
        // each interval) is not written again.
        let unchanged = previous.as_ref().is_some_and(|p| {
            p.addrs == rec.addrs
                && p.region == rec.region
                && p.capacity == rec.capacity
                && p.admission == rec.admission
                && !p.stopped
        });
        if !unchanged {
            self.store(&rec)?;
        } else if self.db.is_shared() {
            self.heard.lock().insert(rec.peer_id.clone());
        }
        nodes.insert(rec.peer_id.clone(), rec.clone());
        Ok(rec)
    }

    /// Node `peer_id`'s admission, if it registered.
    pub(crate) fn admission(&self, peer_id: &str) -> Option<Admission> {
        self.nodes.read().get(peer_id).map(|r| r.admission)
    }

    /// Admits node `peer_id` (an operator's approval), clearing an eviction; `capacity`
    /// caps it when given.
    pub(crate) fn approve(&self, peer_id: &str, capacity: Option<u64>) -> Result<(), StateError> {
        self.change(peer_id, |rec| {
            rec.admission = Admission::Admitted;
            if capacity.is_some() {
                rec.capacity_cap = capacity;
            }
            rec.evicted = None;
            rec.audits.consecutive_failures = 0;
            info!(node = %rec.peer_id, "node approved");
        })
    }

    /// Revokes node `peer_id`'s admission: it leaves the layout.
    pub(crate) fn revoke(&self, peer_id: &str) -> Result<(), StateError> {
        self.change(peer_id, |rec| {
            rec.admission = Admission::Revoked;
            rec.proven_bytes = 0;
            info!(node = %rec.peer_id, "node revoked");
        })
    }

    fn change(&self, peer_id: &str, f: impl FnOnce(&mut NodeRecord)) -> Result<(), StateError> {
        let mut nodes = self.nodes.write();
        self.reread(&mut nodes, peer_id)?;
        let rec = nodes
            .get_mut(peer_id)
            .ok_or_else(|| StateError::UnknownNode(peer_id.to_string()))?;
        f(rec);
        let rec = rec.clone();
        // Written under the lock: a replica's follow reads the store under it too, so it
        // never merges a record older than this change into memory after it.
        self.store(&rec)
    }

    /// Records what an audit of `peer_id` found. After `allowed` failures in a row the
    /// node is evicted: the returned reason says so.
    pub(crate) fn record_audit(
        &self,
        peer_id: &str,
        outcome: &AuditOutcome,
        allowed: u32,
        now: u64,
        layout_version: Option<u64>,
    ) -> Result<Option<String>, StateError> {
        let mut evicted = None;
        self.change(peer_id, |rec| {
            // Heard from since the audit before: up, so silence to an audit is refusal.
            let heard = rec.last_seen_ms > rec.audits.last_ms;
            let a = &mut rec.audits;
            a.last_ms = now;
            match outcome {
                AuditOutcome::Passed => {
                    a.passed += 1;
                    a.consecutive_failures = 0;
                    // What it said it repaired holds as far as the sample goes, and no
                    // further than the layout the audit was drawn from: a claim of a
                    // version yet to come settles nothing.
                    let claim = rec
                        .repaired_version
                        .zip(layout_version)
                        .map(|(r, v)| r.min(v));
                    rec.verified_version = claim.max(rec.verified_version);
                    return;
                }
                AuditOutcome::Failed(e) => {
                    a.failed += 1;
                    a.last_error = Some(e.clone());
                }
                AuditOutcome::TimedOut(e) => {
                    a.timeouts += 1;
                    a.last_error = Some(e.clone());
                    if !heard {
                        // Down (crashed, restarting, cut off): the grace period moves its
                        // slots if it stays down; an audit it cannot hear is no failure.
                        return;
                    }
                }
            }
            a.consecutive_failures += 1;
            rec.proven_bytes = 0;
            if a.consecutive_failures >= allowed && rec.evicted.is_none() {
                let why = format!(
                    "failed {} audits in a row, the last: {}",
                    a.consecutive_failures,
                    a.last_error.as_deref().unwrap_or("")
                );
                rec.evicted = Some(why.clone());
                evicted = Some(why);
            }
        })?;
        Ok(evicted)
    }

    /// Sets what node `peer_id` proved it holds. Returns whether it changed.
    pub(crate) fn set_proven(&self, peer_id: &str, bytes: u64) -> Result<bool, StateError> {
        if self
            .nodes
            .read()
            .get(peer_id)
            .is_none_or(|r| r.proven_bytes == bytes)
        {
            return Ok(false);
        }
        self.change(peer_id, |rec| rec.proven_bytes = bytes)?;
        Ok(true)
    }

    /// Starts (`true`) or cancels (`false`) the drain of a node, refused when fewer than
    /// `need` eligible nodes would be left. Returns whether the state changed.
    pub(crate) fn set_draining(
        &self,
        peer_id: &str,
        draining: bool,
        need: usize,
        now: u64,
    ) -> Result<bool, StateError> {
        let mut nodes = self.nodes.write();
        self.reread(&mut nodes, peer_id)?;
        let rec = nodes
            .get(peer_id)
            .ok_or_else(|| StateError::UnknownNode(peer_id.to_string()))?;
        if rec.draining == draining {
            return Ok(false);
        }
        if draining {
            let left = nodes
                .values()
                .filter(|r| r.peer_id != peer_id && self.eligible_if(r, r.draining, now))
                .count();
            if left < need {
                return Err(StateError::CannotDrain {
                    node: peer_id.to_string(),
                    left,
                    need,
                });
            }
        }
        let mut rec = rec.clone();
        rec.draining = draining;
        self.store(&rec)?;
        info!(node = peer_id, draining, "drain state changed");
        nodes.insert(peer_id.to_string(), rec);
        Ok(true)
    }

    /// Records a heartbeat. Returns whether the node was down before it.
    pub(crate) fn heartbeat(&self, hb: &Heartbeat, now: u64) -> Result<bool, StateError> {
        let mut nodes = self.nodes.write();
        let rec = nodes
            .get_mut(&hb.peer_id)
            .ok_or_else(|| StateError::UnknownNode(hb.peer_id.clone()))?;
        let was_down = !self.is_recent(rec, now);
        rec.load = hb.load.clone();
        rec.last_seen_ms = now;
        rec.stopped = false;
        if hb.repaired_version.is_some() {
            rec.repaired_version = hb.repaired_version;
        }
        drop(nodes);
        if self.db.is_shared() {
            self.heard.lock().insert(hb.peer_id.clone());
        }
        Ok(was_down)
    }

    /// Records that a node is stopping: no longer offered as a source from now on.
    pub(crate) fn leave(&self, peer_id: &str, now: u64) -> Result<(), StateError> {
        let mut nodes = self.nodes.write();
        self.reread(&mut nodes, peer_id)?;
        let rec = nodes
            .get_mut(peer_id)
            .ok_or_else(|| StateError::UnknownNode(peer_id.to_string()))?;
        rec.stopped = true;
        // Heard from as it left: later than any heartbeat a replica shares.
        rec.last_seen_ms = rec.last_seen_ms.max(now);
        let rec = rec.clone();
        info!(node = peer_id, "node is stopping");
        // Under the lock, as in `change`.
        self.store(&rec)
    }

    /// The nodes the layout should place shards on, with their weights.
    pub(crate) fn eligible(&self, now: u64) -> Vec<Member> {
        let nodes = self.nodes.read();
        self.members(
            nodes
                .values()
                .filter(|r| self.eligible_if(r, r.draining, now)),
        )
    }

    /// The eligible nodes were those of `drain` draining and those of `undrain` not, every
    /// other node as it is; and every node's region.
    pub(crate) fn eligible_with(
        &self,
        drain: &[String],
        undrain: &[String],
        now: u64,
    ) -> Result<(Vec<Member>, HashMap<String, String>), StateError> {
        let nodes = self.nodes.read();
        for id in drain.iter().chain(undrain) {
            if !nodes.contains_key(id) {
                return Err(StateError::UnknownNode(id.clone()));
            }
        }
        let members = self.members(nodes.values().filter(|r| {
            let id = &r.peer_id;
            let draining = drain.contains(id) || (r.draining && !undrain.contains(id));
            self.eligible_if(r, draining, now)
        }));
        let regions = nodes
            .iter()
            .map(|(id, r)| (id.clone(), r.region.clone()))
            .collect();
        Ok((members, regions))
    }

    /// Nodes with capacity, whatever their state (to say why there is no layout).
    pub(crate) fn with_capacity(&self) -> usize {
        self.nodes
            .read()
            .values()
            .filter(|r| r.capacity > 0)
            .count()
    }

    /// Whether some admitted node is in `region`.
    pub(crate) fn has_region(&self, region: &str) -> bool {
        self.nodes
            .read()
            .values()
            .any(|r| r.region == region && Self::placeable(r))
    }

    /// Whether `peer_id` ever registered.
    pub(crate) fn contains(&self, peer_id: &str) -> bool {
        self.nodes.read().contains_key(peer_id)
    }

    /// Node `peer_id`'s record, if it is alive.
    pub(crate) fn alive(&self, peer_id: &str, now: u64) -> Option<NodeRecord> {
        self.nodes
            .read()
            .get(peer_id)
            .filter(|r| self.is_alive(r, now))
            .cloned()
    }

    /// Every alive admitted node that is not draining and has capacity (hot-copy
    /// candidates).
    pub(crate) fn serving(&self, now: u64) -> Vec<NodeRecord> {
        self.nodes
            .read()
            .values()
            .filter(|r| {
                Self::placeable(r) && !r.draining && r.capacity > 0 && self.is_alive(r, now)
            })
            .cloned()
            .collect()
    }

    /// All nodes with whether each is alive.
    pub(crate) fn nodes(&self, now: u64) -> Vec<(NodeRecord, bool)> {
        self.nodes
            .read()
            .values()
            .map(|r| (r.clone(), self.is_alive(r, now)))
            .collect()
    }

    /// Node counts and the repair work of live nodes.
    pub(crate) fn totals(&self, now: u64) -> NodeTotals {
        let nodes = self.nodes.read();
        let mut t = NodeTotals {
            nodes: nodes.len(),
            ..NodeTotals::default()
        };
        for r in nodes.values() {
            if self.is_alive(r, now) {
                t.alive += 1;
                t.repair.add(&r.load.repair);
            }
            if r.draining {
                t.draining += 1;
            }
            if r.admission == Admission::Pending {
                t.pending += 1;
            }
            if r.evicted.is_some() {
                t.evicted += 1;
            }
        }
        t
    }

    /// Every node's data-plane addresses and whether it is alive, by peer id.
    pub(crate) fn addresses(&self, now: u64) -> HashMap<String, (Vec<String>, bool)> {
        self.nodes
            .read()
            .iter()
            .map(|(id, r)| (id.clone(), (r.addrs.clone(), self.is_alive(r, now))))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(dir: &std::path::Path, audited: bool) -> Registry {
        let db = Arc::new(Db::open(dir).expect("open the database"));
        let r = Registry::open(db, 60_000, u64::MAX, audited, &HashSet::new(), 0)
            .expect("open the registry");
        let reg = Registration {
            peer_id: "node-0".into(),
            addrs: vec!["/ip4/127.0.0.1/udp/1/quic-v1".into()],
            region: "r".into(),
            capacity: 1 << 40,
            join: None,
        };
        let consent = Consent::Admit {
            capacity: None,
            invite: None,
        };
        r.register(reg, consent, 0).expect("register");
        // It says it holds every shard of its slots, of any layout to come.
        let hb = Heartbeat {
            peer_id: "node-0".into(),
            load: Default::default(),
            hot: None,
            repaired_version: Some(u64::MAX),
        };
        r.heartbeat(&hb, 1).expect("heartbeat");
        r
    }

    #[test]
    fn a_claim_settles_slots_only_once_an_audit_passed_and_only_up_to_its_layout() {
        let dir = tempfile::tempdir().unwrap();
        let r = registry(dir.path(), true);
        assert_eq!(r.repaired_version("node-0"), Some(u64::MAX));
        assert_eq!(
            r.settled_version("node-0"),
            None,
            "its word alone settles nothing"
        );
        r.record_audit(
            "node-0",
            &AuditOutcome::Failed("no proof".into()),
            3,
            2,
            Some(7),
        )
        .unwrap();
        assert_eq!(
            r.settled_version("node-0"),
            None,
            "a failed audit settles nothing"
        );
        r.record_audit("node-0", &AuditOutcome::Passed, 3, 3, Some(7))
            .unwrap();
        assert_eq!(
            r.settled_version("node-0"),
            Some(7),
            "a pass settles the layout it was drawn from, not versions yet to come"
        );
        // A later pass never takes a settlement back.
        r.record_audit("node-0", &AuditOutcome::Passed, 3, 4, Some(5))
            .unwrap();
        assert_eq!(r.settled_version("node-0"), Some(7));
    }

    #[test]
    fn silence_counts_against_a_node_that_is_up_not_one_that_is_down() {
        let dir = tempfile::tempdir().unwrap();
        let r = registry(dir.path(), true);
        let timed_out = || AuditOutcome::TimedOut("no answer".into());
        // Heard from (t = 1) before each audit it leaves unanswered: it is up, and refuses.
        r.record_audit("node-0", &timed_out(), 2, 2, Some(1))
            .unwrap();
        let hb = |t| {
            let hb = Heartbeat {
                peer_id: "node-0".into(),
                load: Default::default(),
                hot: None,
                repaired_version: Some(1),
            };
            r.heartbeat(&hb, t).unwrap();
        };
        hb(3);
        let evicted = r
            .record_audit("node-0", &timed_out(), 2, 4, Some(1))
            .unwrap();
        assert!(evicted.is_some(), "two refusals in a row evict it");

        // Another node goes quiet (a crash): audits it cannot hear do not evict it.
        let dir = tempfile::tempdir().unwrap();
        let r = registry(dir.path(), true);
        for t in 2..10 {
            let evicted = r
                .record_audit("node-0", &timed_out(), 2, t, Some(1))
                .unwrap();
            assert_eq!(evicted, None, "audit at {t}");
        }
        let rec = r.nodes.read().get("node-0").cloned().unwrap();
        assert_eq!(rec.audits.timeouts, 8);
        assert_eq!(rec.audits.consecutive_failures, 1, "only the first counts");
    }

    #[test]
    fn without_audits_a_nodes_word_settles_its_slots() {
        let dir = tempfile::tempdir().unwrap();
        let r = registry(dir.path(), false);
        assert_eq!(r.settled_version("node-0"), Some(u64::MAX));
    }
}
