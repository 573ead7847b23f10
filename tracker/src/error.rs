//! Why a tracker operation was refused.

use medley_core::{LayoutError, ManifestError, PublisherId, SongId};

use crate::db::DbError;
use crate::search::SearchError;

/// Why a tracker operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The manifest is invalid.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The manifest is signed by a key that may not publish here.
    #[error("publisher {0} is not authorised on this tracker")]
    UnknownPublisher(PublisherId),
    /// The manifest uses another code than the network.
    #[error("manifest uses {k}+{m} coding, this network uses {net_k}+{net_m}")]
    Coding {
        /// Manifest's k.
        k: u8,
        /// Manifest's m.
        m: u8,
        /// Network's k.
        net_k: u8,
        /// Network's m.
        net_m: u8,
    },
    /// A play report is invalid.
    #[error("invalid play report: {0}")]
    BadPlay(&'static str),
    /// No such song.
    #[error("no song {0}")]
    UnknownSong(SongId),
    /// No such node.
    #[error("no node {0} is registered")]
    UnknownNode(String),
    /// A registration field is invalid.
    #[error("invalid registration: {0}")]
    BadRegistration(&'static str),
    /// The node's region is not one of the tracker's.
    #[error("region {region:?} is not one of this tracker's regions ({known})")]
    BadRegion {
        /// The region named.
        region: String,
        /// The configured regions, comma-separated.
        known: String,
    },
    /// A join token does not admit this node.
    #[error("join token refused: {0}")]
    BadInvite(String),
    /// There is no layout yet (too few nodes).
    #[error("no layout yet: {0}")]
    NoLayout(LayoutError),
    /// No layout has this version.
    #[error("no layout version {0}")]
    UnknownLayout(u64),
    /// The partition number is past the layout's partitions.
    #[error("partition {partition} does not exist; this network has {partitions}")]
    UnknownPartition {
        /// Asked for.
        partition: u16,
        /// Partitions of the network.
        partitions: u16,
    },
    /// Draining the node would leave too few nodes for `k + m` distinct slots.
    #[error(
        "cannot drain {node}: {left} other nodes would be left, a layout needs {need}; add a node first"
    )]
    CannotDrain {
        /// The node.
        node: String,
        /// Live, non-draining nodes that would remain.
        left: usize,
        /// k + m.
        need: usize,
    },
    /// The tracker holds as much of something as it may; try later.
    #[error("{0}; try again later")]
    Busy(&'static str),
    /// Storage failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The tracker's key file could not be read or made.
    #[error(transparent)]
    Key(#[from] medley_daemon::keyfile::KeyFileError),
    /// Search failed or the query was refused.
    #[error(transparent)]
    Search(#[from] SearchError),
}

/// A record in the database that does not read back.
pub(crate) fn corrupt(what: impl Into<String>, reason: impl ToString) -> DbError {
    DbError::Corrupt {
        what: what.into(),
        reason: reason.to_string(),
    }
}
