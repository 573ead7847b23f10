//! Garbage collection of the durable tier: shards no slot of this node calls for.
//!
//! A shard is *referenced* when a committed manifest puts it on a slot this node holds, or
//! held and has not handed over yet (the repair pass knows both). One that is not is
//! collected once it has been found unreferenced, pass after pass, for the grace period
//! (`gc_grace_secs`): an upload whose publish never committed goes after its grant could
//! have been used, and a publish that commits in time keeps every shard. When a shard was
//! first found unreferenced is kept in the node's state, so a restart does not reset it.

use std::collections::{HashMap, HashSet};

use medley_core::{Hash, ShardId};
use tracing::info;

use crate::store::{Store, StoreError, Tier};

/// Node-state key of the shards found unreferenced: hex id → Unix seconds first found so.
const GC_KEY: &str = "gc_unreferenced";
/// Keys read from the index at once.
const PAGE: usize = 4096;

/// What a collection found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct GcOutcome {
    /// Bytes of durable shards held.
    pub(crate) held: u64,
    /// Bytes of those that a slot of this node calls for.
    pub(crate) referenced: u64,
    /// Bytes of unreferenced shards waiting out the grace period.
    pub(crate) pending: u64,
    /// Shards deleted now.
    pub(crate) collected: u64,
    /// Their bytes.
    pub(crate) collected_bytes: u64,
}

/// Deletes the durable shards of `store` outside `referenced` that were already outside it
/// `grace_secs` ago (as of `now`, Unix seconds); keeps when the others were first found so.
pub(crate) fn collect(
    store: &Store,
    referenced: &HashSet<ShardId>,
    grace_secs: u64,
    now: u64,
) -> Result<GcOutcome, StoreError> {
    let before: HashMap<String, u64> = store
        .get_meta(GC_KEY)?
        .and_then(|v| serde_json::from_slice(&v).ok())
        .unwrap_or_default();
    let mut unreferenced = HashMap::new();
    let mut out = GcOutcome::default();
    let mut after: Option<Hash> = None;
    loop {
        let page = store.sizes_after(Tier::Durable, after, PAGE)?;
        for &(key, len) in &page {
            let len = u64::from(len);
            if referenced.contains(&ShardId(key)) {
                out.held += len;
                out.referenced += len;
                continue;
            }
            let hex = key.to_string();
            let since = before.get(&hex).copied().unwrap_or(now);
            if now.saturating_sub(since) >= grace_secs {
                if store.delete(Tier::Durable, key)? {
                    out.collected += 1;
                    out.collected_bytes += len;
                }
            } else {
                out.held += len;
                out.pending += len;
                unreferenced.insert(hex, since);
            }
        }
        match page.last() {
            Some((last, _)) if page.len() == PAGE => after = Some(*last),
            _ => break,
        }
    }
    if unreferenced != before {
        let json = serde_json::to_vec(&unreferenced).unwrap_or_default();
        store.put_meta(GC_KEY, &json)?;
    }
    if out.collected > 0 {
        info!(
            shards = out.collected,
            bytes = out.collected_bytes,
            "collected shards no slot of this node calls for"
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreConfig;

    #[test]
    fn only_shards_unreferenced_for_the_whole_grace_period_go() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreConfig::default()).unwrap();
        let put = |b: u8| {
            let data = vec![b; 1000 + usize::from(b)];
            let id = ShardId::of(&data);
            store.put(Tier::Durable, id.0, &data).unwrap();
            id
        };
        let (kept, orphan, late) = (put(1), put(2), put(3));
        let mut referenced: HashSet<ShardId> = [kept, late].into();
        // First found unreferenced at t=100: waits.
        let o = collect(&store, &referenced, 60, 100).unwrap();
        assert_eq!((o.collected, o.pending), (0, 1002));
        assert_eq!(o.held, 1001 + 1002 + 1003);
        assert_eq!(o.held, o.referenced + o.pending);
        assert_eq!(o.referenced, 1001 + 1003);
        // `late` stops being referenced at t=130, `orphan` has waited 60 s at t=160.
        referenced.remove(&late);
        collect(&store, &referenced, 60, 130).unwrap();
        let o = collect(&store, &referenced, 60, 160).unwrap();
        assert_eq!((o.collected, o.collected_bytes), (1, 1002));
        assert_eq!(o.held, 1001 + 1003, "what is collected is no longer held");
        assert!(!store.contains(Tier::Durable, orphan.0).unwrap());
        assert!(
            store.contains(Tier::Durable, late.0).unwrap(),
            "only 30 s unreferenced"
        );
        // Referenced again before its time: it stays, and its clock starts over.
        referenced.insert(late);
        collect(&store, &referenced, 60, 170).unwrap();
        referenced.remove(&late);
        let o = collect(&store, &referenced, 60, 200).unwrap();
        assert_eq!(o.collected, 0);
        assert!(store.contains(Tier::Durable, late.0).unwrap());
        // The clock survives a reopen.
        drop(store);
        let store = Store::open(dir.path(), &StoreConfig::default()).unwrap();
        let o = collect(&store, &referenced, 60, 260).unwrap();
        assert_eq!(o.collected, 1);
        assert!(store.contains(Tier::Durable, kept.0).unwrap());
    }
}
