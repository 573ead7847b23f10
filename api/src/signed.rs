//! The control plane's two signature schemes.
//!
//! **Signed requests**: signed with a peer's identity key, so that the tracker knows that a
//! registration, a heartbeat, a leave notice, an announcement or a report comes from the
//! peer it names.
//!
//! Three headers carry the proof: [`PEER_HEADER`] (the signer's peer id, which embeds its
//! ed25519 public key), [`TIME_HEADER`] (Unix milliseconds) and [`SIGNATURE_HEADER`] (hex).
//! The signature covers a domain prefix, the method, the path (with its query), the time and
//! the body. The receiver refuses a time further than [`MAX_SKEW_MS`] from its clock, and
//! remembers the signatures it saw within that window to refuse replays.
//!
//! **Signed answers**: what nodes act on (layouts, partition listings, hot orders) comes
//! signed by the tracker's key, over the path asked, the time and the body
//! ([`signed_answer`]), in [`ANSWER_TIME_HEADER`] and [`ANSWER_SIGNATURE_HEADER`]; a node
//! checks it with [`verify_answer`] against the key it pinned.

use libp2p_identity::{Keypair, PeerId, PublicKey};
use medley_core::TrackerId;

/// The signer's peer id.
pub const PEER_HEADER: &str = "x-medley-peer";
/// When it signed, Unix milliseconds.
pub const TIME_HEADER: &str = "x-medley-time";
/// The signature, hex.
pub const SIGNATURE_HEADER: &str = "x-medley-signature";
/// Largest difference accepted between the signer's clock and the receiver's.
pub const MAX_SKEW_MS: u64 = 5 * 60 * 1000;
const CONTEXT: &[u8] = b"medley signed request v1\0";

/// The three header values of a signed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestSignature {
    /// The signer's peer id.
    pub peer: String,
    /// Unix milliseconds.
    pub time_ms: u64,
    /// Hex signature.
    pub signature: String,
}

/// Why a signed request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// A header is missing.
    #[error("the request is not signed: header {0} is missing")]
    Missing(&'static str),
    /// The peer id does not parse or does not embed a public key.
    #[error("{0} is not a peer id with an embedded ed25519 key")]
    BadPeer(String),
    /// The time is not a number, or too far from the receiver's clock.
    #[error("the signing time {time_ms} is more than {MAX_SKEW_MS} ms from now ({now_ms})")]
    Stale {
        /// The time signed.
        time_ms: u64,
        /// The receiver's clock.
        now_ms: u64,
    },
    /// The signature does not verify.
    #[error("the signature does not verify for peer {0}")]
    BadSignature(String),
    /// The same signed request was seen before.
    #[error("this signed request was already received (a replay)")]
    Replayed,
}

fn message(method: &str, path: &str, time_ms: u64, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(CONTEXT.len() + method.len() + path.len() + body.len() + 24);
    m.extend_from_slice(CONTEXT);
    for part in [
        method.as_bytes(),
        path.as_bytes(),
        time_ms.to_string().as_bytes(),
    ] {
        m.extend_from_slice(part);
        m.push(b'\n');
    }
    m.extend_from_slice(body);
    m
}

/// Signs a request of `method` to `path` (with its query) carrying `body`, at `time_ms`.
pub fn sign_request(
    key: &Keypair,
    method: &str,
    path: &str,
    body: &[u8],
    time_ms: u64,
) -> RequestSignature {
    let signature = key
        .sign(&message(method, path, time_ms, body))
        .map(hex::encode)
        // Only RSA keys can fail to sign; Medley's identities are ed25519.
        .unwrap_or_default();
    RequestSignature {
        peer: key.public().to_peer_id().to_string(),
        time_ms,
        signature,
    }
}

/// Checks a signed request; returns the signer.
pub fn verify_request(
    sig: &RequestSignature,
    method: &str,
    path: &str,
    body: &[u8],
    now_ms: u64,
) -> Result<PeerId, SignatureError> {
    if sig.time_ms.abs_diff(now_ms) > MAX_SKEW_MS {
        return Err(SignatureError::Stale {
            time_ms: sig.time_ms,
            now_ms,
        });
    }
    let peer: PeerId = sig
        .peer
        .parse()
        .map_err(|_| SignatureError::BadPeer(sig.peer.clone()))?;
    let key = public_key(&peer).ok_or_else(|| SignatureError::BadPeer(sig.peer.clone()))?;
    let bytes =
        hex::decode(&sig.signature).map_err(|_| SignatureError::BadSignature(sig.peer.clone()))?;
    if key.verify(&message(method, path, sig.time_ms, body), &bytes) {
        Ok(peer)
    } else {
        Err(SignatureError::BadSignature(sig.peer.clone()))
    }
}

/// The public key a peer id embeds: an ed25519 peer id is the identity multihash (code 0,
/// then the length, then the digest) of the key's protobuf encoding.
fn public_key(peer: &PeerId) -> Option<PublicKey> {
    let bytes = peer.to_bytes();
    match bytes.as_slice() {
        [0, len, digest @ ..] if usize::from(*len) == digest.len() => {
            PublicKey::try_decode_protobuf(digest).ok()
        }
        _ => None,
    }
}

/// Remembers recent signatures to refuse replays; forgets them once they are too old to
/// pass the time check anyway. Bounded: past `max` entries, the oldest are dropped.
#[derive(Debug)]
pub struct ReplayGuard {
    seen: std::collections::HashMap<[u8; 32], u64>,
    max: usize,
}

impl ReplayGuard {
    /// A guard remembering at most `max` signatures.
    pub fn new(max: usize) -> Self {
        Self {
            seen: std::collections::HashMap::new(),
            max: max.max(1),
        }
    }

    /// Records `sig` (verified) at `now_ms`; an error if it was seen before.
    pub fn check(&mut self, sig: &RequestSignature, now_ms: u64) -> Result<(), SignatureError> {
        if self.seen.len() >= self.max {
            self.seen
                .retain(|_, &mut t| t.abs_diff(now_ms) <= MAX_SKEW_MS);
            if self.seen.len() >= self.max {
                // Still full of fresh entries: drop the older half.
                let mut times: Vec<u64> = self.seen.values().copied().collect();
                times.sort_unstable();
                let cut = times[times.len() / 2];
                self.seen.retain(|_, &mut t| t > cut);
            }
        }
        // Keyed on the signature's bytes, not its text: the same signature written in other
        // letters (upper-case hex) is the same request.
        let bytes = hex::decode(&sig.signature)
            .map_err(|_| SignatureError::BadSignature(sig.peer.clone()))?;
        let key = *medley_core::Hash::of(&bytes).as_bytes();
        match self.seen.insert(key, sig.time_ms) {
            Some(_) => Err(SignatureError::Replayed),
            None => Ok(()),
        }
    }
}

/// Header of a tracker answer that nodes act on: when it was signed (Unix milliseconds).
pub const ANSWER_TIME_HEADER: &str = "x-medley-tracker-time";
/// Header of a tracker answer that nodes act on: the tracker's signature (hex), by
/// [`medley_core::TrackerKey::sign_statement`] over [`signed_answer`].
pub const ANSWER_SIGNATURE_HEADER: &str = "x-medley-tracker-signature";
/// Largest difference accepted between a signed answer's time and the node's clock.
pub const MAX_ANSWER_AGE_MS: u64 = 5 * 60 * 1000;

/// What the tracker signs of an answer: the path asked (with its query), the time and the
/// body, so an answer cannot be passed off for another request or replayed much later.
pub fn signed_answer(path: &str, time_ms: u64, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(path.len() + body.len() + 24);
    m.extend_from_slice(path.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(time_ms.to_string().as_bytes());
    m.push(b'\n');
    m.extend_from_slice(body);
    m
}

/// Why a signed answer is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    /// The answer carries no signature headers.
    #[error("the answer is not signed")]
    Unsigned,
    /// The signing time is not a number, or too far from the node's clock.
    #[error("the answer was signed at {time}, now is {now_ms}")]
    Stale {
        /// The time header as sent.
        time: String,
        /// The node's clock.
        now_ms: u64,
    },
    /// The signature is not hex or does not verify under the known key.
    #[error("the answer's signature does not verify under the tracker key {0}")]
    BadSignature(TrackerId),
}

/// Checks an answer to `path` carrying `time` and `signature` (the two header values) and
/// `body` against the tracker key `key`, at `now_ms`.
pub fn verify_answer(
    key: &TrackerId,
    path: &str,
    time: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now_ms: u64,
) -> Result<(), AnswerError> {
    let (Some(time), Some(signature)) = (time, signature) else {
        return Err(AnswerError::Unsigned);
    };
    let stale = || AnswerError::Stale {
        time: time.chars().take(32).collect(),
        now_ms,
    };
    let t: u64 = time.parse().map_err(|_| stale())?;
    if t.abs_diff(now_ms) > MAX_ANSWER_AGE_MS {
        return Err(stale());
    }
    let signature = hex::decode(signature).map_err(|_| AnswerError::BadSignature(*key))?;
    key.verify_statement(&signed_answer(path, t, body), &signature)
        .map_err(|_| AnswerError::BadSignature(*key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_request_verifies_only_unchanged() {
        let key = Keypair::generate_ed25519();
        let s = sign_request(&key, "POST", "/v1/x", b"{}", 1_000_000);
        let me = key.public().to_peer_id();
        assert_eq!(
            verify_request(&s, "POST", "/v1/x", b"{}", 1_000_000),
            Ok(me)
        );
        for (m, p, b) in [
            ("GET", "/v1/x", &b"{}"[..]),
            ("POST", "/v1/y", b"{}"),
            ("POST", "/v1/x", b"{ }"),
        ] {
            assert!(matches!(
                verify_request(&s, m, p, b, 1_000_000),
                Err(SignatureError::BadSignature(_))
            ));
        }
        let other = Keypair::generate_ed25519();
        let mut claimed = s.clone();
        claimed.peer = other.public().to_peer_id().to_string();
        assert!(matches!(
            verify_request(&claimed, "POST", "/v1/x", b"{}", 1_000_000),
            Err(SignatureError::BadSignature(_))
        ));
        let mut later = s.clone();
        later.time_ms += 1;
        assert!(verify_request(&later, "POST", "/v1/x", b"{}", 1_000_000).is_err());
        assert!(matches!(
            verify_request(&s, "POST", "/v1/x", b"{}", 1_000_000 + MAX_SKEW_MS + 1),
            Err(SignatureError::Stale { .. })
        ));
        let mut garbage = s;
        garbage.peer = "node-3".into();
        assert!(matches!(
            verify_request(&garbage, "POST", "/v1/x", b"{}", 1_000_000),
            Err(SignatureError::BadPeer(_))
        ));
    }

    #[test]
    fn replays_are_refused_and_the_guard_stays_bounded() {
        let key = Keypair::generate_ed25519();
        let mut guard = ReplayGuard::new(100);
        let s = sign_request(&key, "POST", "/v1/x", b"1", 5);
        assert_eq!(guard.check(&s, 5), Ok(()));
        assert_eq!(guard.check(&s, 6), Err(SignatureError::Replayed));
        for i in 0..1000u64 {
            let s = sign_request(&key, "POST", "/v1/x", &i.to_le_bytes(), 10 + i);
            assert_eq!(guard.check(&s, 10 + i), Ok(()));
        }
        assert!(guard.seen.len() <= 100);
    }

    #[test]
    fn a_replay_in_other_letters_is_still_a_replay() {
        let key = Keypair::generate_ed25519();
        let mut guard = ReplayGuard::new(100);
        let s = sign_request(&key, "POST", "/v1/x", b"1", 5);
        let mut upper = s.clone();
        upper.signature = s.signature.to_uppercase();
        // The upper-case signature verifies: hex is read case-insensitively.
        assert_eq!(
            verify_request(&upper, "POST", "/v1/x", b"1", 5),
            Ok(key.public().to_peer_id())
        );
        assert_eq!(guard.check(&s, 5), Ok(()));
        assert_eq!(guard.check(&upper, 5), Err(SignatureError::Replayed));
    }

    #[test]
    fn answers_verify_only_signed_recent_and_unchanged() {
        let tracker = medley_core::TrackerKey::from_seed([5; 32]);
        let id = tracker.id();
        let now = 10_000_000;
        let sig = hex::encode(tracker.sign_statement(&signed_answer("/v1/layout", now, b"{}")));
        let t = now.to_string();
        let check = |path: &str, time: Option<&str>, sig: Option<&str>, body: &[u8], at: u64| {
            verify_answer(&id, path, time, sig, body, at)
        };
        assert_eq!(
            check("/v1/layout", Some(&t), Some(&sig), b"{}", now),
            Ok(())
        );
        assert_eq!(
            check("/v1/layout", None, None, b"{}", now),
            Err(AnswerError::Unsigned)
        );
        assert!(matches!(
            check(
                "/v1/layout",
                Some(&t),
                Some(&sig),
                b"{}",
                now + MAX_ANSWER_AGE_MS + 1
            ),
            Err(AnswerError::Stale { .. })
        ));
        for (path, body) in [("/v1/layout?version=1", &b"{}"[..]), ("/v1/layout", b"[]")] {
            assert_eq!(
                check(path, Some(&t), Some(&sig), body, now),
                Err(AnswerError::BadSignature(id))
            );
        }
        let other = medley_core::TrackerKey::from_seed([6; 32]).id();
        assert_eq!(
            verify_answer(&other, "/v1/layout", Some(&t), Some(&sig), b"{}", now),
            Err(AnswerError::BadSignature(other))
        );
        assert!(check("/v1/layout", Some("soon"), Some(&sig), b"{}", now).is_err());
        assert!(check("/v1/layout", Some(&t), Some("zz"), b"{}", now).is_err());
    }
}
