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
