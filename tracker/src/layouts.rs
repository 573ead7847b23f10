//! Layout versions: the one in force, the members it was computed for, and every earlier
//! version on disk (nodes read them to find a slot's previous holders).
//!
//! Laws: a new version is made only when the eligible members changed and the computed
//! layout differs from the one in force; versions only grow; a version once written never
//! changes. With fewer than `k + m` eligible nodes the layout in force stays (or there is
//! none).

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
    partitions: u16,
    slots: u8,
}

impl Layouts {
    /// The layouts as persisted.
    pub(crate) fn open(db: Arc<Db>, partitions: u16, slots: u8) -> Result<Self, StateError> {
        let current = match db.last(CF_LAYOUTS)? {
            Some((_, v)) => {
                Some(serde_json::from_slice::<Layout>(&v).map_err(|e| corrupt("layout", e))?)
            }
            None => None,
        };
        Ok(Self {
            db,
            current: RwLock::new(current.map(Arc::new)),
            members: Mutex::new(Vec::new()),
            partitions,
            slots,
        })
    }

    /// The layout in force, if any.
    pub(crate) fn current(&self) -> Option<Arc<Layout>> {
        self.current.read().clone()
    }

    /// The version in force, if any.
    pub(crate) fn version(&self) -> Option<u64> {
        self.current.read().as_ref().map(|l| l.version)
    }

    /// Remembers `members` as those the layout in force was computed for (at start).
    pub(crate) fn set_members(&self, members: Vec<Member>) {
        *self.members.lock() = members;
    }

    /// Recomputes the layout if `eligible` differs from the members it was computed for.
    /// Returns the new version when the layout changed.
    pub(crate) fn refresh(&self, eligible: Vec<Member>) -> Result<Option<u64>, StateError> {
        let mut members = self.members.lock();
        if *members == eligible && self.current.read().is_some() {
            return Ok(None);
        }
        let before = self.version();
        self.recompute(&eligible)?;
        *members = eligible;
        let after = self.version();
        Ok(if after == before { None } else { after })
    }

    fn recompute(&self, members: &[Member]) -> Result<(), StateError> {
        let mut current = self.current.write();
        match Layout::compute(current.as_deref(), members, self.partitions, self.slots) {
            Ok(next) => {
                if current
                    .as_ref()
                    .is_some_and(|l| l.partitions == next.partitions)
                {
                    return Ok(());
                }
                let json = serde_json::to_vec(&next).map_err(|e| corrupt("layout", e))?;
                self.db
                    .put(CF_LAYOUTS, &next.version.to_be_bytes(), &json)?;
                match current.as_ref() {
                    Some(prev) => info!(
                        version = next.version,
                        moved = prev.moved_slots(&next),
                        "layout changed"
                    ),
                    None => info!(version = next.version, "first layout"),
                }
                *current = Some(Arc::new(next));
                Ok(())
            }
            // Not enough nodes yet: keep what we have (or nothing).
            Err(LayoutError::TooFewNodes { .. }) => Ok(()),
            Err(e) => Err(StateError::NoLayout(e)),
        }
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
