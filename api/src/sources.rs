//! Where a song's bytes are: whole copies and shard holders, what listeners announce and
//! report, and which songs run hot.

use medley_core::{SegmentId, ShardId, SongId};
use serde::{Deserialize, Serialize};

/// `GET /v1/songs/{id}/sources` parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourcesQuery {
    /// The asking client's region: whole copies there are ranked first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

/// What kind of whole copy a source holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// A listener serving its cache.
    Peer,
    /// A storage node's hot tier.
    Hot,
}

/// A source of whole segments of a song.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WholeSource {
    /// Its peer id.
    pub peer_id: String,
    /// Its data-plane addresses.
    pub addrs: Vec<String>,
    /// Its region.
    pub region: String,
    /// Peer or hot node.
    pub kind: SourceKind,
    /// The segments it holds, when it holds only some (a listener still fetching the
    /// song); absent: all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub have: Option<HaveMap>,
}

/// Which segments of a song a source holds, as BitTorrent's have messages say it: bit `i`
/// (bit `i % 8` of byte `i / 8`) is segment `i`. In JSON, lowercase hex.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct HaveMap(Vec<u8>);

/// Most bytes of one have-map: 4,096 segments (over five hours of audio at 320 kb/s).
pub const MAX_HAVE_BYTES: usize = 512;

impl HaveMap {
    /// The map of the segments at `held`, of a song of `segments` segments (indexes at or
    /// past `segments` are ignored).
    pub fn from_held(segments: usize, held: impl IntoIterator<Item = usize>) -> Self {
        let mut bytes = vec![0u8; segments.div_ceil(8)];
        for i in held {
            if i < segments {
                bytes[i / 8] |= 1 << (i % 8);
            }
        }
        Self(bytes)
    }

    /// Whether segment `i` is held.
    pub fn has(&self, i: usize) -> bool {
        self.0.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0)
    }

    /// Segments held.
    pub fn count(&self) -> usize {
        self.0.iter().map(|b| b.count_ones() as usize).sum()
    }
}

impl Serialize for HaveMap {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for HaveMap {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.len() > 2 * MAX_HAVE_BYTES {
            return Err(serde::de::Error::custom(format!(
                "a have-map is at most {MAX_HAVE_BYTES} bytes"
            )));
        }
        hex::decode(&s)
            .map(Self)
            .map_err(|e| serde::de::Error::custom(format!("a have-map is hex: {e}")))
    }
}

/// Part of a song a listener holds and serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialCopy {
    /// The song.
    pub song: SongId,
    /// The segments it holds.
    pub have: HaveMap,
}

/// One shard slot of a segment and the node that holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotSource {
    /// The slot (0-based; the first `k` hold data).
    pub slot: usize,
    /// The shard's id.
    pub shard: ShardId,
    /// The holder (`None`: the layout has no node for it).
    pub peer_id: Option<String>,
    /// Its data-plane addresses.
    #[serde(default)]
    pub addrs: Vec<String>,
    /// Heard from recently, not stopped and not banned.
    #[serde(default = "yes")]
    pub alive: bool,
    /// Reported by several listeners for sending wrong bytes.
    #[serde(default)]
    pub banned: bool,
}

fn yes() -> bool {
    true
}

/// One segment's shard holders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentSources {
    /// The segment's position in the song.
    pub index: usize,
    /// Its id.
    pub id: SegmentId,
    /// Its length in bytes.
    pub len: u32,
    /// Its slots, in order.
    pub shards: Vec<SlotSource>,
}

/// A song's sources (`GET /v1/songs/{id}/sources`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SongSources {
    /// The song.
    pub song: SongId,
    /// The layout the holders come from.
    pub layout_version: u64,
    /// Who holds it whole, best first for the asking region.
    #[serde(default)]
    pub whole: Vec<WholeSource>,
    /// Per segment, the holder of each slot.
    pub segments: Vec<SegmentSources>,
}

/// A listener's announcement of the songs it holds whole and serves
/// (`POST /v1/peers/announce`, signed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerAnnouncement {
    /// Its libp2p peer id.
    pub peer_id: String,
    /// Its data-plane addresses.
    pub addrs: Vec<String>,
    /// Its region.
    pub region: String,
    /// Songs it holds whole and serves.
    pub songs: Vec<SongId>,
    /// Songs it holds part of (while it fetches them), with the segments it holds: it
    /// serves those. At most [`MAX_PARTIAL_SONGS`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partial: Vec<PartialCopy>,
}

impl PeerAnnouncement {
    /// Every song it serves some of: those held whole, then those held in part.
    pub fn all_songs(&self) -> impl Iterator<Item = SongId> + '_ {
        self.songs
            .iter()
            .copied()
            .chain(self.partial.iter().map(|p| p.song))
    }

    /// What it holds of `song`: `Some(None)` all of it, `Some(Some(map))` the segments of
    /// the map, `None` nothing.
    pub fn holding(&self, song: SongId) -> Option<Option<&HaveMap>> {
        if self.songs.contains(&song) {
            return Some(None);
        }
        self.partial
            .iter()
            .find(|p| p.song == song)
            .map(|p| Some(&p.have))
    }
}

/// Most songs a peer announces holding part of.
pub const MAX_PARTIAL_SONGS: usize = 64;

/// Why a client reports a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportReason {
    /// It sent bytes that do not match their hash.
    BadHash,
    /// It did not deliver.
    Failed,
    /// It did not answer in time.
    Timeout,
    /// It delivered a verified segment (confirms a listener's announcement).
    Served,
    /// A reason this build does not know (the tracker refuses it as `bad_report`).
    #[serde(other)]
    Unknown,
}

impl ReportReason {
    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadHash => "bad_hash",
            Self::Failed => "failed",
            Self::Timeout => "timeout",
            Self::Served => "served",
            Self::Unknown => "unknown",
        }
    }
}

/// A client's report that a source failed it (`POST /v1/reports`, signed when the client
/// has an identity).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceReport {
    /// The source.
    pub peer_id: String,
    /// The song it was asked for (hex; text so that a malformed id is refused as `bad_id`).
    pub song: String,
    /// What it did.
    pub reason: ReportReason,
}

/// A song that is hot in a region.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HotSong {
    /// The song.
    pub song: SongId,
    /// The region.
    pub region: String,
    /// Its decayed play count there now.
    pub heat: f64,
    /// Nodes ordered to hold it whole.
    pub ordered: Vec<String>,
    /// Nodes of that region that report holding it whole.
    pub held_by: Vec<String>,
}

/// `GET /v1/popularity`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Popularity {
    /// Songs hot in some region, hottest first.
    pub hot: Vec<HotSong>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_have_map_is_bits_in_hex_and_bounded() {
        let h = HaveMap::from_held(10, [0, 3, 9, 12]);
        assert_eq!(serde_json::to_string(&h).unwrap(), "\"0902\"");
        assert_eq!(
            (0..12).filter(|&i| h.has(i)).collect::<Vec<_>>(),
            vec![0, 3, 9]
        );
        assert_eq!(h.count(), 3);
        let back: HaveMap = serde_json::from_str("\"0902\"").unwrap();
        assert_eq!(back, h);
        assert!(serde_json::from_str::<HaveMap>("\"0g\"").is_err());
        let big = format!("\"{}\"", "ff".repeat(MAX_HAVE_BYTES + 1));
        assert!(serde_json::from_str::<HaveMap>(&big).is_err());
        let max = format!("\"{}\"", "ff".repeat(MAX_HAVE_BYTES));
        assert_eq!(serde_json::from_str::<HaveMap>(&max).unwrap().count(), 4096);
    }
}
