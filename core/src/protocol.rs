//! The data-plane protocol between nodes and clients.
//!
//! **Participants.** Storage nodes, which hold erasure-coded shards (durable tier) and whole
//! segments (hot tier); clients, which fetch shards and segments to play and, when they
//! publish, upload shards. Both are libp2p peers speaking [`PROTOCOL_NAME`] over QUIC.
//!
//! **Goals.** Move content-addressed blobs with one round trip each: ask for an id, get the
//! bytes or a numeric error. Every blob is named by its BLAKE3 hash, so the receiver checks
//! every byte it gets; a peer that lies is found out at once.
//!
//! **Non-goals.** Discovery, layout, authorisation of publishers and popularity: those are the
//! tracker's (HTTP control plane). Streaming parts of a blob: blobs are at most a segment.
//!
//! **Message flow.** Request-response pairs, one after another on a QUIC stream:
//!
//! ```text
//! client                                   node
//!   | -- GetShard{id} ----------------------> |   Shard{data} | Error{NOT_FOUND}
//!   | -- PutShard{id, grant, data} ---------> |   Stored | Error{FORBIDDEN | BAD_HASH | FULL | TOO_LARGE}
//!   | -- GetSegment{id} --------------------> |   Segment{data} | Error{NOT_FOUND}
//!   | -- Has{ids} --------------------------> |   Has{present}
//!   | -- Audit{id, start, len} -------------> |   Proof{slice} | Error{NOT_FOUND}
//! ```
//!
//! `Audit` asks for proof that the node holds a shard: the challenged range with the BLAKE3
//! tree nodes tying it to the shard's id ([`crate::audit`]), checked by the asker against the
//! id. `Has` is only the node's word; an audit is proof.
//!
//! A `PutShard` carries the tracker's [`Grant`] for this node and shard; without a valid one
//! the node answers `Error{FORBIDDEN}` and stores nothing.
//!
//! Any request may be answered `Error{BUSY}` when the node is at its concurrency limit, and
//! `Error{MALFORMED}` or `Error{TOO_LARGE}` when it cannot be decoded. Errors travel as a
//! numeric [`ErrorCode`] and a short human-readable message, never as serialized Rust errors.
//!
//! **Streams.** Under [`PROTOCOL_NAME`] a stream carries any number of exchanges, one at a
//! time: the requester sends a request, reads its response, and may send the next request on
//! the same stream, so a request on a stream already open costs no stream opening or protocol
//! negotiation. The requester ends a stream by closing its sending side; a node closes a
//! stream that has carried no request for a while, or after answering a request it could not
//! decode (the stream may then be out of step). A requester whose request on a kept stream
//! finds it closed asks again on a new stream: every request is safe to repeat (blobs are
//! content-addressed, a repeated put stores nothing twice). Under [`ONE_SHOT_PROTOCOL_NAME`]
//! a stream carries one exchange and the node closes it after its answer, for requesters
//! that open a stream per request, such as libp2p's stock request-response behaviour.
//!
//! **Encoding.** Each message is a 4-byte big-endian length, then that many bytes: the
//! postcard encoding of [`Request`] / [`Response`], at most [`MAX_MESSAGE_SIZE`] bytes. A new,
//! incompatible encoding gets a new protocol name, negotiated by multistream-select.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::erasure::SHARD_ALIGN;
use crate::grant::{Grant, MAX_GRANT_ENCODED};
use crate::hash::{SegmentId, ShardId};
use crate::segment::MAX_SEGMENT_SIZE;

/// The protocol name negotiated on each stream: exchanges one after another.
pub const PROTOCOL_NAME: &str = "/medley/data/3";
/// The same messages, one exchange per stream. Served, never asked for.
pub const ONE_SHOT_PROTOCOL_NAME: &str = "/medley/data/2";
/// Largest shard or segment a message may carry: a whole segment of the largest size (a
/// `1+m` code's shard is as long as its segment), plus alignment padding.
pub const MAX_BLOB_SIZE: usize = MAX_SEGMENT_SIZE as usize + SHARD_ALIGN;
/// Largest encoded request or response: a maximal blob, its grant and framing.
pub const MAX_MESSAGE_SIZE: usize = MAX_BLOB_SIZE + MAX_GRANT_ENCODED + 1024;
/// Largest number of ids in one `Has` request.
pub const MAX_HAS_IDS: usize = 1024;
/// Largest error message carried in an `Error` response (longer ones are cut).
pub const MAX_ERROR_MESSAGE: usize = 512;

/// A numeric error code. Unknown codes from newer peers are kept as they are.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ErrorCode(pub u16);

impl ErrorCode {
    /// The id is not held here.
    pub const NOT_FOUND: Self = Self(1);
    /// The request or a blob in it exceeds a size limit.
    pub const TOO_LARGE: Self = Self(2);
    /// The bytes sent do not hash to the id they were sent under.
    pub const BAD_HASH: Self = Self(3);
    /// The peer is at its concurrency limit; retry later or elsewhere.
    pub const BUSY: Self = Self(4);
    /// The node's capacity is used up.
    pub const FULL: Self = Self(5);
    /// The request could not be decoded.
    pub const MALFORMED: Self = Self(6);
    /// The node failed internally (for example its store reported corruption).
    pub const INTERNAL: Self = Self(7);
    /// The request is valid but not served by this peer.
    pub const UNSUPPORTED: Self = Self(8);
    /// The request is not allowed: a put without a valid grant for this node and shard.
    pub const FORBIDDEN: Self = Self(9);

    /// A short name for the code.
    pub fn name(self) -> &'static str {
        match self {
            Self::NOT_FOUND => "not found",
            Self::TOO_LARGE => "too large",
            Self::BAD_HASH => "bad hash",
            Self::BUSY => "busy",
            Self::FULL => "full",
            Self::MALFORMED => "malformed",
            Self::INTERNAL => "internal error",
            Self::UNSUPPORTED => "unsupported",
            Self::FORBIDDEN => "forbidden",
            _ => "unknown error",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.0)
    }
}

impl fmt::Debug for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ErrorCode({}, {})", self.0, self.name())
    }
}

/// A request from a client or node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Fetch a durable shard.
    GetShard {
        /// The shard wanted.
        id: ShardId,
    },
    /// Store a durable shard.
    PutShard {
        /// The shard's id; the node checks `blake3(data) == id`.
        id: ShardId,
        /// The tracker's permission for this node to store `id`.
        grant: Box<Grant>,
        /// The shard's bytes.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Fetch a whole segment from the hot tier.
    GetSegment {
        /// The segment wanted.
        id: SegmentId,
    },
    /// Ask which of these shards the node holds.
    Has {
        /// At most [`MAX_HAS_IDS`] ids.
        ids: Vec<ShardId>,
    },
    /// Prove holding a durable shard: answer bytes `start..start + len` of it with their
    /// proof ([`crate::audit`]).
    Audit {
        /// The shard challenged.
        id: ShardId,
        /// First byte of the range.
        start: u32,
        /// Bytes in the range, at most [`crate::audit::MAX_AUDIT_RANGE`].
        len: u32,
    },
}

/// A response to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The shard's bytes (answer to `GetShard`).
    Shard {
        /// Bytes; the receiver checks them against the id it asked for.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// The segment's bytes (answer to `GetSegment`).
    Segment {
        /// Bytes; the receiver checks them against the id it asked for.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// The shard is durably stored (answer to `PutShard`).
    Stored,
    /// One flag per id asked, in order (answer to `Has`).
    Has {
        /// Whether each id is held.
        present: Vec<bool>,
    },
    /// The request failed.
    Error {
        /// What went wrong.
        code: ErrorCode,
        /// Detail for logs, at most [`MAX_ERROR_MESSAGE`] bytes.
        message: String,
    },
    /// The challenged range with its proof (answer to `Audit`).
    Proof {
        /// A bao slice; the asker checks it against the shard's id.
        #[serde(with = "serde_bytes")]
        slice: Vec<u8>,
    },
}

impl Response {
    /// An error response; `message` is cut to [`MAX_ERROR_MESSAGE`] bytes.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        let mut message = message.into();
        if message.len() > MAX_ERROR_MESSAGE {
            let mut cut = MAX_ERROR_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        Self::Error { code, message }
    }
}

/// Why a message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The message is larger than [`MAX_MESSAGE_SIZE`].
    #[error("message of {size} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Size seen.
        size: usize,
        /// Limit.
        max: usize,
    },
    /// The bytes do not decode to a message.
    #[error("malformed message: {reason}")]
    Malformed {
        /// What the decoder reported.
        reason: String,
    },
    /// A `Has` request lists too many ids.
    #[error("{got} ids in one request, more than {MAX_HAS_IDS}")]
    TooManyIds {
        /// Ids listed.
        got: usize,
    },
}

impl WireError {
    /// The error code a peer answers with when it receives a message that fails like this.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::TooLarge { .. } | Self::TooManyIds { .. } => ErrorCode::TOO_LARGE,
            Self::Malformed { .. } => ErrorCode::MALFORMED,
        }
    }
}

fn encode<T: Serialize>(msg: &T, hint: usize) -> Vec<u8> {
    // Serializing these plain types into a growable Vec cannot fail.
    postcard::to_extend(msg, Vec::with_capacity(hint)).unwrap_or_default()
}

fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, WireError> {
    if bytes.len() > MAX_MESSAGE_SIZE {
        return Err(WireError::TooLarge {
            size: bytes.len(),
            max: MAX_MESSAGE_SIZE,
        });
    }
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((msg, [])) => Ok(msg),
        Ok((_, rest)) => Err(WireError::Malformed {
            reason: format!("{} trailing bytes", rest.len()),
        }),
        Err(e) => Err(WireError::Malformed {
            reason: e.to_string(),
        }),
    }
}

impl Request {
    /// The wire encoding.
    pub fn encode(&self) -> Vec<u8> {
        let hint = match self {
            Self::PutShard { data, grant, .. } => {
                data.len() + 64 + grant.node.len() + grant.shards.len() * 32 + 80
            }
            _ => 64,
        };
        encode(self, hint)
    }

    /// Decodes and bounds-checks a request.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let req: Self = decode(bytes)?;
        if let Self::Has { ids } = &req
            && ids.len() > MAX_HAS_IDS
        {
            return Err(WireError::TooManyIds { got: ids.len() });
        }
        if let Self::Audit { len, .. } = &req
            && (*len == 0 || *len > crate::audit::MAX_AUDIT_RANGE)
        {
            return Err(WireError::Malformed {
                reason: format!("an audit of {len} bytes"),
            });
        }
        Ok(req)
    }

    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::GetShard { .. } => "get_shard",
            Self::PutShard { .. } => "put_shard",
            Self::GetSegment { .. } => "get_segment",
            Self::Has { .. } => "has",
            Self::Audit { .. } => "audit",
        }
    }
}

/// Variant index of [`Response::Shard`] on the wire.
pub const TAG_SHARD: u8 = 0;
/// Variant index of [`Response::Segment`] on the wire.
pub const TAG_SEGMENT: u8 = 1;
/// Longest varint of a `u32`/`usize` length postcard writes for blobs of our sizes.
pub const MAX_VARINT_LEN: usize = 5;

/// Appends `n` as a postcard (LEB128) varint.
fn push_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Decodes a minimal LEB128 varint of at most [`MAX_VARINT_LEN`] bytes, one byte at a time.
/// Feed bytes until it returns `Ok(Some(value))`.
#[derive(Debug, Default)]
pub struct VarintReader {
    value: u64,
    read: usize,
}

impl VarintReader {
    /// Feeds one byte. `Ok(None)`: more bytes needed.
    pub fn push(&mut self, byte: u8) -> Result<Option<u64>, WireError> {
        if self.read == MAX_VARINT_LEN {
            return Err(WireError::Malformed {
                reason: "length varint too long".into(),
            });
        }
        self.value |= u64::from(byte & 0x7f) << (7 * self.read);
        self.read += 1;
        if byte & 0x80 != 0 {
            return Ok(None);
        }
        if byte == 0 && self.read > 1 {
            return Err(WireError::Malformed {
                reason: "length varint is not minimal".into(),
            });
        }
        Ok(Some(self.value))
    }

    /// Bytes consumed so far.
    pub fn len(&self) -> usize {
        self.read
    }

    /// Whether no byte has been fed.
    pub fn is_empty(&self) -> bool {
        self.read == 0
    }
}

impl Response {
    /// The encoding split so a writer can send a blob without copying it: `header ++ payload`
    /// is exactly [`Response::encode`]. Only `Shard` and `Segment` have a payload.
    pub fn encode_parts(&self) -> (Vec<u8>, Option<&[u8]>) {
        match self {
            Self::Shard { data } | Self::Segment { data } => {
                let tag = if matches!(self, Self::Shard { .. }) {
                    TAG_SHARD
                } else {
                    TAG_SEGMENT
                };
                let mut header = Vec::with_capacity(1 + MAX_VARINT_LEN);
                header.push(tag);
                push_varint(&mut header, data.len() as u64);
                (header, Some(data.as_slice()))
            }
            other => (other.encode(), None),
        }
    }

    /// A blob response from its tag and bytes, as read by a streaming decoder.
    pub fn from_blob(tag: u8, data: Vec<u8>) -> Option<Self> {
        match tag {
            TAG_SHARD => Some(Self::Shard { data }),
            TAG_SEGMENT => Some(Self::Segment { data }),
            _ => None,
        }
    }

    /// The wire encoding.
    pub fn encode(&self) -> Vec<u8> {
        let hint = match self {
            Self::Shard { data } | Self::Segment { data } => data.len() + 16,
            _ => 64,
        };
        encode(self, hint)
    }

    /// Decodes and bounds-checks a response.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        decode(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn snapshot(bytes: &[u8]) -> String {
        hex::encode(bytes)
    }

    fn test_grant(id: ShardId) -> Grant {
        crate::TrackerKey::from_seed([7; 32])
            .grant("n", vec![id], 1)
            .unwrap()
    }

    #[test]
    fn wire_snapshots() {
        let id = ShardId::from_bytes([0xab; 32]);
        let seg = SegmentId::from_bytes([0x01; 32]);
        let ab = "ab".repeat(32);
        let one = "01".repeat(32);
        assert_eq!(
            snapshot(&Request::GetShard { id }.encode()),
            format!("00{ab}")
        );
        let grant = test_grant(id);
        let grant_hex = snapshot(&postcard::to_allocvec(&grant).unwrap());
        // node "n", expires 1, one id, then the 64-byte signature.
        assert!(grant_hex.starts_with(&format!("016e0101{ab}40")));
        assert_eq!(grant_hex.len(), 2 * (2 + 1 + 1 + 32 + 1 + 64));
        assert_eq!(
            snapshot(
                &Request::PutShard {
                    id,
                    grant: Box::new(grant),
                    data: vec![1, 2, 3]
                }
                .encode()
            ),
            format!("01{ab}{grant_hex}03010203")
        );
        assert_eq!(
            snapshot(&Request::GetSegment { id: seg }.encode()),
            format!("02{one}")
        );
        assert_eq!(
            snapshot(&Request::Has { ids: vec![id] }.encode()),
            format!("0301{ab}")
        );
        assert_eq!(
            snapshot(&Response::Shard { data: vec![9] }.encode()),
            "000109"
        );
        assert_eq!(
            snapshot(&Response::Segment { data: vec![] }.encode()),
            "0100"
        );
        assert_eq!(snapshot(&Response::Stored.encode()), "02");
        assert_eq!(
            snapshot(
                &Response::Has {
                    present: vec![true, false]
                }
                .encode()
            ),
            "03020100"
        );
        assert_eq!(
            snapshot(&Response::error(ErrorCode::BUSY, "hi").encode()),
            "0404026869"
        );
        // A code above 127 takes two varint bytes.
        assert_eq!(
            snapshot(&Response::error(ErrorCode(300), "").encode()),
            "04ac0200"
        );
    }

    #[test]
    fn decode_rejects_bad_input() {
        assert!(matches!(
            Request::decode(&[]),
            Err(WireError::Malformed { .. })
        ));
        assert!(matches!(
            Request::decode(&[9]),
            Err(WireError::Malformed { .. })
        ));
        let mut trailing = Request::GetShard {
            id: ShardId::of(b"x"),
        }
        .encode();
        trailing.push(0);
        assert!(matches!(
            Request::decode(&trailing),
            Err(WireError::Malformed { .. })
        ));
        let huge = vec![0u8; MAX_MESSAGE_SIZE + 1];
        assert_eq!(
            Request::decode(&huge).unwrap_err().code(),
            ErrorCode::TOO_LARGE
        );
        let many = Request::Has {
            ids: vec![ShardId::of(b"x"); MAX_HAS_IDS + 1],
        }
        .encode();
        assert_eq!(
            Request::decode(&many),
            Err(WireError::TooManyIds {
                got: MAX_HAS_IDS + 1
            })
        );
        // A length prefix that claims more bytes than there are.
        let mut short = Request::PutShard {
            id: ShardId::of(b"x"),
            grant: Box::new(test_grant(ShardId::of(b"x"))),
            data: vec![0; 100],
        }
        .encode();
        short.truncate(200);
        assert!(Request::decode(&short).is_err());
    }

    #[test]
    fn split_encoding_equals_postcard() {
        for len in [
            0usize,
            1,
            127,
            128,
            16_383,
            16_384,
            65_536,
            262_144,
            MAX_BLOB_SIZE,
        ] {
            for r in [
                Response::Shard { data: vec![7; len] },
                Response::Segment { data: vec![9; len] },
            ] {
                let (mut header, payload) = r.encode_parts();
                header.extend_from_slice(payload.unwrap());
                assert_eq!(header, r.encode(), "len {len}");
                // And the streaming varint reader agrees with postcard on the length.
                let mut v = VarintReader::default();
                let mut got = None;
                for &b in &r.encode()[1..] {
                    if let Some(n) = v.push(b).unwrap() {
                        got = Some(n);
                        break;
                    }
                }
                assert_eq!(got, Some(len as u64));
            }
        }
        let (h, p) = Response::Stored.encode_parts();
        assert_eq!((h, p), (Response::Stored.encode(), None));
    }

    #[test]
    fn varint_reader_rejects_overlong_and_non_minimal() {
        let mut v = VarintReader::default();
        assert_eq!(v.push(0x80).unwrap(), None);
        assert!(v.push(0x00).is_err(), "0 written in two bytes");
        let mut v = VarintReader::default();
        for _ in 0..MAX_VARINT_LEN {
            let _ = v.push(0xff);
        }
        assert!(v.push(0x01).is_err());
    }

    #[test]
    fn unknown_error_codes_survive() {
        let r = Response::decode(&Response::error(ErrorCode(999), "new").encode()).unwrap();
        assert_eq!(
            r,
            Response::Error {
                code: ErrorCode(999),
                message: "new".into()
            }
        );
        assert_eq!(ErrorCode(999).name(), "unknown error");
    }

    #[test]
    fn long_error_messages_are_cut_on_a_char_boundary() {
        let Response::Error { message, .. } = Response::error(ErrorCode::INTERNAL, "é".repeat(400))
        else {
            panic!("not an error");
        };
        assert!(message.len() <= MAX_ERROR_MESSAGE);
        assert!(message.chars().all(|c| c == 'é'));
    }

    proptest! {
        #[test]
        fn round_trips(data in proptest::collection::vec(any::<u8>(), 0..2000), n in 0usize..20, code in any::<u16>(), msg in ".{0,40}") {
            let id = ShardId::of(&data);
            let reqs = [
                Request::GetShard { id },
                Request::PutShard { id, grant: Box::new(test_grant(id)), data: data.clone() },
                Request::GetSegment { id: SegmentId::of(&data) },
                Request::Has { ids: vec![id; n] },
            ];
            for r in reqs {
                prop_assert_eq!(Request::decode(&r.encode()).unwrap(), r);
            }
            let resps = [
                Response::Shard { data: data.clone() },
                Response::Segment { data },
                Response::Stored,
                Response::Has { present: (0..n).map(|i| i % 3 == 0).collect() },
                Response::error(ErrorCode(code), msg),
            ];
            for r in resps {
                prop_assert_eq!(Response::decode(&r.encode()).unwrap(), r);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Request::decode(&bytes);
            let _ = Response::decode(&bytes);
        }
    }
}
