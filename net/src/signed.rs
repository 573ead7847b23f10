//! Requests signed with a peer's identity key, so that the tracker knows that a heartbeat,
//! a leave notice, an announcement or a report comes from the peer it names.
//!
//! Three headers carry the proof: [`PEER_HEADER`] (the signer's peer id, which embeds its
//! ed25519 public key), [`TIME_HEADER`] (Unix milliseconds) and [`SIGNATURE_HEADER`] (hex).
//! The signature covers a domain prefix, the method, the path (with its query), the time and
//! the body. The receiver refuses a time further than [`MAX_SKEW_MS`] from its clock, and
//! remembers the signatures it saw within that window to refuse replays.

use libp2p::PeerId;
use libp2p::identity::{Keypair, PublicKey};

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

/// A `POST` of `body` as JSON to `url`, signed with `key` now.
pub fn post_json<T: serde::Serialize + ?Sized>(
    http: &reqwest::Client,
    url: &str,
    key: &Keypair,
    body: &T,
) -> reqwest::RequestBuilder {
    // Serializing our plain request types cannot fail.
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let path = reqwest::Url::parse(url).map_or_else(
        |_| "/".to_string(),
        |u| match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_string(),
        },
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let sig = sign_request(key, "POST", &path, &bytes, now);
    http.post(url)
        .header(PEER_HEADER, sig.peer)
        .header(TIME_HEADER, sig.time_ms.to_string())
        .header(SIGNATURE_HEADER, sig.signature)
        .header("content-type", "application/json")
        .body(bytes)
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

/// The public key a peer id embeds (ed25519 ids are the identity hash of their key).
fn public_key(peer: &PeerId) -> Option<PublicKey> {
    let mh: &libp2p::multihash::Multihash<64> = peer.as_ref();
    if mh.code() != 0 {
        return None;
    }
    PublicKey::try_decode_protobuf(mh.digest()).ok()
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
        let key = *medley_core::Hash::of(sig.signature.as_bytes()).as_bytes();
        match self.seen.insert(key, sig.time_ms) {
            Some(_) => Err(SignatureError::Replayed),
            None => Ok(()),
        }
    }
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
}
