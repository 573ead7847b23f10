//! The song manifest: metadata, layout of segments and shards, and the publisher's signature.
//!
//! Encoding (format version 1), canonical and compact:
//!
//! ```text
//! varint(format_version = 1) || postcard(ManifestBody) || ed25519 signature (64 bytes)
//! ```
//!
//! The signature covers [`SIGNING_CONTEXT`] followed by every byte before it. `SongId =
//! blake3(all bytes)`. Decoding re-encodes and rejects any input that is not byte-identical,
//! so one manifest has exactly one encoding and one `SongId`.
//!
//! Laws:
//! - `Manifest::decode(m.encode()) == m` for every signed manifest `m`.
//! - A manifest that decodes has passed [`ManifestBody::check`] and its signature verified.
//! - Changing any field changes the encoding and so the `SongId`.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::fmt;

use crate::erasure::{Codec, CodecError};
use crate::hash::{SegmentId, ShardId, SongId};
use crate::segment::{MAX_SEGMENT_SIZE, segment_count};

/// The manifest format this code writes.
pub const MANIFEST_FORMAT_VERSION: u16 = 1;
/// Largest encoded manifest accepted: 4 MiB (a 10-minute FLAC at 256 KiB segments and 4+2
/// coding needs about 55 KiB).
pub const MAX_MANIFEST_SIZE: usize = 4 * 1024 * 1024;
/// Largest length in bytes of any text field of [`SongMeta`].
pub const MAX_TEXT_FIELD: usize = 1024;
/// Domain separation for manifest signatures.
pub(crate) const SIGNING_CONTEXT: &[u8] = b"medley manifest signature v1\0";
const SIGNATURE_LEN: usize = 64;

/// Descriptive metadata of a song.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SongMeta {
    /// Title; never empty.
    pub title: String,
    /// Performing artist.
    pub artist: Option<String>,
    /// Album.
    pub album: Option<String>,
    /// Genre.
    pub genre: Option<String>,
    /// Year of release.
    pub year: Option<u16>,
    /// Track number on the album.
    pub track: Option<u16>,
    /// Duration in milliseconds.
    pub duration_ms: Option<u64>,
    /// Codec name, e.g. `flac`, `vorbis`, `opus`, `mp3`, `pcm`.
    pub codec: String,
    /// MIME type of the file, e.g. `audio/flac`.
    pub mime: String,
    /// Average bitrate in bits per second.
    pub bitrate: Option<u32>,
}

/// One segment of a song and the ids of its `k + m` shards, in slot order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentEntry {
    /// `blake3(segment bytes)`.
    pub id: SegmentId,
    /// Segment length in bytes.
    pub len: u32,
    /// Shard ids, data shards first, then parity.
    pub shards: Vec<ShardId>,
}

/// A publisher's public key (ed25519), shown as hex; serialized like [`crate::Hash`] (hex in
/// JSON, raw bytes in postcard).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublisherId(pub [u8; 32]);

key_id_impls!(PublisherId);

/// A publisher's signing key.
#[derive(Clone)]
pub struct PublisherKey(SigningKey);

impl PublisherKey {
    /// The key for a 32-byte secret seed (from a CSPRNG, or a key file).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self(SigningKey::from_bytes(&seed))
    }

    /// The secret seed, for storing the key.
    pub fn seed(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The public half.
    pub fn id(&self) -> PublisherId {
        PublisherId(self.0.verifying_key().to_bytes())
    }
}

impl fmt::Debug for PublisherKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublisherKey({})", self.id())
    }
}

/// Everything in a manifest but the signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestBody {
    /// Song metadata.
    pub meta: SongMeta,
    /// Size of the song's file in bytes.
    pub total_size: u64,
    /// Size of every segment but the last.
    pub segment_size: u32,
    /// Data shards per segment.
    pub k: u8,
    /// Parity shards per segment.
    pub m: u8,
    /// The segments in order.
    pub segments: Vec<SegmentEntry>,
    /// Who signed this manifest.
    pub publisher: PublisherId,
}

/// Why a manifest is rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The encoding is longer than [`MAX_MANIFEST_SIZE`].
    #[error("manifest is {size} bytes, more than the {max} allowed")]
    TooLarge {
        /// Size given.
        size: usize,
        /// Limit.
        max: usize,
    },
    /// The bytes do not decode.
    #[error("malformed manifest: {reason}")]
    Malformed {
        /// What the decoder reported.
        reason: String,
    },
    /// A format version this code cannot read.
    #[error("unsupported manifest format version {0}")]
    UnsupportedVersion(u16),
    /// The bytes decode but are not the canonical encoding of what they decode to.
    #[error("manifest encoding is not canonical")]
    NotCanonical,
    /// The bytes do not hash to the expected song id.
    #[error("manifest bytes do not match song id {expected}")]
    IdMismatch {
        /// The id asked for.
        expected: SongId,
    },
    /// The title is empty.
    #[error("title is empty")]
    EmptyTitle,
    /// A text field is too long.
    #[error("field {field} is {len} bytes, more than {MAX_TEXT_FIELD}")]
    FieldTooLong {
        /// Field name.
        field: &'static str,
        /// Its length.
        len: usize,
    },
    /// `k`/`m` are not a supported code.
    #[error("bad coding parameters: {0}")]
    Coding(#[from] CodecError),
    /// Segment size out of range.
    #[error("segment size {0} is outside 1..={MAX_SEGMENT_SIZE}")]
    SegmentSize(u32),
    /// Number of segments does not match total size and segment size.
    #[error(
        "{got} segments listed, but {total_size} bytes at {segment_size} per segment need {expected}"
    )]
    SegmentCount {
        /// Listed.
        got: usize,
        /// Implied.
        expected: u64,
        /// Total size.
        total_size: u64,
        /// Segment size.
        segment_size: u32,
    },
    /// A segment's length is not what its position implies.
    #[error("segment {index} is {got} bytes, expected {expected}")]
    SegmentLength {
        /// Segment index.
        index: usize,
        /// Implied length.
        expected: u64,
        /// Listed length.
        got: u32,
    },
    /// A segment lists the wrong number of shards.
    #[error("segment {index} lists {got} shards, expected {expected}")]
    ShardCount {
        /// Segment index.
        index: usize,
        /// `k + m`.
        expected: usize,
        /// Listed.
        got: usize,
    },
    /// The publisher key is not a valid ed25519 point.
    #[error("publisher key {0} is not a valid ed25519 key")]
    BadPublisherKey(PublisherId),
    /// The signature does not verify.
    #[error("signature does not verify for publisher {0}")]
    BadSignature(PublisherId),
}

impl ManifestBody {
    /// Checks that the body is self-consistent: non-empty title, bounded text, a supported
    /// code, segment count and lengths matching the total size, `k + m` shards per segment.
    pub fn check(&self) -> Result<(), ManifestError> {
        let meta = &self.meta;
        if meta.title.trim().is_empty() {
            return Err(ManifestError::EmptyTitle);
        }
        let texts: [(&'static str, Option<&str>); 6] = [
            ("title", Some(&meta.title)),
            ("artist", meta.artist.as_deref()),
            ("album", meta.album.as_deref()),
            ("genre", meta.genre.as_deref()),
            ("codec", Some(&meta.codec)),
            ("mime", Some(&meta.mime)),
        ];
        for (field, text) in texts {
            let len = text.map_or(0, str::len);
            if len > MAX_TEXT_FIELD {
                return Err(ManifestError::FieldTooLong { field, len });
            }
        }
        let codec = self.codec()?;
        if self.segment_size == 0 || self.segment_size > MAX_SEGMENT_SIZE {
            return Err(ManifestError::SegmentSize(self.segment_size));
        }
        let expected = segment_count(self.total_size, self.segment_size);
        if self.segments.len() as u64 != expected {
            return Err(ManifestError::SegmentCount {
                got: self.segments.len(),
                expected,
                total_size: self.total_size,
                segment_size: self.segment_size,
            });
        }
        let seg = u64::from(self.segment_size);
        for (index, s) in self.segments.iter().enumerate() {
            let start = index as u64 * seg;
            let expected = (self.total_size - start).min(seg);
            if u64::from(s.len) != expected {
                return Err(ManifestError::SegmentLength {
                    index,
                    expected,
                    got: s.len,
                });
            }
            if s.shards.len() != codec.total() {
                return Err(ManifestError::ShardCount {
                    index,
                    expected: codec.total(),
                    got: s.shards.len(),
                });
            }
        }
        Ok(())
    }

    /// The erasure code named by `k` and `m`.
    pub fn codec(&self) -> Result<Codec, ManifestError> {
        Ok(Codec::new(self.k, self.m)?)
    }

    fn encode_unsigned(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.segments.len() * (40 + 32 * 6));
        // postcard writes into an extensible Vec; serializing these plain types cannot fail.
        out = postcard::to_extend(&MANIFEST_FORMAT_VERSION, out).unwrap_or_default();
        postcard::to_extend(self, out).unwrap_or_default()
    }

    fn signing_message(unsigned: &[u8]) -> Vec<u8> {
        let mut msg = Vec::with_capacity(SIGNING_CONTEXT.len() + unsigned.len());
        msg.extend_from_slice(SIGNING_CONTEXT);
        msg.extend_from_slice(unsigned);
        msg
    }
}

/// A checked, signed manifest. Construct with [`Manifest::sign`] or [`Manifest::decode`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    body: ManifestBody,
    signature: [u8; SIGNATURE_LEN],
    encoded: Vec<u8>,
    id: SongId,
    codec: Codec,
}

impl Manifest {
    /// Checks `body` and signs it. `body.publisher` is set to `key`'s public half.
    pub fn sign(mut body: ManifestBody, key: &PublisherKey) -> Result<Self, ManifestError> {
        body.publisher = key.id();
        body.check()?;
        let codec = body.codec()?;
        let mut encoded = body.encode_unsigned();
        let signature = key
            .0
            .sign(&ManifestBody::signing_message(&encoded))
            .to_bytes();
        encoded.extend_from_slice(&signature);
        Self::check_size(encoded.len())?;
        let id = SongId::of(&encoded);
        Ok(Self {
            body,
            signature,
            encoded,
            id,
            codec,
        })
    }

    fn check_size(size: usize) -> Result<(), ManifestError> {
        if size > MAX_MANIFEST_SIZE {
            Err(ManifestError::TooLarge {
                size,
                max: MAX_MANIFEST_SIZE,
            })
        } else {
            Ok(())
        }
    }

    /// Decodes, checks and verifies a manifest.
    pub fn decode(bytes: &[u8]) -> Result<Self, ManifestError> {
        Self::check_size(bytes.len())?;
        let malformed = |e: postcard::Error| ManifestError::Malformed {
            reason: e.to_string(),
        };
        let (version, rest) = postcard::take_from_bytes::<u16>(bytes).map_err(malformed)?;
        let body = match version {
            1 => {
                if rest.len() < SIGNATURE_LEN {
                    return Err(ManifestError::Malformed {
                        reason: "truncated before the signature".into(),
                    });
                }
                let (body_bytes, _) = rest.split_at(rest.len() - SIGNATURE_LEN);
                let (body, trailing) =
                    postcard::take_from_bytes::<ManifestBody>(body_bytes).map_err(malformed)?;
                if !trailing.is_empty() {
                    return Err(ManifestError::NotCanonical);
                }
                body
            }
            other => return Err(ManifestError::UnsupportedVersion(other)),
        };
        let split = bytes.len() - SIGNATURE_LEN;
        let unsigned = &bytes[..split];
        if body.encode_unsigned() != unsigned {
            return Err(ManifestError::NotCanonical);
        }
        body.check()?;
        let codec = body.codec()?;
        let mut signature = [0u8; SIGNATURE_LEN];
        signature.copy_from_slice(&bytes[split..]);
        let key = VerifyingKey::from_bytes(&body.publisher.0)
            .map_err(|_| ManifestError::BadPublisherKey(body.publisher))?;
        key.verify_strict(
            &ManifestBody::signing_message(unsigned),
            &Signature::from_bytes(&signature),
        )
        .map_err(|_| ManifestError::BadSignature(body.publisher))?;
        Ok(Self {
            id: SongId::of(bytes),
            encoded: bytes.to_vec(),
            body,
            signature,
            codec,
        })
    }

    /// Decodes a manifest and checks that it is the one named `id`.
    pub fn decode_expecting(bytes: &[u8], id: SongId) -> Result<Self, ManifestError> {
        if !id.matches(bytes) {
            return Err(ManifestError::IdMismatch { expected: id });
        }
        Self::decode(bytes)
    }

    /// The canonical encoding.
    pub fn encoded(&self) -> &[u8] {
        &self.encoded
    }

    /// `blake3(encoded)`.
    pub fn id(&self) -> SongId {
        self.id
    }

    /// The signed body.
    pub fn body(&self) -> &ManifestBody {
        &self.body
    }

    /// Song metadata.
    pub fn meta(&self) -> &SongMeta {
        &self.body.meta
    }

    /// The erasure code the segments use.
    pub fn codec(&self) -> &Codec {
        &self.codec
    }

    /// The signature bytes.
    pub fn signature(&self) -> &[u8; SIGNATURE_LEN] {
        &self.signature
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn key() -> PublisherKey {
        PublisherKey::from_seed([7u8; 32])
    }

    /// A manifest for fixed bytes, built the way a publisher builds one.
    fn body_for(data: &[u8], segment_size: u32, k: u8, m: u8) -> ManifestBody {
        let meta = SongMeta {
            title: "Gymnopédie No. 1".into(),
            artist: Some("Erik Satie".into()),
            album: Some("Trois Gymnopédies".into()),
            genre: Some("Classical".into()),
            year: Some(1888),
            track: Some(1),
            duration_ms: Some(185_000),
            codec: "flac".into(),
            mime: "audio/flac".into(),
            bitrate: Some(900_000),
        };
        crate::test_utils::body_for(meta, data, segment_size, k, m, key().id())
    }

    fn fixed() -> Manifest {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 31 % 251) as u8).collect();
        Manifest::sign(body_for(&data, 400, 2, 1), &key()).unwrap()
    }

    #[test]
    fn round_trip() {
        let m = fixed();
        let back = Manifest::decode(m.encoded()).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.id(), SongId::of(m.encoded()));
        assert_eq!(Manifest::decode_expecting(m.encoded(), m.id()).unwrap(), m);
    }

    #[test]
    fn byte_snapshot() {
        let m = fixed();
        let hex = hex::encode(m.encoded());
        assert_eq!(
            hex, SNAPSHOT,
            "manifest format v1 changed; bump the version instead"
        );
        assert_eq!(m.id().to_string(), SNAPSHOT_ID);
    }

    const SNAPSHOT: &str = concat!(
        "011147796d6e6f70c3a9646965204e6f2e2031010a4572696b205361746965011254726f69732047796d6e6f70c3a964",
        "6965730109436c6173736963616c01e00e010101a8a50b04666c61630a617564696f2f666c616301a0f736e807900302",
        "0103453a47be903eb206b2caec2777723a1fa95e80cd733863a682c4f72909158bc99003032486ca14750b66b367f363",
        "37846751522621b92ea68ad3f7321319fd301d8d2aa45b32151d0852c53a4d898d5c6e7e34208c08c79f803f7cf74f54",
        "4fa6048cbe140634fbe30ce4e936ae419c4c49a0f68485cd719c28453812f1f132abebd337be8ad2d5779a898c5c7818",
        "d3413dd1edb58f909906384d8faf2106e885d068ae900303443b1a2383cb5e53b6f9e60180713b11eecd6254d563ed1a",
        "8db732f67cf16b6e80f654f1c22b1b82e7ac40ba0c3d10c79292a5069cd0929cbf7d38cf981bf7c7f6b86af262606041",
        "e4c6b1248cbed9ad032e52a9bfb8ff0accb791eb203119db58b97b637723c438bc69fb5da89ce83bfa21e4a4d9b9d129",
        "2bcbc99d2971761cc80103f2ce5472097a4d8789307bd85ad5f1e73ad6989b7239d4815488e5861fb615f8843a821055",
        "c3cd940931ca065b7e924afb2394fc2e7b7fcaeb814f40196d79322cfb19af1a0bec67f845555a43cd28efaf20387418",
        "65cdee7eb392584c84b1b9ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c50bcb97c2a",
        "c4cf1ac0cd2bf9c2b6c7922da31924ec99a4c06a636685784ca33b594ac18ea533967910cd1d9ef688391f8c7cea38df",
        "80ef50cb371b6a947b3e07"
    );
    const SNAPSHOT_ID: &str = "b67eae963f4579c2ba70344c4f8fd76bc81bb98b2e274ba6fd6ecc8b346ab0a5";

    #[test]
    fn every_field_changes_the_id() {
        let base = body_for(&[1u8; 1000], 400, 2, 1);
        let id0 = Manifest::sign(base.clone(), &key()).unwrap().id();
        let edits: Vec<Box<dyn Fn(&mut ManifestBody)>> = vec![
            Box::new(|b| b.meta.title.push('!')),
            Box::new(|b| b.meta.artist = None),
            Box::new(|b| b.meta.album = Some("Other".into())),
            Box::new(|b| b.meta.genre = Some("Jazz".into())),
            Box::new(|b| b.meta.year = Some(1889)),
            Box::new(|b| b.meta.track = Some(2)),
            Box::new(|b| b.meta.duration_ms = Some(1)),
            Box::new(|b| b.meta.codec = "vorbis".into()),
            Box::new(|b| b.meta.mime = "audio/ogg".into()),
            Box::new(|b| b.meta.bitrate = None),
            Box::new(|b| b.segments[0].id = SegmentId::of(b"other")),
            Box::new(|b| b.segments[1].shards[2] = ShardId::of(b"other")),
        ];
        for (i, edit) in edits.iter().enumerate() {
            let mut b = base.clone();
            edit(&mut b);
            let id = Manifest::sign(b, &key()).unwrap().id();
            assert_ne!(id, id0, "edit {i} left the id unchanged");
        }
        // Structural fields change it too (each needs a consistent body).
        let other = [
            body_for(&[1u8; 1001], 400, 2, 1),
            body_for(&[1u8; 1000], 500, 2, 1),
            body_for(&[1u8; 1000], 400, 3, 1),
            body_for(&[1u8; 1000], 400, 2, 2),
        ];
        for b in other {
            assert_ne!(Manifest::sign(b, &key()).unwrap().id(), id0);
        }
        let other_key = PublisherKey::from_seed([8u8; 32]);
        assert_ne!(Manifest::sign(base, &other_key).unwrap().id(), id0);
    }

    #[test]
    fn forged_or_altered_signature_is_rejected() {
        let m = fixed();
        // Flip one bit of the signature.
        let mut bytes = m.encoded().to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(matches!(
            Manifest::decode(&bytes),
            Err(ManifestError::BadSignature(_))
        ));

        // Alter the body and keep the old signature.
        let mut body = m.body().clone();
        body.meta.title = "Forged".into();
        let mut forged = body.encode_unsigned();
        forged.extend_from_slice(m.signature());
        assert!(matches!(
            Manifest::decode(&forged),
            Err(ManifestError::BadSignature(_))
        ));

        // Sign with another key but claim the original publisher.
        let mallory = PublisherKey::from_seed([9u8; 32]);
        let mut body = m.body().clone();
        let mut claimed = body.encode_unsigned();
        body.publisher = mallory.id();
        let sig = mallory
            .0
            .sign(&ManifestBody::signing_message(&claimed))
            .to_bytes();
        claimed.extend_from_slice(&sig);
        assert!(matches!(
            Manifest::decode(&claimed),
            Err(ManifestError::BadSignature(_))
        ));
    }

    #[test]
    fn inconsistent_bodies_are_rejected() {
        let base = body_for(&[1u8; 1000], 400, 2, 1);
        let cases: Vec<(Box<dyn Fn(&mut ManifestBody)>, &str)> = vec![
            (Box::new(|b| b.meta.title = "  ".into()), "EmptyTitle"),
            (
                Box::new(|b| b.meta.album = Some("x".repeat(MAX_TEXT_FIELD + 1))),
                "FieldTooLong",
            ),
            (Box::new(|b| b.k = 0), "Coding"),
            (Box::new(|b| b.segment_size = 0), "SegmentSize"),
            (
                Box::new(|b| b.segment_size = MAX_SEGMENT_SIZE + 1),
                "SegmentSize",
            ),
            (Box::new(|b| b.total_size = 1300), "SegmentCount"),
            (
                Box::new(|b| {
                    b.segments.pop();
                }),
                "SegmentCount",
            ),
            (Box::new(|b| b.segments[2].len = 201), "SegmentLength"),
            (Box::new(|b| b.segments[0].len = 399), "SegmentLength"),
            (
                Box::new(|b| {
                    b.segments[1].shards.pop();
                }),
                "ShardCount",
            ),
            (Box::new(|b| b.m = 2), "ShardCount"),
        ];
        for (edit, want) in cases {
            let mut b = base.clone();
            edit(&mut b);
            let err = Manifest::sign(b.clone(), &key()).unwrap_err();
            assert!(format!("{err:?}").starts_with(want), "{want}: got {err:?}");
            // The same body, signed by hand to bypass `sign`'s check, is refused on decode.
            let k = key();
            let mut bytes = b.encode_unsigned();
            let sig = k.0.sign(&ManifestBody::signing_message(&bytes)).to_bytes();
            bytes.extend_from_slice(&sig);
            let err = Manifest::decode(&bytes).unwrap_err();
            assert!(
                format!("{err:?}").starts_with(want),
                "{want} on decode: got {err:?}"
            );
        }
    }

    #[test]
    fn malformed_inputs_are_rejected() {
        let m = fixed();
        let bytes = m.encoded();
        assert!(matches!(
            Manifest::decode(&[]),
            Err(ManifestError::Malformed { .. })
        ));
        for cut in [1, 10, bytes.len() / 2, bytes.len() - 1] {
            assert!(
                Manifest::decode(&bytes[..cut]).is_err(),
                "truncated at {cut}"
            );
        }
        let mut v2 = bytes.to_vec();
        v2[0] = 2;
        assert_eq!(
            Manifest::decode(&v2),
            Err(ManifestError::UnsupportedVersion(2))
        );
        // A non-canonical varint for the version (1 written in two bytes).
        let mut long = vec![0x81, 0x00];
        long.extend_from_slice(&bytes[1..]);
        assert!(Manifest::decode(&long).is_err());
        // Extra bytes after the body.
        let mut extra = bytes[..bytes.len() - 64].to_vec();
        extra.push(0);
        extra.extend_from_slice(m.signature());
        assert!(Manifest::decode(&extra).is_err());
        assert!(matches!(
            Manifest::decode(&vec![0u8; MAX_MANIFEST_SIZE + 1]),
            Err(ManifestError::TooLarge { .. })
        ));
        assert!(matches!(
            Manifest::decode_expecting(bytes, SongId::of(b"other")),
            Err(ManifestError::IdMismatch { .. })
        ));
    }

    #[test]
    fn publisher_id_text() {
        let id = key().id();
        assert_eq!(id.to_string().parse::<PublisherId>().unwrap(), id);
        assert_eq!(PublisherKey::from_seed(key().seed()).id(), id);
    }
}
