//! Faults on a run's timeline, applied to the network and the listeners, and the
//! listeners' places in the run (a fault can take them away and bring them back).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use medley_client::{Client, ClientConfig};
use medley_core::SongId;
use parking_lot::Mutex;

use crate::Testnet;
use crate::record::RunError;
use crate::scenario::{FaultKind, NodeRef, Scenario};
use crate::shaping::Shaping;

/// A listener's place in the run: every listener starts online, so one without a client
/// is one a fault took away.
pub(crate) struct Slot {
    pub(crate) config: ClientConfig,
    pub(crate) client: Mutex<Option<Arc<Client>>>,
}

impl Slot {
    pub(crate) fn client(&self) -> Option<Arc<Client>> {
        self.client.lock().clone()
    }
}

/// Up to `limit` online listeners among `slots` leave (their endpoints stop); returns how
/// many did.
fn listeners_leave(slots: &[Arc<Slot>], limit: usize) -> usize {
    let mut n = 0;
    for slot in slots {
        if n == limit {
            break;
        }
        let taken = slot.client.lock().take();
        if let Some(c) = taken {
            tokio::spawn(async move { c.shutdown().await });
            n += 1;
        }
    }
    n
}

/// Up to `limit` listeners among `slots` that left come back, with their identity and
/// cache; returns how many did.
fn listeners_return(slots: &[Arc<Slot>], limit: usize) -> Result<usize, RunError> {
    let mut n = 0;
    for slot in slots {
        if n == limit {
            break;
        }
        let mut client = slot.client.lock();
        if client.is_none() {
            *client = Some(Arc::new(Client::new(slot.config.clone())?));
            n += 1;
        }
    }
    Ok(n)
}

/// The global index of node `r`.
fn node_index(sc: &Scenario, r: NodeRef) -> usize {
    sc.regions[..r.region]
        .iter()
        .map(|x| x.nodes)
        .sum::<usize>()
        + r.index
}

/// The node a fault restarts (its admin address changes), if any.
pub(crate) fn node_of(kind: &FaultKind, sc: &Scenario) -> Option<usize> {
    match kind {
        FaultKind::RestartNode { node } | FaultKind::CorruptNode { node, .. } => {
            Some(node_index(sc, *node))
        }
        _ => None,
    }
}

/// The nodes of region `r`, as global indices.
fn region_nodes(sc: &Scenario, r: usize) -> std::ops::Range<usize> {
    let start = node_index(
        sc,
        NodeRef {
            region: r,
            index: 0,
        },
    );
    start..start + sc.regions[r].nodes
}

/// The adversaries a run's faults started: lying listener peers and rogue storage nodes,
/// and the peer ids of every rogue node that ever joined (the sampler counts their slots).
#[derive(Default)]
pub(crate) struct Adversaries {
    pub(crate) liars: Vec<crate::liar::LyingPeer>,
    pub(crate) rogues: Vec<crate::rogue::RogueNode>,
    pub(crate) rogue_ids: Arc<Mutex<Vec<String>>>,
}

impl Adversaries {
    /// Stops every one still running.
    pub(crate) async fn stop(self) {
        for l in &self.liars {
            l.peer.shutdown(Duration::from_secs(1)).await;
        }
        for r in self.rogues {
            r.vanish().await;
        }
    }
}

/// Applies one fault; says what it did.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn apply_fault(
    kind: &FaultKind,
    sc: &Scenario,
    net: &mut Testnet,
    shaping: &mut Shaping,
    slots: &[Arc<Slot>],
    songs: &[SongId],
    adversaries: &mut Adversaries,
    stop: &medley_net::CancellationToken,
) -> Result<String, RunError> {
    Ok(match kind {
        FaultKind::KillNode { node } => {
            let i = node_index(sc, *node);
            net.kill_node(i)?;
            format!("node {i} killed")
        }
        FaultKind::RestartNode { node } => {
            let i = node_index(sc, *node);
            tokio::task::block_in_place(|| net.start_node(i))?;
            format!("node {i} started again")
        }
        FaultKind::CorruptNode { node, fraction } => {
            let i = node_index(sc, *node);
            tokio::task::block_in_place(|| -> Result<String, RunError> {
                net.stop_node(i)?;
                let dir = net.nodes()[i].data_dir.clone();
                let damaged = corrupt_blobs(&dir, *fraction);
                net.start_node(i)?;
                Ok(format!(
                    "node {i}: {damaged} stored records damaged on disk"
                ))
            })?
        }
        FaultKind::KillTracker { tracker } => {
            net.kill_replica(*tracker)?;
            format!("tracker {tracker} killed")
        }
        FaultKind::RestartTracker { tracker } => {
            tokio::task::block_in_place(|| net.start_tracker(*tracker))?;
            format!("tracker {tracker} started again")
        }
        FaultKind::KillListeners { region, count } => {
            let n = listeners_leave(&slots[sc.listeners_of(*region)], *count);
            format!("{n} listeners of {} left", sc.regions[*region].name)
        }
        FaultKind::RestartListeners { region, count } => {
            let n = listeners_return(&slots[sc.listeners_of(*region)], *count)?;
            format!("{n} listeners of {} came back", sc.regions[*region].name)
        }
        FaultKind::CutRegion { region } => {
            let name = &sc.regions[*region].name;
            if shaping.on() {
                shaping.cut(name, true)?;
                format!("{name} cut off from the other regions (the tracker stays reachable)")
            } else {
                for i in region_nodes(sc, *region) {
                    net.freeze_node(i, true)?;
                }
                let n = listeners_leave(&slots[sc.listeners_of(*region)], usize::MAX);
                format!(
                    "{name}: without shaping, its {} nodes frozen and its {n} listeners taken off",
                    sc.regions[*region].nodes
                )
            }
        }
        FaultKind::HealRegion { region } => {
            let name = &sc.regions[*region].name;
            if shaping.on() {
                shaping.cut(name, false)?;
            } else {
                for i in region_nodes(sc, *region) {
                    net.freeze_node(i, false)?;
                }
                listeners_return(&slots[sc.listeners_of(*region)], usize::MAX)?;
            }
            format!("{name} joined again")
        }
        FaultKind::LyingPeer { region, count } => {
            let name = &sc.regions[*region].name;
            let listen = shaping
                .listen_addr(name)
                .unwrap_or_else(|| crate::LOOPBACK_QUIC.to_string());
            // They claim the most popular songs, where listeners look first.
            let claimed: Vec<SongId> = songs.iter().take(10).copied().collect();
            for _ in 0..*count {
                let l = crate::liar::spawn(&listen).await?;
                let tracker = net.tracker()?.with_signer(l.key.clone());
                let announcement = medley_api::PeerAnnouncement {
                    peer_id: l.peer.peer_id().to_string(),
                    addrs: l.addrs.clone(),
                    region: name.clone(),
                    songs: claimed.clone(),
                    partial: Vec::new(),
                };
                tracker
                    .announce(&announcement)
                    .await
                    .map_err(crate::TestnetError::from)?;
                // As a real client does, it announces again before its entry expires,
                // until the run ends.
                let stop = stop.clone();
                tokio::spawn(async move {
                    loop {
                        tokio::select! {
                            () = stop.cancelled() => return,
                            () = tokio::time::sleep(Duration::from_secs(30)) => {}
                        }
                        let _ = tracker.announce(&announcement).await;
                    }
                });
                adversaries.liars.push(l);
            }
            format!(
                "{count} lying peers in {name} announce the {} most popular songs",
                claimed.len()
            )
        }
        FaultKind::RogueNodes {
            region,
            count,
            capacity,
            admitted,
        } => {
            let name = &sc.regions[*region].name;
            let ip = net
                .nodes()
                .iter()
                .find(|n| &n.region == name)
                .map_or_else(|| "127.0.0.1".to_string(), |n| n.ip.clone());
            for _ in 0..*count {
                let r = crate::rogue::RogueNode::join(net, name, &ip, *capacity, *admitted).await?;
                adversaries.rogue_ids.lock().push(r.peer_id.clone());
                adversaries.rogues.push(r);
            }
            format!(
                "{count} rogue nodes joined {name} ({}), each claiming {}",
                if *admitted {
                    "with join tokens"
                } else {
                    "without tokens"
                },
                bytesize::ByteSize::b(*capacity)
            )
        }
        FaultKind::RoguesVanish => {
            let n = adversaries.rogues.len();
            for r in adversaries.rogues.drain(..) {
                r.vanish().await;
            }
            format!("{n} rogue nodes vanished")
        }
    })
}

/// Flips one byte in about `fraction` of the records of every blob file under `dir`
/// (values of 1 KiB or more, i.e. every shard); returns the bytes flipped.
fn corrupt_blobs(dir: &Path, fraction: f64) -> usize {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "blob") {
                files.push(p);
            }
        }
    }
    files.sort();
    // Shards are 64 KiB and more: a flip every 64 KiB / fraction bytes hits about that share.
    let stride = ((64.0 * 1024.0) / fraction).max(4096.0) as usize;
    let mut flipped = 0;
    for f in files {
        let Ok(mut bytes) = std::fs::read(&f) else {
            continue;
        };
        let mut at = stride / 2;
        while at < bytes.len() {
            bytes[at] ^= 0xff;
            flipped += 1;
            at += stride;
        }
        let _ = std::fs::write(&f, &bytes);
    }
    flipped
}
