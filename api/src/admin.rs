//! Admin requests: publisher keys. Every admin request carries the admin token.

use serde::{Deserialize, Serialize};

/// The authorised publisher keys (`GET /v1/publishers`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublisherList {
    /// Keys, hex, sorted.
    pub publishers: Vec<String>,
}

/// A key to authorise (`POST /v1/publishers`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPublisher {
    /// The publisher's public key, hex.
    pub key: String,
}

/// A publisher key after it was authorised or revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublisherChange {
    /// The key, hex.
    pub key: String,
    /// Whether it is authorised now.
    pub authorised: bool,
    /// On a revocation: whether it was authorised before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub was_authorised: Option<bool>,
}
