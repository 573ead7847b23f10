//! BLAKE3 hashes and the typed ids built on them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Length of a [`Hash`] in bytes.
pub const HASH_LEN: usize = 32;

/// A BLAKE3 hash: 32 bytes, shown as 64 lowercase hex digits. Serialized as hex text in
/// human-readable formats (JSON, TOML) and as 32 raw bytes in binary ones (postcard).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hash([u8; HASH_LEN]);

impl Serialize for Hash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
            text.parse().map_err(serde::de::Error::custom)
        } else {
            <[u8; HASH_LEN]>::deserialize(d).map(Self)
        }
    }
}

impl Hash {
    /// Hashes `bytes` with BLAKE3.
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }

    /// Wraps raw hash bytes.
    pub const fn from_bytes(bytes: [u8; HASH_LEN]) -> Self {
        Self(bytes)
    }

    /// The raw 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; HASH_LEN] {
        &self.0
    }

    /// Whether `bytes` hash to this value.
    pub fn matches(&self, bytes: &[u8]) -> bool {
        // blake3::Hash compares in constant time; timing does not matter here, but it is
        // the crate's own equality, so use it.
        blake3::Hash::from_bytes(self.0) == blake3::hash(bytes)
    }
}

/// Hashes bytes that arrive in parts, e.g. while they are read off the network, so the hash
/// is ready when the last part is. Parts of whole KiB let BLAKE3 hash several chunks at once.
#[derive(Debug, Clone, Default)]
pub struct Hasher(blake3::Hasher);

impl Hasher {
    /// A hasher with nothing hashed yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `bytes` to what is hashed.
    pub fn update(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.update(bytes);
        self
    }

    /// The hash of everything added so far.
    pub fn finalize(&self) -> Hash {
        Hash(*self.0.finalize().as_bytes())
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; HASH_LEN * 2];
        // Encoding into a buffer of exactly twice the input length cannot fail.
        hex::encode_to_slice(self.0, &mut buf).map_err(|_| fmt::Error)?;
        f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({self})")
    }
}

/// Why a string is not a valid hash or id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseIdError {
    /// The string does not have exactly 64 characters.
    #[error("expected 64 hex digits, got {len} characters")]
    Length {
        /// The length that was given.
        len: usize,
    },
    /// A character is not a lowercase hex digit.
    #[error("invalid character {ch:?} at position {index}: ids are lowercase hex")]
    Char {
        /// The offending character.
        ch: char,
        /// Its position in the string.
        index: usize,
    },
}

impl FromStr for Hash {
    type Err = ParseIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != HASH_LEN * 2 {
            return Err(ParseIdError::Length {
                len: s.chars().count(),
            });
        }
        if let Some((index, ch)) = s
            .char_indices()
            .find(|(_, c)| !matches!(c, '0'..='9' | 'a'..='f'))
        {
            return Err(ParseIdError::Char { ch, index });
        }
        let mut out = [0u8; HASH_LEN];
        hex::decode_to_slice(s, &mut out).map_err(|_| ParseIdError::Length { len: s.len() })?;
        Ok(Self(out))
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Hash);

        impl $name {
            /// The id of `bytes`: their BLAKE3 hash.
            pub fn of(bytes: &[u8]) -> Self {
                Self(Hash::of(bytes))
            }

            /// Wraps raw hash bytes.
            pub const fn from_bytes(bytes: [u8; HASH_LEN]) -> Self {
                Self(Hash::from_bytes(bytes))
            }

            /// The raw 32 bytes.
            pub const fn as_bytes(&self) -> &[u8; HASH_LEN] {
                self.0.as_bytes()
            }

            /// Whether `bytes` are what this id names.
            pub fn matches(&self, bytes: &[u8]) -> bool {
                self.0.matches(bytes)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0)
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.parse().map(Self)
            }
        }

        impl From<Hash> for $name {
            fn from(h: Hash) -> Self {
                Self(h)
            }
        }
    };
}

id_type!(
    /// Names a segment: `blake3(segment bytes)`.
    SegmentId
);
id_type!(
    /// Names one erasure-coded shard: `blake3(shard bytes)`.
    ShardId
);
id_type!(
    /// Names a song: `blake3(encoded signed manifest)`.
    SongId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_blake3_vector() {
        // BLAKE3 of the empty input, from the BLAKE3 test vectors.
        assert_eq!(
            Hash::of(b"").to_string(),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
    }

    #[test]
    fn display_parse_round_trip() {
        let id = SongId::of(b"a song");
        let text = id.to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(text.parse::<SongId>(), Ok(id));
        assert!(format!("{id:?}").starts_with("SongId("));
    }

    #[test]
    fn parse_errors_are_precise() {
        assert_eq!("abc".parse::<Hash>(), Err(ParseIdError::Length { len: 3 }));
        let upper = Hash::of(b"x").to_string().to_uppercase();
        assert!(matches!(
            upper.parse::<Hash>(),
            Err(ParseIdError::Char { .. })
        ));
        let mut bad = Hash::of(b"x").to_string();
        bad.replace_range(10..11, "g");
        assert_eq!(
            bad.parse::<ShardId>(),
            Err(ParseIdError::Char { ch: 'g', index: 10 })
        );
        // 32 two-byte characters are 64 bytes: rejected for the character, not the length.
        assert_eq!(
            "é".repeat(32).parse::<Hash>(),
            Err(ParseIdError::Char { ch: 'é', index: 0 })
        );
        assert_eq!("é".parse::<Hash>(), Err(ParseIdError::Length { len: 1 }));
    }

    #[test]
    fn serde_is_hex_in_json_and_raw_in_postcard() {
        let id = SongId::of(b"x");
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<SongId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<SongId>("\"zz\"").is_err());
        let bin = postcard::to_stdvec(&id).unwrap();
        assert_eq!(bin, id.as_bytes().to_vec());
        assert_eq!(postcard::from_bytes::<SongId>(&bin).unwrap(), id);
    }

    #[test]
    fn hasher_in_parts_equals_hash_of_whole() {
        let bytes: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for part in [1, 1000, 1024, 65_536, 300_000] {
            let mut h = Hasher::new();
            for chunk in bytes.chunks(part) {
                h.update(chunk);
            }
            assert_eq!(h.finalize(), Hash::of(&bytes), "parts of {part}");
        }
        assert_ne!(Hasher::new().update(b"a").finalize(), Hash::of(b"b"));
    }

    #[test]
    fn matches_checks_bytes() {
        let id = ShardId::of(b"shard");
        assert!(id.matches(b"shard"));
        assert!(!id.matches(b"shard!"));
    }
}
