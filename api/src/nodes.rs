//! Storage nodes as the API shows them: registration, heartbeats, the registry, the layout
//! and what nodes are told to do.

use medley_core::{SegmentEntry, SegmentId, SongId, TrackerId};
use serde::{Deserialize, Serialize};

use crate::catalog::Delivered;

/// What a node tells the tracker when it registers (`POST /v1/nodes/register`, signed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// libp2p peer id.
    pub peer_id: String,
    /// Data-plane multiaddrs.
    pub addrs: Vec<String>,
    /// Region.
    pub region: String,
    /// Capacity in bytes.
    pub capacity: u64,
    /// A join token from the tracker's operator (`medley-tracker nodes invite`), until the
    /// node is admitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join: Option<String>,
}

/// Whether a node may hold data: the operator's consent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Admission {
    /// Registered without consent yet: never placed in the layout.
    Pending,
    /// Admitted by a join token or an approval (and every node of a tracker that admits
    /// all, or registered before admission was kept).
    #[default]
    Admitted,
    /// Its admission was revoked by the operator: out of the layout.
    Revoked,
}

impl Admission {
    /// The word `medley-tracker nodes` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Admitted => "admitted",
            Self::Revoked => "revoked",
        }
    }
}

/// The tracker's answer to a registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    /// The current layout version (`None`: too few nodes for one yet).
    pub layout_version: Option<u64>,
    /// The key that signs grants, layouts and orders.
    pub tracker_key: TrackerId,
    /// Whether the node may hold data.
    #[serde(default)]
    pub admission: Admission,
    /// Why the node is out of the layout though admitted (it failed its audits), if so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evicted: Option<String>,
}

/// A node's repair work, as it reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepairLoad {
    /// Shards its slots should hold that it lacks, as of its last pass.
    pub backlog: u64,
    /// Shards rebuilt or copied since it started.
    pub done: u64,
    /// Repair attempts that failed since it started (retried later).
    pub failed: u64,
    /// Corrupt shards its scrubber found and deleted since it started.
    #[serde(default)]
    pub scrub_bad: u64,
    /// Shards it handed over and deleted since it started.
    #[serde(default)]
    pub handed_over: u64,
    /// Shard bytes it read from other nodes to repair since it started.
    #[serde(default)]
    pub bytes_read: u64,
}

impl RepairLoad {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &RepairLoad) {
        self.backlog += other.backlog;
        self.done += other.done;
        self.failed += other.failed;
        self.scrub_bad += other.scrub_bad;
        self.handed_over += other.handed_over;
        self.bytes_read += other.bytes_read;
    }
}

/// Load a node reports in its heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Load {
    /// Free bytes.
    pub free: u64,
    /// Bytes per second served, recently.
    pub bytes_per_sec: u64,
    /// Transfers in flight.
    pub transfers: u32,
    /// Bytes stored (shards and hot copies).
    #[serde(default)]
    pub used: u64,
    /// Durable shards stored.
    #[serde(default)]
    pub shards: u64,
    /// The node's repair work.
    #[serde(default)]
    pub repair: RepairLoad,
    /// Bytes its hot tier may still take (absent: as much as is free).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hot_free: Option<u64>,
}

/// A heartbeat (`POST /v1/nodes/heartbeat`, signed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The node.
    pub peer_id: String,
    /// Its load.
    #[serde(flatten)]
    pub load: Load,
    /// Songs it holds whole in its hot tier (absent: unchanged).
    #[serde(default)]
    pub hot: Option<Vec<SongId>>,
    /// The newest layout version whose every slot of this node it holds all the shards of
    /// (its last repair pass found nothing missing and failed nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repaired_version: Option<u64>,
}

/// What the tracker's audits found about a node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Audits passed.
    pub passed: u64,
    /// Audits answered with no proof (or a refusal).
    pub failed: u64,
    /// Audits not answered in time.
    pub timeouts: u64,
    /// Failures and timeouts since the last pass.
    pub consecutive_failures: u32,
    /// Unix milliseconds of the last audit.
    pub last_ms: u64,
    /// What the last failed audit found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// A node's notice that it is stopping (`POST /v1/nodes/leave`, signed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Leaving {
    /// The node.
    pub peer_id: String,
}

/// A node as the tracker knows it: what it registered, what it last reported, and what
/// the tracker decided about it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// libp2p peer id.
    pub peer_id: String,
    /// Data-plane multiaddrs.
    pub addrs: Vec<String>,
    /// Region.
    pub region: String,
    /// Capacity in bytes, as registered.
    pub capacity: u64,
    /// Last reported load.
    #[serde(default)]
    pub load: Load,
    /// Unix milliseconds of the last register or heartbeat.
    #[serde(default)]
    pub last_seen_ms: u64,
    /// Set by a drain: the node stays up and hands its shards over, but the layout no longer
    /// gives it slots.
    #[serde(default)]
    pub draining: bool,
    /// Set when the node said it is stopping; cleared by its next registration or
    /// heartbeat. A stopped node is no longer offered as a source, but the layout keeps its
    /// slots for the grace period, as for any node gone quiet, so a restart moves no data.
    #[serde(default)]
    pub stopped: bool,
    /// Whether the operator consented to it holding data.
    #[serde(default)]
    pub admission: Admission,
    /// The most capacity it may count with, from its join token or approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_cap: Option<u64>,
    /// Id (hex) of the join token that admitted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invite: Option<String>,
    /// Unix milliseconds of its first registration.
    #[serde(default)]
    pub first_seen_ms: u64,
    /// Its newest layout version fully repaired (from its heartbeats: its word).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repaired_version: Option<u64>,
    /// The `repaired_version` it stated when it last passed an audit (with audits off, its
    /// word): its slots of versions up to this one count as settled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_version: Option<u64>,
    /// Bytes of its slots it proved it holds (audits passed), in powers of two.
    #[serde(default)]
    pub proven_bytes: u64,
    /// Its audits.
    #[serde(default)]
    pub audits: AuditRecord,
    /// Why it was put out of the layout after failing its audits; cleared by an approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evicted: Option<String>,
}

/// One node of `GET /v1/nodes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEntry {
    /// What it registered and reported.
    pub node: NodeRecord,
    /// Heard from within the grace period and not stopped.
    pub alive: bool,
    /// Banned after reports that it sent wrong bytes.
    #[serde(default)]
    pub banned: bool,
    /// The weight the layout gives it now (bytes): its capacity, capped by its admission,
    /// the tracker's limit and what it has proved plus a newcomer's allowance; 0 when it
    /// gets no slots.
    #[serde(default)]
    pub weight: u64,
}

/// `GET /v1/nodes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeList {
    /// Every registered node.
    pub nodes: Vec<NodeEntry>,
}

/// The tracker's counters and the network's coding (`GET /v1/stats`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Songs in the catalogue.
    pub songs: u64,
    /// Registered nodes.
    pub nodes: usize,
    /// Nodes heard from recently and not stopped.
    pub nodes_alive: usize,
    /// Nodes handing their shards over before leaving.
    #[serde(default)]
    pub nodes_draining: usize,
    /// Repair work summed over live nodes.
    #[serde(default)]
    pub repair: RepairLoad,
    /// Current layout version, if any.
    pub layout_version: Option<u64>,
    /// The oldest layout version still kept: a slot moved since is not yet settled (its new
    /// node may still lack shards that nodes of the versions from here on hold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout_oldest: Option<u64>,
    /// Partitions of the layout.
    pub partitions: u16,
    /// Data shards per segment.
    pub k: u8,
    /// Parity shards per segment.
    pub m: u8,
    /// The key that signs grants, layouts and orders.
    pub tracker_key: TrackerId,
    /// Bytes of plays clients reported, by source.
    #[serde(default)]
    pub delivered: Delivered,
}

/// `GET /v1/layout` parameters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayoutQuery {
    /// A past or current version; absent: the current one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

/// `GET /v1/partitions/{p}/segments` parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentsQuery {
    /// The cursor: segments after this id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// Page size; 1000 by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// A page of the segments placed in a partition, in id order (signed answer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionSegments {
    /// The partition.
    pub partition: u16,
    /// This page.
    pub segments: Vec<SegmentEntry>,
    /// The cursor of the next page, if this one was full.
    pub next: Option<SegmentId>,
}

/// The songs a node is ordered to hold whole (`GET /v1/nodes/{id}/hot`, signed answer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HotOrders {
    /// The node.
    pub node: String,
    /// The songs.
    pub songs: Vec<SongId>,
}

/// A join token to make (`POST /v1/nodes/invites`, admin).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InviteRequest {
    /// The region the node must register in (one of the tracker's `regions`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The most capacity (bytes) the node may count with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u64>,
    /// Seconds the token holds; 7 days by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_secs: Option<u64>,
}

/// A join token (answer to `POST /v1/nodes/invites`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteToken {
    /// The token, for `medley-node init --join`.
    pub token: String,
    /// Its id (hex).
    pub id: String,
    /// The region it fixes, if any.
    pub region: Option<String>,
    /// The capacity cap it sets, if any.
    pub capacity: Option<u64>,
    /// Unix seconds it holds until.
    pub expires: u64,
}

/// An approval (`POST /v1/nodes/{id}/approve`, admin).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproveRequest {
    /// The most capacity (bytes) the node may count with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u64>,
}

/// A node's admission after an approval or revocation (admin).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdmissionChange {
    /// The node.
    pub node: String,
    /// Its admission now.
    pub admission: Admission,
    /// The layout version that follows.
    pub layout_version: Option<u64>,
}

/// A node's drain state after a drain or undrain (admin).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainState {
    /// The node.
    pub node: String,
    /// Whether it is draining now.
    pub draining: bool,
    /// The layout version that follows.
    pub layout_version: Option<u64>,
}

/// `GET /v1/layout/preview` parameters (admin).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviewQuery {
    /// Comma-separated peer ids to drain.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub drain: String,
    /// Comma-separated peer ids whose drain to cancel.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub undrain: String,
}

/// What a layout change would do, computed without applying it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayoutPreview {
    /// Version of the layout in force (`None`: none yet).
    pub current_version: Option<u64>,
    /// Whether the change would give any slot to another node.
    pub changes: bool,
    /// Slots (partition, position) that would get another node.
    pub moved_slots: usize,
    /// Shards the new holders would have to fetch or rebuild.
    pub moved_shards: u64,
    /// Their bytes.
    pub moved_bytes: u64,
    /// Slots per node before and after.
    pub nodes: Vec<NodeSlots>,
}

/// One node's share of a layout before and after a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSlots {
    /// The node.
    pub peer_id: String,
    /// Its region.
    pub region: String,
    /// Slots it holds now.
    pub before: usize,
    /// Slots it would hold.
    pub after: usize,
}
