//! Join tokens: the tracker operator's consent for one storage node to join.
//!
//! `medley-tracker nodes invite` makes an [`Invite`] (a random id, optionally the region the
//! node must register in and the most capacity it may declare, and an expiry), signed by the
//! tracker's key, and prints it as a token; `medley-node init --join TOKEN` keeps the token
//! and the node shows it when it registers. The tracker admits the node when the signature
//! is its own, the invite has not expired and no other node used it.
//!
//! Token: `medley-join-` then the hex of the invite's postcard encoding followed by the
//! 64-byte signature over a context string and that encoding (a signature over an invite
//! can never pass for one over any other statement of the tracker).

use serde::{Deserialize, Serialize};

use crate::grant::{GrantError, TrackerId, TrackerKey};

/// What every token starts with.
pub const INVITE_PREFIX: &str = "medley-join-";
/// Longest token accepted.
pub const MAX_INVITE_TOKEN: usize = 1024;
/// Context the signature is made over, before the encoding.
const INVITE_CONTEXT: &[u8] = b"medley node invite v1\0";

/// One node's permission to join.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invite {
    /// Random; a used invite cannot admit a second node.
    pub id: [u8; 16],
    /// The region the node must register in; `None`: any configured region.
    pub region: Option<String>,
    /// The most capacity (bytes) the node may count with; `None`: the tracker's limit.
    pub capacity: Option<u64>,
    /// Unix seconds after which the token admits nobody.
    pub expires: u64,
}

/// Why a token admits nobody.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InviteError {
    /// Not a token at all.
    #[error("not a join token ({0})")]
    Malformed(&'static str),
    /// Signed by another key (another tracker's token) or altered.
    #[error("the join token was not signed by this tracker")]
    BadSignature,
    /// Past its expiry.
    #[error("the join token expired at {expires} (Unix seconds)")]
    Expired {
        /// When it expired.
        expires: u64,
    },
}

impl Invite {
    /// The invite's id as hex.
    pub fn id_hex(&self) -> String {
        hex::encode(self.id)
    }

    /// The token for this invite, signed by `key`.
    pub fn sign(&self, key: &TrackerKey) -> String {
        let body = postcard::to_stdvec(self).unwrap_or_default();
        let signature = key.sign_statement(&signed_message(&body));
        let mut raw = body;
        raw.extend_from_slice(&signature);
        format!("{INVITE_PREFIX}{}", hex::encode(raw))
    }

    /// The invite a token carries, unchecked: for showing it (`medley-node init` reads the
    /// region from it). Only [`Invite::open`] admits.
    pub fn peek(token: &str) -> Result<Self, InviteError> {
        Ok(Self::split(token)?.0)
    }

    /// The invite of `token` if `tracker` signed it and it holds at `now` (Unix seconds).
    pub fn open(token: &str, tracker: &TrackerId, now: u64) -> Result<Self, InviteError> {
        let (invite, body, signature) = Self::split(token)?;
        tracker
            .verify_statement(&signed_message(&body), &signature)
            .map_err(|_: GrantError| InviteError::BadSignature)?;
        if now > invite.expires {
            return Err(InviteError::Expired {
                expires: invite.expires,
            });
        }
        Ok(invite)
    }

    fn split(token: &str) -> Result<(Self, Vec<u8>, Vec<u8>), InviteError> {
        let token = token.trim();
        if token.len() > MAX_INVITE_TOKEN {
            return Err(InviteError::Malformed("too long"));
        }
        let hex_part = token
            .strip_prefix(INVITE_PREFIX)
            .ok_or(InviteError::Malformed(
                "it does not start with medley-join-",
            ))?;
        let mut raw = hex::decode(hex_part).map_err(|_| InviteError::Malformed("not hex"))?;
        if raw.len() <= 64 {
            return Err(InviteError::Malformed("too short"));
        }
        let signature = raw.split_off(raw.len() - 64);
        let invite: Self =
            postcard::from_bytes(&raw).map_err(|_| InviteError::Malformed("no invite in it"))?;
        if postcard::to_stdvec(&invite).ok().as_deref() != Some(&raw[..]) {
            return Err(InviteError::Malformed("not in canonical form"));
        }
        Ok((invite, raw, signature))
    }
}

fn signed_message(body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(INVITE_CONTEXT.len() + body.len());
    m.extend_from_slice(INVITE_CONTEXT);
    m.extend_from_slice(body);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invite() -> Invite {
        Invite {
            id: [7; 16],
            region: Some("eu-west".into()),
            capacity: Some(1 << 40),
            expires: 2_000_000_000,
        }
    }

    #[test]
    fn a_token_opens_only_with_its_trackers_key_until_it_expires() {
        let key = TrackerKey::from_seed([1; 32]);
        let other = TrackerKey::from_seed([2; 32]);
        let token = invite().sign(&key);
        assert!(token.starts_with(INVITE_PREFIX));
        assert_eq!(Invite::open(&token, &key.id(), 1_000).unwrap(), invite());
        assert_eq!(Invite::peek(&token).unwrap(), invite());
        assert_eq!(
            Invite::open(&token, &other.id(), 1_000),
            Err(InviteError::BadSignature)
        );
        assert!(matches!(
            Invite::open(&token, &key.id(), 2_000_000_001),
            Err(InviteError::Expired { .. })
        ));
        // Any byte changed: refused.
        let hex_start = INVITE_PREFIX.len();
        for i in [hex_start, hex_start + 10, token.len() - 1] {
            let mut bad = token.clone().into_bytes();
            bad[i] = if bad[i] == b'0' { b'1' } else { b'0' };
            let bad = String::from_utf8(bad).unwrap();
            assert!(Invite::open(&bad, &key.id(), 1_000).is_err(), "byte {i}");
        }
        // A statement signature over the same bytes is not an invite signature.
        let body = postcard::to_stdvec(&invite()).unwrap();
        let mut forged = body.clone();
        forged.extend_from_slice(&key.sign_statement(&body));
        let forged = format!("{INVITE_PREFIX}{}", hex::encode(forged));
        assert_eq!(
            Invite::open(&forged, &key.id(), 1_000),
            Err(InviteError::BadSignature)
        );
    }

    #[test]
    fn junk_is_not_a_token() {
        let key = TrackerKey::from_seed([1; 32]);
        for junk in [
            "",
            "medley-join-",
            "medley-join-zz",
            "hello",
            &format!("{INVITE_PREFIX}{}", "00".repeat(70)),
            &format!("{INVITE_PREFIX}{}", "ab".repeat(600)),
        ] {
            assert!(
                matches!(
                    Invite::open(junk, &key.id(), 0),
                    Err(InviteError::Malformed(_))
                ),
                "{junk:?}"
            );
        }
    }
}
