//! What the client makes of the tracker's answers: a song's sources as peers to dial, each
//! id and address parsed, and the tracker's `unknown_song` refusal as
//! [`ClientError::UnknownSong`]. The calls themselves are [`medley_api::TrackerClient`]'s.

use medley_api::{SourceKind, TrackerClient, TrackerError};
use medley_core::SongId;
use medley_net::{Multiaddr, PeerId};

use crate::error::ClientError;

/// A node that holds a shard slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Its peer id.
    pub peer: PeerId,
    /// Its data-plane addresses.
    pub addrs: Vec<Multiaddr>,
    /// `false` when the tracker knows the node stopped or went quiet: tried last.
    pub alive: bool,
}

/// A source of whole segments of a song.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WholeCopy {
    /// Its peer id.
    pub peer: PeerId,
    /// Its data-plane addresses.
    pub addrs: Vec<Multiaddr>,
    /// Peer or hot node.
    pub kind: SourceKind,
    /// The segments it holds when it holds only some; `None`: all of them.
    pub have: Option<medley_api::HaveMap>,
}

impl WholeCopy {
    /// Whether it holds segment `index`.
    pub fn holds(&self, index: usize) -> bool {
        self.have.as_ref().is_none_or(|h| h.has(index))
    }
}

/// A song's sources, ready to dial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SongSources {
    /// Per segment, per slot, the shard holder (`None` where the layout has no node or its
    /// id or every address is unusable; a banned or stopped holder is not `alive`).
    pub holders: Vec<Vec<Option<Holder>>>,
    /// Whole copies, best first.
    pub whole: Vec<WholeCopy>,
}

/// Song `id`'s sources for a client in `region`, checked against the manifest's shape
/// (`segments` segments of `slots` slots).
pub async fn song_sources(
    tracker: &TrackerClient,
    id: SongId,
    segments: usize,
    slots: usize,
    region: Option<&str>,
) -> Result<SongSources, ClientError> {
    let view = tracker
        .sources(id, region)
        .await
        .map_err(unknown_song(id))?;
    let bad = |reason: String| ClientError::BadTrackerData {
        what: "source list",
        reason,
    };
    if view.segments.len() != segments {
        return Err(bad(format!(
            "{} segments listed, the manifest has {segments}",
            view.segments.len()
        )));
    }
    let mut holders = vec![vec![None; slots]; segments];
    for seg in view.segments {
        let row = holders
            .get_mut(seg.index)
            .ok_or_else(|| bad(format!("segment index {} out of range", seg.index)))?;
        for s in seg.shards {
            let Some(cell) = row.get_mut(s.slot) else {
                return Err(bad(format!("slot {} out of range", s.slot)));
            };
            // A banned holder is asked last, not never: when bans are wrong (reports by
            // identities made to lie), the segment can still be rebuilt.
            *cell = s
                .peer_id
                .and_then(|p| holder(&p, &s.addrs))
                .map(|h| Holder {
                    alive: s.alive && !s.banned,
                    ..h
                });
        }
    }
    let whole = view
        .whole
        .into_iter()
        .filter_map(|w| {
            let h = holder(&w.peer_id, &w.addrs)?;
            Some(WholeCopy {
                peer: h.peer,
                addrs: h.addrs,
                kind: w.kind,
                have: w.have,
            })
        })
        .collect();
    Ok(SongSources { holders, whole })
}

/// Turns the tracker's `unknown_song` refusal into [`ClientError::UnknownSong`] for `id`.
pub(crate) fn unknown_song(id: SongId) -> impl FnOnce(TrackerError) -> ClientError {
    move |e| match e.code() {
        Some(medley_api::ErrorCode::UnknownSong) => ClientError::UnknownSong(id.to_string()),
        _ => ClientError::Tracker(e),
    }
}

/// Whether the catalogue has song `id`.
pub async fn has_song(tracker: &TrackerClient, id: SongId) -> Result<bool, ClientError> {
    match tracker.song(id).await.map_err(unknown_song(id)) {
        Ok(_) => Ok(true),
        Err(ClientError::UnknownSong(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// A holder from a peer id and address strings; `None` if the id or every address is bad.
pub(crate) fn holder(peer_id: &str, addrs: &[String]) -> Option<Holder> {
    let peer: PeerId = peer_id.parse().ok()?;
    let addrs: Vec<Multiaddr> = addrs.iter().filter_map(|a| a.parse().ok()).collect();
    (!addrs.is_empty()).then_some(Holder {
        peer,
        addrs,
        alive: true,
    })
}
