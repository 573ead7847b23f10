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

pub mod api;
mod erasure;
mod grant;
mod hash;
mod layout;
mod manifest;
pub mod protocol;
mod segment;
#[cfg(any(test, feature = "test-utils"))]
#[allow(clippy::expect_used)]
pub mod test_utils;

pub use erasure::{Codec, CodecError, MAX_DATA_SHARDS, MAX_PARITY_SHARDS, SHARD_ALIGN};
pub use grant::{
    Grant, GrantError, GrantSignature, MAX_GRANT_ENCODED, MAX_GRANT_NODE_LEN, MAX_GRANT_SHARDS,
    TrackerId, TrackerKey, unix_now,
};
pub use hash::{HASH_LEN, Hash, ParseIdError, SegmentId, ShardId, SongId};
pub use layout::{DEFAULT_PARTITIONS, Layout, LayoutError, Member, partition_of};
pub use manifest::{
    MANIFEST_FORMAT_VERSION, MAX_MANIFEST_SIZE, MAX_TEXT_FIELD, Manifest, ManifestBody,
    ManifestError, PublisherId, PublisherKey, SegmentEntry, SongMeta,
};
pub use segment::{DEFAULT_SEGMENT_SIZE, MAX_SEGMENT_SIZE, Segment, Segmenter, segment_count};

/// Default coding for small networks: 4 data + 2 parity shards.
pub const DEFAULT_K: u8 = 4;
/// Default parity shards.
pub const DEFAULT_M: u8 = 2;
