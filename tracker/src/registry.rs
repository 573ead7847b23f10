//! The node registry: every node that registered, what it last reported, and whether it is
//! draining or stopped. Registrations and drain changes are persisted; heartbeats are
//! liveness hints kept in memory.
//!
//! Laws: a node is *recent* while heard from within the grace period; *alive* (offered as a
//! source) when recent and not stopped; *eligible* (placed by the layout) when recent, not
//! draining and with capacity. Every method takes `now` (Unix ms) from its caller.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use medley_api::{Heartbeat, NodeRecord, Registration, RepairLoad};
use medley_core::Member;
use parking_lot::RwLock;
use tracing::info;

use crate::db::{CF_NODES, Db};
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

/// A node as a member of a layout.
fn member(rec: &NodeRecord) -> Member {
    Member {
        id: rec.peer_id.clone(),
        region: rec.region.clone(),
        capacity: rec.capacity,
    }
}

/// The registry.
#[derive(Debug)]
pub(crate) struct Registry {
    db: Arc<Db>,
    nodes: RwLock<BTreeMap<String, NodeRecord>>,
    /// How long a node may go unheard before it counts as down.
    grace_ms: u64,
}

impl Registry {
    /// The registry as persisted. Heartbeats are not persisted: every node of `in_layout`
    /// gets a full grace period from `now` before it counts as down, so a tracker restart
    /// moves no data. Nodes outside the layout stay down until they are heard from.
    pub(crate) fn open(
        db: Arc<Db>,
        grace_ms: u64,
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
            grace_ms,
        })
    }

    /// Heard from within the grace period.
    fn is_recent(&self, rec: &NodeRecord, now: u64) -> bool {
        now.saturating_sub(rec.last_seen_ms) <= self.grace_ms
    }

    /// Serving: heard from recently and not stopped.
    pub(crate) fn is_alive(&self, rec: &NodeRecord, now: u64) -> bool {
        !rec.stopped && self.is_recent(rec, now)
    }

    /// Whether `rec` would get slots were its drain state `draining`.
    fn eligible_if(&self, rec: &NodeRecord, draining: bool, now: u64) -> bool {
        !draining && rec.capacity > 0 && self.is_recent(rec, now)
    }

    fn store(&self, rec: &NodeRecord) -> Result<(), StateError> {
        let json = serde_json::to_vec(rec).map_err(|e| corrupt("node record", e))?;
        Ok(self.db.put(CF_NODES, rec.peer_id.as_bytes(), &json)?)
    }

    /// Registers (or re-registers) a node; its drain state and last load are kept.
    pub(crate) fn register(&self, reg: Registration, now: u64) -> Result<(), StateError> {
        check_peer(&reg.peer_id, &reg.region, &reg.addrs)?;
        let mut nodes = self.nodes.write();
        let previous = nodes.get(&reg.peer_id).cloned();
        let rec = NodeRecord {
            draining: previous.as_ref().is_some_and(|p| p.draining),
            load: previous.map(|p| p.load).unwrap_or_default(),
            peer_id: reg.peer_id,
            addrs: reg.addrs,
            region: reg.region,
            capacity: reg.capacity,
            last_seen_ms: now,
            stopped: false,
        };
        self.store(&rec)?;
        nodes.insert(rec.peer_id.clone(), rec);
        Ok(())
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
        Ok(was_down)
    }

    /// Records that a node is stopping: no longer offered as a source from now on.
    pub(crate) fn leave(&self, peer_id: &str) -> Result<(), StateError> {
        let mut nodes = self.nodes.write();
        let rec = nodes
            .get_mut(peer_id)
            .ok_or_else(|| StateError::UnknownNode(peer_id.to_string()))?;
        rec.stopped = true;
        let rec = rec.clone();
        drop(nodes);
        info!(node = peer_id, "node is stopping");
        self.store(&rec)
    }

    /// The nodes the layout should place shards on.
    pub(crate) fn eligible(&self, now: u64) -> Vec<Member> {
        self.nodes
            .read()
            .values()
            .filter(|r| self.eligible_if(r, r.draining, now))
            .map(member)
            .collect()
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
        let members = nodes
            .values()
            .filter(|r| {
                let id = &r.peer_id;
                let draining = drain.contains(id) || (r.draining && !undrain.contains(id));
                self.eligible_if(r, draining, now)
            })
            .map(member)
            .collect();
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

    /// Whether some registered node is in `region`.
    pub(crate) fn has_region(&self, region: &str) -> bool {
        self.nodes.read().values().any(|r| r.region == region)
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

    /// Every alive node that is not draining and has capacity (hot-copy candidates).
    pub(crate) fn serving(&self, now: u64) -> Vec<NodeRecord> {
        self.nodes
            .read()
            .values()
            .filter(|r| !r.draining && r.capacity > 0 && self.is_alive(r, now))
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
