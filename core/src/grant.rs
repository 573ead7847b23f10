//! Publish grants: the tracker's permission for one node to store exactly these shards.
//!
//! A node stores a shard sent to it only with a grant that:
//!
//! - is signed by the tracker's key ([`TrackerKey`]), which the node learns from its
//!   tracker or its configuration;
//! - names this node (its peer id, as text);
//! - lists the shard's id;
//! - has not expired (`expires`, Unix seconds).
//!
//! The tracker issues grants only for a manifest signed by an authorised publisher, for the
//! shards the layout places on each node. Whoever holds a grant can upload only the bytes
//! those ids name (the node checks every hash), so a grant seen by someone else gives them
//! nothing to store but what the publisher meant.
//!
//! Signed message: [`GRANT_CONTEXT`] `|| postcard(node, expires, shards)`.

use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::hash::ShardId;

/// Most shard ids one grant lists; the tracker splits larger sets into several grants.
pub const MAX_GRANT_SHARDS: usize = 256;
/// Longest node name a grant may carry (a libp2p peer id is 52 characters).
pub const MAX_GRANT_NODE_LEN: usize = 128;
/// Largest encoding of a grant: node, expiry, ids, signature and their length prefixes.
pub const MAX_GRANT_ENCODED: usize = MAX_GRANT_NODE_LEN + 10 + 3 + MAX_GRANT_SHARDS * 32 + 66;
/// Domain separation for grant signatures.
const GRANT_CONTEXT: &[u8] = b"medley publish grant v1\0";
/// Domain separation for other tracker statements (orders, layouts).
const STATEMENT_CONTEXT: &[u8] = b"medley tracker statement v1\0";

/// The tracker's public key (ed25519), shown as 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TrackerId(pub [u8; 32]);

key_id_impls!(TrackerId);

impl TrackerId {
    /// Checks a signature made by [`TrackerKey::sign_statement`] over `message`.
    pub fn verify_statement(&self, message: &[u8], signature: &[u8]) -> Result<(), GrantError> {
        let mut signed = Vec::with_capacity(STATEMENT_CONTEXT.len() + message.len());
        signed.extend_from_slice(STATEMENT_CONTEXT);
        signed.extend_from_slice(message);
        self.verify(&signed, signature)
    }

    fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), GrantError> {
        let signature = <[u8; 64]>::try_from(signature).map_err(|_| GrantError::BadSignature)?;
        let key = VerifyingKey::from_bytes(&self.0).map_err(|_| GrantError::BadSignature)?;
        key.verify_strict(message, &Signature::from_bytes(&signature))
            .map_err(|_| GrantError::BadSignature)
    }
}

/// The tracker's signing key.
#[derive(Clone)]
pub struct TrackerKey(SigningKey);

impl TrackerKey {
    /// The key for a 32-byte secret seed.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self(SigningKey::from_bytes(&seed))
    }

    /// The public half.
    pub fn id(&self) -> TrackerId {
        TrackerId(self.0.verifying_key().to_bytes())
    }

    /// Grants `node` the storing of `shards` until `expires` (Unix seconds).
    pub fn grant(
        &self,
        node: &str,
        shards: Vec<ShardId>,
        expires: u64,
    ) -> Result<Grant, GrantError> {
        let mut grant = Grant {
            node: node.to_string(),
            expires,
            shards,
            signature: GrantSignature([0; 64]),
        };
        grant.check_bounds()?;
        grant.signature = GrantSignature(self.0.sign(&grant.signing_message()).to_bytes());
        Ok(grant)
    }

    /// Signs any other statement of the tracker (a body it sends to nodes); verified by
    /// [`TrackerId::verify_statement`]. Domain-separated from grants.
    pub fn sign_statement(&self, message: &[u8]) -> [u8; 64] {
        let mut signed = Vec::with_capacity(STATEMENT_CONTEXT.len() + message.len());
        signed.extend_from_slice(STATEMENT_CONTEXT);
        signed.extend_from_slice(message);
        self.0.sign(&signed).to_bytes()
    }
}

impl fmt::Debug for TrackerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrackerKey({})", self.id())
    }
}

/// An ed25519 signature: hex in JSON, 64 raw bytes in postcard.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct GrantSignature(pub [u8; 64]);

impl fmt::Debug for GrantSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GrantSignature({})", hex::encode(&self.0[..8]))
    }
}

impl Serialize for GrantSignature {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&hex::encode(self.0))
        } else {
            serde_bytes::Bytes::new(&self.0).serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for GrantSignature {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let bytes = if d.is_human_readable() {
            let text = String::deserialize(d)?;
            hex::decode(text).map_err(D::Error::custom)?
        } else {
            serde_bytes::ByteBuf::deserialize(d)?.into_vec()
        };
        <[u8; 64]>::try_from(bytes.as_slice())
            .map(Self)
            .map_err(|_| D::Error::custom(format!("signature of {} bytes, not 64", bytes.len())))
    }
}

/// The tracker's permission for `node` to store `shards` until `expires`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The node that may store the shards (its peer id as text).
    pub node: String,
    /// Unix seconds after which the grant is void.
    pub expires: u64,
    /// The shards it covers, at most [`MAX_GRANT_SHARDS`].
    pub shards: Vec<ShardId>,
    /// The tracker's signature.
    pub signature: GrantSignature,
}

/// Why a grant does not allow a put.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    /// The signature is not the tracker's.
    #[error("the grant is not signed by this node's tracker")]
    BadSignature,
    /// The grant names another node.
    #[error("the grant is for node {0}, not this one")]
    OtherNode(String),
    /// The grant has expired.
    #[error("the grant expired at {expires} (now {now}, Unix seconds)")]
    Expired {
        /// When it expired.
        expires: u64,
        /// The node's clock.
        now: u64,
    },
    /// The shard is not listed.
    #[error("the grant does not cover shard {0}")]
    NotCovered(ShardId),
    /// Too many ids or too long a node name.
    #[error("the grant is too large: {0}")]
    TooLarge(&'static str),
    /// The node does not know its tracker's key yet.
    #[error("this node does not know its tracker's key yet")]
    NoKey,
}

impl Grant {
    fn signing_message(&self) -> Vec<u8> {
        // Serializing these plain types into a growable Vec cannot fail.
        postcard::to_extend(
            &(&self.node, self.expires, &self.shards),
            GRANT_CONTEXT.to_vec(),
        )
        .unwrap_or_default()
    }

    fn check_bounds(&self) -> Result<(), GrantError> {
        if self.shards.len() > MAX_GRANT_SHARDS {
            return Err(GrantError::TooLarge("too many shard ids"));
        }
        if self.node.len() > MAX_GRANT_NODE_LEN {
            return Err(GrantError::TooLarge("node name too long"));
        }
        Ok(())
    }

    /// Whether this grant lets node `node` store `shard` at Unix time `now`, signed by `key`.
    pub fn allows(
        &self,
        key: &TrackerId,
        node: &str,
        shard: &ShardId,
        now: u64,
    ) -> Result<(), GrantError> {
        self.check_bounds()?;
        key.verify(&self.signing_message(), &self.signature.0)?;
        if self.node != node {
            return Err(GrantError::OtherNode(self.node.clone()));
        }
        if now > self.expires {
            return Err(GrantError::Expired {
                expires: self.expires,
                now,
            });
        }
        if !self.shards.contains(shard) {
            return Err(GrantError::NotCovered(*shard));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> TrackerKey {
        TrackerKey::from_seed([n; 32])
    }

    #[test]
    fn a_grant_allows_exactly_its_node_shards_and_time() {
        let (a, b) = (ShardId::of(b"a"), ShardId::of(b"b"));
        let g = key(1).grant("node-1", vec![a], 100).unwrap();
        let id = key(1).id();
        assert_eq!(g.allows(&id, "node-1", &a, 100), Ok(()));
        assert_eq!(
            g.allows(&id, "node-1", &b, 50),
            Err(GrantError::NotCovered(b))
        );
        assert_eq!(
            g.allows(&id, "node-2", &a, 50),
            Err(GrantError::OtherNode("node-1".into()))
        );
        assert_eq!(
            g.allows(&id, "node-1", &a, 101),
            Err(GrantError::Expired {
                expires: 100,
                now: 101
            })
        );
        assert_eq!(
            g.allows(&key(2).id(), "node-1", &a, 50),
            Err(GrantError::BadSignature)
        );
    }

    #[test]
    fn any_change_voids_the_signature() {
        let (a, b) = (ShardId::of(b"a"), ShardId::of(b"b"));
        let id = key(1).id();
        let g = key(1).grant("n", vec![a], 100).unwrap();
        let mut more = g.clone();
        more.shards.push(b);
        assert_eq!(more.allows(&id, "n", &b, 1), Err(GrantError::BadSignature));
        let mut later = g.clone();
        later.expires = 1000;
        assert_eq!(
            later.allows(&id, "n", &a, 500),
            Err(GrantError::BadSignature)
        );
        let mut other = g.clone();
        other.node = "m".into();
        assert_eq!(other.allows(&id, "m", &a, 1), Err(GrantError::BadSignature));
        let mut flipped = g;
        flipped.signature.0[10] ^= 1;
        assert_eq!(
            flipped.allows(&id, "n", &a, 1),
            Err(GrantError::BadSignature)
        );
    }

    #[test]
    fn grants_round_trip_in_json_and_postcard_and_stay_bounded() {
        let ids: Vec<ShardId> = (0..MAX_GRANT_SHARDS as u32)
            .map(|i| ShardId::of(&i.to_le_bytes()))
            .collect();
        let g = key(3)
            .grant(&"x".repeat(MAX_GRANT_NODE_LEN), ids.clone(), u64::MAX)
            .unwrap();
        let json = serde_json::to_string(&g).unwrap();
        assert_eq!(serde_json::from_str::<Grant>(&json).unwrap(), g);
        let bin = postcard::to_allocvec(&g).unwrap();
        assert!(bin.len() <= MAX_GRANT_ENCODED, "{} bytes", bin.len());
        assert_eq!(postcard::from_bytes::<Grant>(&bin).unwrap(), g);
        let mut too_many = ids;
        too_many.push(ShardId::of(b"one more"));
        assert!(matches!(
            key(3).grant("n", too_many, 1),
            Err(GrantError::TooLarge(_))
        ));
    }

    #[test]
    fn statements_are_not_grants() {
        let k = key(4);
        let sig = k.sign_statement(b"hello");
        assert_eq!(k.id().verify_statement(b"hello", &sig), Ok(()));
        assert_eq!(
            k.id().verify_statement(b"hellO", &sig),
            Err(GrantError::BadSignature)
        );
        assert_eq!(
            k.id().verify_statement(b"hello", &sig[..63]),
            Err(GrantError::BadSignature)
        );
    }
}
