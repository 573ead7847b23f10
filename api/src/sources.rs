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
}

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
