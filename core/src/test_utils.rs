//! Helpers for tests in this and other crates (feature `test-utils`).

use crate::{Codec, ManifestBody, PublisherId, SegmentEntry, Segmenter, SongMeta};

/// A consistent manifest body for `data`: segmented, coded `k + m`, shard ids filled in,
/// ready to sign. Panics on invalid parameters (it is for tests).
pub fn body_for(
    meta: SongMeta,
    data: &[u8],
    segment_size: u32,
    k: u8,
    m: u8,
    publisher: PublisherId,
) -> ManifestBody {
    let codec = Codec::new(k, m).expect("valid k and m");
    let segments = Segmenter::new(data, segment_size)
        .map(|s| {
            let s = s.expect("reading a slice cannot fail");
            let shards = codec.encode_with_ids(&s.bytes).expect("non-empty segment");
            SegmentEntry {
                id: s.id,
                len: s.bytes.len() as u32,
                shards: shards.into_iter().map(|(id, _)| id).collect(),
            }
        })
        .collect();
    ManifestBody {
        meta,
        total_size: data.len() as u64,
        segment_size,
        k,
        m,
        segments,
        publisher,
    }
}

/// Metadata of a FLAC song titled `title`, every other tag absent.
pub fn flac_meta(title: &str) -> crate::SongMeta {
    crate::SongMeta {
        title: title.into(),
        artist: None,
        album: None,
        genre: None,
        year: None,
        track: None,
        duration_ms: None,
        codec: "flac".into(),
        mime: "audio/flac".into(),
        bitrate: None,
    }
}

/// The tracker key tests configure their standalone nodes with (`tracker_key`).
pub fn test_tracker_key() -> crate::TrackerKey {
    crate::TrackerKey::from_seed([0x7a; 32])
}

/// A grant by [`test_tracker_key`] for `node` to store `shards`, valid for an hour.
pub fn test_grant(node: &str, shards: Vec<crate::ShardId>) -> crate::Grant {
    test_tracker_key()
        .grant(node, shards, crate::unix_now() + 3600)
        .expect("at most MAX_GRANT_SHARDS ids")
}
