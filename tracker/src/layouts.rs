//! Layout versions: the one in force, the members it was computed for, and every earlier
//! version on disk (nodes read them to find a slot's previous holders).
//!
//! Laws: a new version is made only when the eligible members changed (or an earlier change
//! is still under way) and the computed layout differs from the one in force; versions only
//! grow; a version once written never changes. With fewer than `k + m` eligible nodes the
//! layout in force stays (or there is none).
//!
//! Churn is bounded: a slot is *settled* once its node reported holding every shard of its
//! slots as of the slot's version (its `repaired_version`) and then passed an audit (with
//! audits off, on its word alone: a node that lies about what it holds would settle its
//! slots at once). A new version moves at most
//! `max(1, m - 1)` slots of a partition that are not settled, counting those it moves, apart
//! from the slots of nodes that are gone (down, evicted, revoked), which move at once; the
//! rest of a change follows in later versions as slots settle. So while nodes come and go,
//! at least `k + 1` slots of every partition hold their shards.
//!
//! Versions are kept from the oldest one a slot not yet settled may still need (the one
//! before the slot's version) to the current one; older ones are pruned.

use std::sync::Arc;

use medley_core::{Layout, LayoutError, Member};
use parking_lot::{Mutex, RwLock};
use tracing::info;

use crate::db::{CF_LAYOUTS, Db};
use crate::error::{StateError, corrupt};

/// The layouts.
#[derive(Debug)]
pub(crate) struct Layouts {
    db: Arc<Db>,
    current: RwLock<Option<Arc<Layout>>>,
    /// The members the current layout was computed for.
    members: Mutex<Vec<Member>>,
    /// Whether the current layout stopped short of what its members call for.
    behind: Mutex<bool>,
    /// The oldest version kept.
    oldest: Mutex<Option<u64>>,
    partitions: u16,
    slots: u8,
    /// Slots of a partition that may be unsettled at once.
    in_flight: usize,
}

/// What the layout needs to know of the nodes to move slots without losing data.
pub(crate) trait Settling {
    /// Whether `node`'s slots must move at once (it is gone).
    fn must_move(&self, node: &str) -> bool;
    /// The newest version whose slots of `node` are settled: it holds their shards (its
    /// word, checked by an audit since).
    fn settled_version(&self, node: &str) -> Option<u64>;
    /// Whether partition `p` holds any segment: the slots of one that holds none move
    /// freely, there being nothing to move.
    fn holds_data(&self, p: usize) -> bool;
}

impl Layouts {
    /// The layouts as persisted; `m` is the network's parity shards.
    pub(crate) fn open(db: Arc<Db>, partitions: u16, slots: u8, m: u8) -> Result<Self, StateError> {
        let current = match db.last(CF_LAYOUTS)? {
            Some((_, v)) => {
                Some(serde_json::from_slice::<Layout>(&v).map_err(|e| corrupt("layout", e))?)
            }
            None => None,
        };
        let oldest = db
            .first(CF_LAYOUTS)?
            .and_then(|(k, _)| <[u8; 8]>::try_from(&k[..]).ok())
            .map(u64::from_be_bytes);
        Ok(Self {
            db,
            current: RwLock::new(current.map(Arc::new)),
            members: Mutex::new(Vec::new()),
            // A change may have been under way when the tracker stopped: the first refresh
            // looks again.
            behind: Mutex::new(true),
            oldest: Mutex::new(oldest),
            partitions,
            slots,
            in_flight: usize::from(m.saturating_sub(1)).max(1),
        })
    }

    /// The oldest version kept: nodes look for earlier holders of their slots from it on.
    pub(crate) fn oldest(&self) -> Option<u64> {
        *self.oldest.lock()
    }

    /// The layout in force, if any.
    pub(crate) fn current(&self) -> Option<Arc<Layout>> {
        self.current.read().clone()
    }

    /// The version in force, if any.
    pub(crate) fn version(&self) -> Option<u64> {
        self.current.read().as_ref().map(|l| l.version)
    }

    /// Takes up versions other replicas of the tracker made since this one last looked (a
    /// shared store only). Returns the version in force when it changed.
    pub(crate) fn follow(&self) -> Result<Option<u64>, StateError> {
        if !self.db.is_shared() {
            return Ok(None);
        }
        let mut current = self.current.write();
        let changed = self.load_latest(&mut current)?;
        drop(current);
        if changed {
            // What this replica's members call for is looked at again against it.
            *self.behind.lock() = true;
            *self.oldest.lock() = self
                .db
                .first(CF_LAYOUTS)?
                .and_then(|(k, _)| <[u8; 8]>::try_from(&k[..]).ok())
                .map(u64::from_be_bytes);
        }
        Ok(changed.then(|| self.version()).flatten())
    }

    /// Replaces `current` with the newest version stored, if newer. Returns whether it did.
    fn load_latest(&self, current: &mut Option<Arc<Layout>>) -> Result<bool, StateError> {
        let Some((_, v)) = self.db.last(CF_LAYOUTS)? else {
            return Ok(false);
        };
        let latest: Layout = serde_json::from_slice(&v).map_err(|e| corrupt("layout", e))?;
        if current
            .as_ref()
            .is_some_and(|c| c.version >= latest.version)
        {
            return Ok(false);
        }
        info!(version = latest.version, "layout made by another replica");
        *current = Some(Arc::new(latest));
        Ok(true)
    }

    /// Remembers `members` as those the layout in force was computed for (at start).
    pub(crate) fn set_members(&self, members: Vec<Member>) {
        *self.members.lock() = members;
    }

    /// Moves the layout towards what `eligible` calls for, if it differs from the members
    /// it was computed for or an earlier change is still under way, within the churn bound
    /// (see the module's laws); then prunes versions no longer needed. Returns the new
    /// version when the layout changed.
    pub(crate) fn refresh(
        &self,
        eligible: Vec<Member>,
        nodes: &dyn Settling,
    ) -> Result<Option<u64>, StateError> {
        let mut members = self.members.lock();
        let mut behind = self.behind.lock();
        let changed = if *members == eligible && !*behind && self.current.read().is_some() {
            None
        } else {
            let before = self.version();
            *behind = self.recompute(&eligible, nodes)?;
            *members = eligible;
            let after = self.version();
            if after == before { None } else { after }
        };
        drop((members, behind));
        self.prune(nodes)?;
        Ok(changed)
    }

    /// Whether `slot` of partition `p` of `layout` is settled: its node holds its shards.
    fn settled(layout: &Layout, p: usize, slot: usize, node: &str, nodes: &dyn Settling) -> bool {
        !nodes.holds_data(p) || layout.holds_slot_as_of(p, slot, nodes.settled_version(node))
    }

    /// Writes the next step towards the layout for `members`. Returns whether it stopped
    /// short of it.
    fn recompute(&self, members: &[Member], nodes: &dyn Settling) -> Result<bool, StateError> {
        let mut current = self.current.write();
        if self.db.is_shared() {
            // The next version follows the newest any replica made.
            self.load_latest(&mut current)?;
        }
        let target = match Layout::compute(current.as_deref(), members, self.partitions, self.slots)
        {
            Ok(t) => t,
            // Not enough nodes yet: keep what we have (or nothing).
            Err(LayoutError::TooFewNodes { .. }) => return Ok(false),
            Err(e) => return Err(StateError::NoLayout(e)),
        };
        let (next, behind) = match current.as_deref() {
            None => (target, false),
            Some(prev) if prev.partitions == target.partitions => return Ok(false),
            Some(prev) => {
                let must_move = |n: &str| nodes.must_move(n);
                let budget = |p: usize| {
                    if !nodes.holds_data(p) {
                        return usize::MAX;
                    }
                    let row = &prev.partitions[p];
                    let unsettled = row
                        .iter()
                        .enumerate()
                        .filter(|(slot, n)| {
                            !nodes.must_move(n) && !Self::settled(prev, p, *slot, n, nodes)
                        })
                        .count();
                    let forced = row
                        .iter()
                        .zip(&target.partitions[p])
                        .filter(|(a, b)| a != b && nodes.must_move(a))
                        .count();
                    self.in_flight.saturating_sub(unsettled + forced)
                };
                match prev.step_towards(&target, must_move, budget) {
                    Some((next, complete)) => (next, !complete),
                    // Every slot that would move waits for others to settle.
                    None => return Ok(true),
                }
            }
        };
        let json = serde_json::to_vec(&next).map_err(|e| corrupt("layout", e))?;
        if !self
            .db
            .put_new(CF_LAYOUTS, &next.version.to_be_bytes(), &json)?
        {
            // Another replica made this version first: it is the one in force; what this
            // one's members call for is looked at again from it.
            self.load_latest(&mut current)?;
            return Ok(true);
        }
        match current.as_ref() {
            Some(prev) => info!(
                version = next.version,
                moved = prev.moved_slots(&next),
                behind,
                "layout changed"
            ),
            None => {
                info!(version = next.version, "first layout");
                *self.oldest.lock() = Some(next.version);
            }
        }
        *current = Some(Arc::new(next));
        Ok(behind)
    }

    /// Deletes versions older than the oldest one an unsettled slot may need.
    fn prune(&self, nodes: &dyn Settling) -> Result<(), StateError> {
        let Some(current) = self.current() else {
            return Ok(());
        };
        let mut keep_from = current.version;
        for (p, row) in current.partitions.iter().enumerate() {
            for (slot, node) in row.iter().enumerate() {
                if !Self::settled(&current, p, slot, node, nodes) {
                    let since = current.since(p, slot);
                    keep_from = keep_from.min(since.saturating_sub(1).max(1));
                }
            }
        }
        let mut oldest = self.oldest.lock();
        let from = oldest.unwrap_or(keep_from);
        for v in from..keep_from {
            self.db.delete(CF_LAYOUTS, &v.to_be_bytes())?;
        }
        if from < keep_from {
            info!(
                pruned = keep_from - from,
                oldest = keep_from,
                "old layout versions pruned"
            );
        }
        *oldest = Some(from.max(keep_from));
        Ok(())
    }

    /// What the layout would become for `members`, without applying it.
    pub(crate) fn compute(&self, members: &[Member]) -> Result<Layout, StateError> {
        let current = self.current();
        Layout::compute(current.as_deref(), members, self.partitions, self.slots)
            .map_err(StateError::NoLayout)
    }

    /// Layout `version`, current or past.
    pub(crate) fn at(&self, version: u64) -> Result<Layout, StateError> {
        if let Some(l) = self.current.read().as_ref()
            && l.version == version
        {
            return Ok(l.as_ref().clone());
        }
        let bytes = self
            .db
            .get(CF_LAYOUTS, &version.to_be_bytes())?
            .ok_or(StateError::UnknownLayout(version))?;
        serde_json::from_slice(&bytes).map_err(|e| corrupt("layout", e).into())
    }
}
