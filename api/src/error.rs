//! Refusals: every error answer is `{"error": {"code": "...", "message": "..."}}` with a 4xx
//! or 5xx status. Codes are stable; messages are for people.

use serde::{Deserialize, Serialize};

/// The stable code of a refusal. Codes a newer tracker sends that this build does not know
/// are kept as [`ErrorCode::Other`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The manifest does not decode canonically or is inconsistent (400).
    InvalidManifest,
    /// The manifest's signature or publisher key is invalid (400).
    BadSignature,
    /// The manifest is signed by a key not authorised on this tracker (403).
    UnknownPublisher,
    /// The manifest's k+m differs from the network's (422).
    WrongCoding,
    /// The body, or the manifest in it, exceeds a size limit (413).
    TooLarge,
    /// The body could not be read (400).
    BadBody,
    /// The JSON body does not parse or lacks a field; or it has no JSON content type (400,
    /// 415).
    MalformedJson,
    /// An id is not 64 lowercase hex digits (400).
    BadId,
    /// Query parameters are invalid (400).
    BadQuery,
    /// A registration or announcement field is empty, too long or too many (400).
    BadRegistration,
    /// A node's region is not one of the tracker's `regions` (400).
    BadRegion,
    /// A join token is not this tracker's, expired, used by another node, or names another
    /// region (403).
    BadInvite,
    /// A source report's reason is unknown (400).
    BadReport,
    /// A publisher key is not a valid ed25519 key in hex (400).
    BadKey,
    /// An admin request lacks the admin token or carries another one (401).
    Unauthorized,
    /// Admin requests are disabled on this tracker (403).
    AdminDisabled,
    /// An admin request's `Host` is not a name of the tracker (403).
    BadHost,
    /// A play report is invalid (400).
    BadPlay,
    /// No song has that id (404).
    UnknownSong,
    /// A request names a node that never registered (404).
    UnknownNode,
    /// A request that must be signed is not (401).
    Unsigned,
    /// A request signature does not verify (401).
    BadRequestSignature,
    /// A request's signing time is too far from the tracker's clock (401).
    StaleRequest,
    /// A request is signed by another peer than the one it names (403).
    WrongSigner,
    /// The same signed request was received before (409).
    Replayed,
    /// The request took too long (408).
    Timeout,
    /// Too many requests from the client's address (429).
    RateLimited,
    /// No such endpoint (404).
    NoRoute,
    /// No layout has the version asked for (404).
    UnknownLayout,
    /// The partition does not exist (404).
    UnknownPartition,
    /// Draining the node would leave too few nodes (409).
    CannotDrain,
    /// Too few nodes for a layout yet (503).
    NoLayout,
    /// The tracker holds as much as it may of what was sent; try later (503).
    Busy,
    /// The tracker's database cannot be reached; another replica, or a retry, may answer
    /// (503).
    StoreUnavailable,
    /// Storage or index failure (500).
    Internal,
    /// A code this build does not know.
    Other(String),
}

/// Every code this build knows, with its name on the wire.
const CODES: &[(ErrorCode, &str)] = &[
    (ErrorCode::InvalidManifest, "invalid_manifest"),
    (ErrorCode::BadSignature, "bad_signature"),
    (ErrorCode::UnknownPublisher, "unknown_publisher"),
    (ErrorCode::WrongCoding, "wrong_coding"),
    (ErrorCode::TooLarge, "too_large"),
    (ErrorCode::BadBody, "bad_body"),
    (ErrorCode::MalformedJson, "malformed_json"),
    (ErrorCode::BadId, "bad_id"),
    (ErrorCode::BadQuery, "bad_query"),
    (ErrorCode::BadRegistration, "bad_registration"),
    (ErrorCode::BadRegion, "bad_region"),
    (ErrorCode::BadInvite, "bad_invite"),
    (ErrorCode::BadReport, "bad_report"),
    (ErrorCode::BadKey, "bad_key"),
    (ErrorCode::Unauthorized, "unauthorized"),
    (ErrorCode::AdminDisabled, "admin_disabled"),
    (ErrorCode::BadHost, "bad_host"),
    (ErrorCode::BadPlay, "bad_play"),
    (ErrorCode::UnknownSong, "unknown_song"),
    (ErrorCode::UnknownNode, "unknown_node"),
    (ErrorCode::Unsigned, "unsigned"),
    (ErrorCode::BadRequestSignature, "bad_request_signature"),
    (ErrorCode::StaleRequest, "stale_request"),
    (ErrorCode::WrongSigner, "wrong_signer"),
    (ErrorCode::Replayed, "replayed"),
    (ErrorCode::Timeout, "timeout"),
    (ErrorCode::RateLimited, "rate_limited"),
    (ErrorCode::NoRoute, "no_route"),
    (ErrorCode::UnknownLayout, "unknown_layout"),
    (ErrorCode::UnknownPartition, "unknown_partition"),
    (ErrorCode::CannotDrain, "cannot_drain"),
    (ErrorCode::NoLayout, "no_layout"),
    (ErrorCode::Busy, "busy"),
    (ErrorCode::StoreUnavailable, "store_unavailable"),
    (ErrorCode::Internal, "internal"),
];

impl ErrorCode {
    /// Every code this build knows.
    pub fn all() -> impl Iterator<Item = &'static ErrorCode> {
        CODES.iter().map(|(c, _)| c)
    }

    /// The name on the wire.
    pub fn as_str(&self) -> &str {
        if let Self::Other(s) = self {
            return s;
        }
        CODES
            .iter()
            .find(|(c, _)| c == self)
            .map_or("other", |(_, name)| name)
    }

    /// The code named `name`.
    pub fn parse(name: &str) -> Self {
        CODES
            .iter()
            .find(|(_, n)| *n == name)
            .map_or_else(|| Self::Other(name.to_string()), |(c, _)| c.clone())
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self::parse(&String::deserialize(d)?))
    }
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The code and message of an error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// The stable code.
    pub code: ErrorCode,
    /// For people.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_ones_are_kept() {
        for code in ErrorCode::all() {
            assert_eq!(&ErrorCode::parse(code.as_str()), code);
            let json = serde_json::to_string(code).unwrap();
            assert_eq!(&serde_json::from_str::<ErrorCode>(&json).unwrap(), code);
        }
        let new = ErrorCode::parse("quota_exceeded");
        assert_eq!(new, ErrorCode::Other("quota_exceeded".into()));
        assert_eq!(new.as_str(), "quota_exceeded");
        let names: std::collections::HashSet<&str> = CODES.iter().map(|(_, n)| *n).collect();
        assert_eq!(names.len(), CODES.len(), "a name is given twice");
    }
}
