//! Admission: which nodes may hold data. Join tokens ([`medley_core::Invite`]) are made here
//! and redeemed once; approvals and revocations are the registry's.
//!
//! Laws: a token admits at most one node (the first that registers with it; the same node
//! may show it again); only tokens this tracker made and still keeps admit; a token that
//! fixes a region admits only a node registering in it.

use std::sync::Arc;

use medley_api::{InviteRequest, InviteToken};
use medley_core::{Invite, TrackerKey};
use serde::{Deserialize, Serialize};

use crate::db::{CF_INVITES, Db};
use crate::error::{StateError, corrupt};

/// How long a token holds unless asked otherwise: a week.
pub(crate) const DEFAULT_INVITE_SECS: u64 = 7 * 24 * 3600;
/// Longest a token may hold: a year.
const MAX_INVITE_SECS: u64 = 365 * 24 * 3600;

/// A token as kept: what it allows, and who used it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct InviteRecord {
    region: Option<String>,
    capacity: Option<u64>,
    expires: u64,
    used_by: Option<String>,
}

/// What a redeemed token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Grant {
    /// The token's id, hex.
    pub(crate) id: String,
    /// The capacity cap it sets.
    pub(crate) capacity: Option<u64>,
}

/// The join tokens made.
#[derive(Debug)]
pub(crate) struct Invites {
    db: Arc<Db>,
}

impl Invites {
    pub(crate) fn new(db: Arc<Db>) -> Self {
        Self { db }
    }

    /// Makes a token for one node, signed by `key`. `regions` are the configured ones
    /// (empty: any).
    pub(crate) fn make(
        &self,
        req: &InviteRequest,
        key: &TrackerKey,
        regions: &[String],
        now: u64,
    ) -> Result<InviteToken, StateError> {
        if let Some(r) = &req.region
            && !regions.is_empty()
            && !regions.contains(r)
        {
            return Err(StateError::BadRegion {
                region: r.clone(),
                known: regions.join(", "),
            });
        }
        if req.capacity == Some(0) {
            return Err(StateError::BadRegistration(
                "an invite's capacity must be at least 1 byte",
            ));
        }
        let secs = req.expires_secs.unwrap_or(DEFAULT_INVITE_SECS);
        if secs == 0 || secs > MAX_INVITE_SECS {
            return Err(StateError::BadRegistration(
                "an invite holds 1 second to 365 days",
            ));
        }
        let mut id = [0u8; 16];
        getrandom::fill(&mut id).map_err(|e| corrupt("random invite id", e))?;
        let invite = Invite {
            id,
            region: req.region.clone(),
            capacity: req.capacity,
            expires: now + secs,
        };
        let record = InviteRecord {
            region: invite.region.clone(),
            capacity: invite.capacity,
            expires: invite.expires,
            used_by: None,
        };
        self.store(&id, &record)?;
        Ok(InviteToken {
            token: invite.sign(key),
            id: invite.id_hex(),
            region: invite.region,
            capacity: invite.capacity,
            expires: invite.expires,
        })
    }

    fn store(&self, id: &[u8; 16], record: &InviteRecord) -> Result<(), StateError> {
        let json = serde_json::to_vec(record).map_err(|e| corrupt("invite", e))?;
        Ok(self.db.put(CF_INVITES, id, &json)?)
    }

    /// Redeems `token` for node `peer` registering in `region`: checks it and marks it
    /// used by `peer`.
    pub(crate) fn redeem(
        &self,
        token: &str,
        key: &TrackerKey,
        peer: &str,
        region: &str,
        now: u64,
    ) -> Result<Grant, StateError> {
        let refuse = |why: String| StateError::BadInvite(why);
        let invite = Invite::open(token, &key.id(), now).map_err(|e| refuse(e.to_string()))?;
        let mut record: InviteRecord = match self.db.get(CF_INVITES, &invite.id)? {
            Some(v) => serde_json::from_slice(&v).map_err(|e| corrupt("invite", e))?,
            None => return Err(refuse("this tracker keeps no such token".into())),
        };
        if let Some(used) = &record.used_by
            && used != peer
        {
            return Err(refuse(format!("the token was used by node {used}")));
        }
        if let Some(r) = &record.region
            && r != region
        {
            return Err(refuse(format!(
                "the token admits a node of region {r:?}, not {region:?}"
            )));
        }
        if record.used_by.is_none() {
            record.used_by = Some(peer.to_string());
            self.store(&invite.id, &record)?;
        }
        Ok(Grant {
            id: invite.id_hex(),
            capacity: record.capacity,
        })
    }
}
