//! Medley's content model: the pieces every process agrees on, with no I/O.
//!
//! - [`Hash`] and the ids [`SegmentId`], [`ShardId`], [`SongId`]: BLAKE3, lowercase hex.
//! - [`Segmenter`]: cuts any reader into fixed-size segments, one segment in memory at a time.
//! - [`Codec`]: Reed-Solomon `k + m` erasure coding of a segment into shards.
//! - [`Manifest`]: a song's metadata and layout, canonically encoded and signed by its
//!   publisher; `SongId = blake3(encoding)`.
//! - [`protocol`]: the data-plane messages between nodes and clients.
//!
//! ```
//! use medley_core::{Codec, Segmenter, SegmentId};
//!
//! let song = vec![42u8; 600 * 1024];
//! let codec = Codec::new(4, 2).unwrap();
//! for segment in Segmenter::new(&song[..], 256 * 1024) {
//!     let segment = segment.unwrap();
//!     let mut shards: Vec<Option<Vec<u8>>> = codec.encode(&segment.bytes).unwrap().into_iter().map(Some).collect();
//!     shards[0] = None; // lose any two
//!     shards[3] = None;
//!     let back = codec.reconstruct_verified(&shards, segment.bytes.len(), segment.id).unwrap();
//!     assert_eq!(back, segment.bytes);
//! }
//! ```
//!
//! Laws kept here: every id is the BLAKE3 hash of the bytes it names; nothing decoded from
//! outside is returned unless it was checked (hashes, sizes, counts, signatures).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

/// Serialization, display and parsing of a 32-byte public key newtype, the same as
/// [`Hash`]'s: hex in text and JSON, raw bytes in postcard.
macro_rules! key_id_impls {
    ($name:ident) => {
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                serde::Serialize::serialize(&crate::hash::Hash::from_bytes(self.0), s)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                <crate::hash::Hash as serde::Deserialize>::deserialize(d)
                    .map(|h| Self(*h.as_bytes()))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                std::fmt::Display::fmt(&crate::hash::Hash::from_bytes(self.0), f)
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}({self})", stringify!($name))
            }
        }

        impl std::str::FromStr for $name {
            type Err = crate::hash::ParseIdError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.parse::<crate::hash::Hash>().map(|h| Self(*h.as_bytes()))
            }
        }
    };
}

pub mod audit;
mod erasure;
mod grant;
mod hash;
mod invite;
mod layout;
mod manifest;
pub mod protocol;
mod segment;
#[cfg(any(test, feature = "test-utils"))]
#[allow(clippy::expect_used)]
pub mod test_utils;
mod util;

pub use audit::{AuditError, Challenge};
pub use erasure::{Codec, CodecError, MAX_DATA_SHARDS, MAX_PARITY_SHARDS, SHARD_ALIGN};
pub use grant::{
    Grant, GrantError, GrantSignature, MAX_GRANT_ENCODED, MAX_GRANT_NODE_LEN, MAX_GRANT_SHARDS,
    TrackerId, TrackerKey,
};
pub use hash::{HASH_LEN, Hash, Hasher, ParseIdError, SegmentId, ShardId, SongId};
pub use invite::{INVITE_PREFIX, Invite, InviteError, MAX_INVITE_TOKEN};
pub use layout::{DEFAULT_PARTITIONS, Layout, LayoutError, Member, partition_of};
pub use manifest::{
    MANIFEST_FORMAT_VERSION, MAX_MANIFEST_SIZE, MAX_TEXT_FIELD, Manifest, ManifestBody,
    ManifestError, PublisherId, PublisherKey, SegmentEntry, SongMeta,
};
pub use segment::{DEFAULT_SEGMENT_SIZE, MAX_SEGMENT_SIZE, Segment, Segmenter, segment_count};
pub use util::{error_chain, unix_now, unix_now_ms};

/// Default coding for small networks: 4 data + 2 parity shards.
pub const DEFAULT_K: u8 = 4;
/// Default parity shards.
pub const DEFAULT_M: u8 = 2;
