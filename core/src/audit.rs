//! Storage audits: proof that a peer holds a shard, without the shard crossing the network.
//!
//! An auditor that knows a shard's id and length picks a random 1 KiB range of it (a
//! [`Challenge`]); the holder answers with the range and the BLAKE3 tree nodes that tie it to
//! the shard's id (a bao slice, [`prove`]); the auditor checks the answer against the id it
//! already knows ([`Challenge::verify`]). No copy of the shard is needed to audit it, a
//! holder cannot answer without the challenged bytes, and a fresh random range per challenge
//! means an old answer does not replay: a holder that kept a fraction `f` of a shard passes a
//! challenge with probability about `f`.
//!
//! Sizes: an answer is the range plus 64 bytes per level of the shard's BLAKE3 tree and an
//! 8-byte header, about 1.5 KiB for a 64 KiB shard ([`MAX_PROOF_SIZE`] bounds it for any
//! shard a message may carry).

use std::io::Read;

use crate::hash::ShardId;

/// Bytes challenged at once: one BLAKE3 chunk, the smallest unit a proof can cover.
pub const AUDIT_RANGE: u32 = 1024;
/// Longest range a challenge may name.
pub const MAX_AUDIT_RANGE: u32 = 4 * AUDIT_RANGE;
/// Largest answer to a challenge: the range, a header, and one parent node (64 bytes) per
/// level of a tree over the largest blob (2^20 chunks at most).
pub const MAX_PROOF_SIZE: usize = MAX_AUDIT_RANGE as usize + 8 + 64 * 2 * 21;

/// Why a challenge cannot be answered or an answer does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    /// The range is empty, longer than [`MAX_AUDIT_RANGE`] or outside the shard.
    #[error(
        "range {start}+{len} does not fit a {size} byte shard (at most {MAX_AUDIT_RANGE} bytes)"
    )]
    BadRange {
        /// First byte asked.
        start: u32,
        /// Bytes asked.
        len: u32,
        /// The shard's length.
        size: usize,
    },
    /// The answer does not prove the range against the shard's id.
    #[error("the answer does not prove bytes {start}+{len} of shard {id}: {reason}")]
    Unproven {
        /// The shard challenged.
        id: ShardId,
        /// First byte asked.
        start: u32,
        /// Bytes asked.
        len: u32,
        /// What the check found.
        reason: String,
    },
}

/// A challenge: prove bytes `start..start + len` of shard `id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Challenge {
    /// The shard.
    pub id: ShardId,
    /// First byte of the range.
    pub start: u32,
    /// Length of the range.
    pub len: u32,
}

impl Challenge {
    /// A challenge of one [`AUDIT_RANGE`] of a `shard_len`-byte shard, the range picked by
    /// `entropy` (the caller's fresh random number).
    pub fn pick(id: ShardId, shard_len: usize, entropy: u64) -> Self {
        let chunks = (shard_len as u64).div_ceil(u64::from(AUDIT_RANGE)).max(1);
        let start = (entropy % chunks) * u64::from(AUDIT_RANGE);
        let len = (shard_len as u64)
            .saturating_sub(start)
            .clamp(1, u64::from(AUDIT_RANGE));
        Self {
            id,
            start: start as u32,
            len: len as u32,
        }
    }

    /// Checks `proof` (from [`prove`]) against the shard's id: `Ok` only when it carries the
    /// challenged bytes of the shard whose BLAKE3 hash is the id, and nothing else.
    pub fn verify(&self, proof: &[u8]) -> Result<(), AuditError> {
        let unproven = |reason: String| AuditError::Unproven {
            id: self.id,
            start: self.start,
            len: self.len,
            reason,
        };
        if self.len == 0 || self.len > MAX_AUDIT_RANGE {
            return Err(unproven("the challenge itself is out of bounds".into()));
        }
        if proof.len() > MAX_PROOF_SIZE {
            return Err(unproven(format!("{} byte answer", proof.len())));
        }
        let hash = bao::Hash::from(*self.id.0.as_bytes());
        let mut reader = proof;
        let mut decoder = bao::decode::SliceDecoder::new(
            &mut reader,
            &hash,
            u64::from(self.start),
            u64::from(self.len),
        );
        let mut out = Vec::with_capacity(self.len as usize);
        decoder
            .read_to_end(&mut out)
            .map_err(|e| unproven(e.to_string()))?;
        drop(decoder);
        if out.len() != self.len as usize {
            return Err(unproven(format!(
                "it proves {} bytes, not {}",
                out.len(),
                self.len
            )));
        }
        if !reader.is_empty() {
            return Err(unproven(format!("{} bytes after the proof", reader.len())));
        }
        Ok(())
    }
}

/// The answer to a challenge of bytes `start..start + len` of `shard` (whose id the caller
/// has checked): those bytes with the tree nodes that prove them.
pub fn prove(shard: &[u8], start: u32, len: u32) -> Result<Vec<u8>, AuditError> {
    let end = u64::from(start) + u64::from(len);
    if len == 0 || len > MAX_AUDIT_RANGE || end > shard.len() as u64 {
        return Err(AuditError::BadRange {
            start,
            len,
            size: shard.len(),
        });
    }
    let (outboard, _) = bao::encode::outboard(shard);
    let mut extractor = bao::encode::SliceExtractor::new_outboard(
        std::io::Cursor::new(shard),
        std::io::Cursor::new(&outboard[..]),
        u64::from(start),
        u64::from(len),
    );
    let mut proof = Vec::with_capacity(len as usize + 1024);
    // Reading from memory cannot fail; a failure would be a bug in the range check above.
    extractor
        .read_to_end(&mut proof)
        .map_err(|_| AuditError::BadRange {
            start,
            len,
            size: shard.len(),
        })?;
    Ok(proof)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn an_honest_holder_passes_every_challenge() {
        for len in [1, 1000, 1024, 1025, 64 * 1024, 65 * 1024 + 17] {
            let data = shard(len, 1);
            let id = ShardId::of(&data);
            for entropy in [0, 1, 7, 63, 64, 1 << 40] {
                let c = Challenge::pick(id, len, entropy);
                assert!(c.start as usize + c.len as usize <= len);
                let proof = prove(&data, c.start, c.len).unwrap();
                assert!(proof.len() <= MAX_PROOF_SIZE);
                c.verify(&proof).unwrap();
            }
        }
        // A 64 KiB shard's answer is about 1.5 KiB.
        let data = shard(64 * 1024, 2);
        let c = Challenge::pick(ShardId::of(&data), data.len(), 5);
        assert!(prove(&data, c.start, c.len).unwrap().len() < 1600);
    }

    #[test]
    fn a_holder_without_the_bytes_fails() {
        let data = shard(64 * 1024, 3);
        let id = ShardId::of(&data);
        let c = Challenge::pick(id, data.len(), 9);
        // Another shard's proof, a proof of another range, a flipped byte, a cut or padded
        // answer: all refused.
        let other = shard(64 * 1024, 4);
        assert!(c.verify(&prove(&other, c.start, c.len).unwrap()).is_err());
        let elsewhere = Challenge::pick(id, data.len(), 10);
        assert_ne!(elsewhere.start, c.start);
        assert!(
            c.verify(&prove(&data, elsewhere.start, elsewhere.len).unwrap())
                .is_err()
        );
        let good = prove(&data, c.start, c.len).unwrap();
        for i in [0, 8, 100, good.len() - 1] {
            let mut bad = good.clone();
            bad[i] ^= 1;
            assert!(c.verify(&bad).is_err(), "byte {i} flipped");
        }
        assert!(c.verify(&good[..good.len() - 1]).is_err());
        let mut padded = good.clone();
        padded.push(0);
        assert!(c.verify(&padded).is_err());
        assert!(c.verify(&[]).is_err());
        assert!(c.verify(&vec![0; MAX_PROOF_SIZE + 1]).is_err());
        // A shard with its challenged chunk zeroed (the holder kept the rest) fails.
        let mut holey = data.clone();
        holey[c.start as usize..(c.start + c.len) as usize].fill(0);
        assert!(c.verify(&prove(&holey, c.start, c.len).unwrap()).is_err());
    }

    #[test]
    fn bad_ranges_are_refused() {
        let data = shard(2000, 5);
        assert!(prove(&data, 0, 0).is_err());
        assert!(prove(&data, 1990, 11).is_err());
        assert!(prove(&data, 0, MAX_AUDIT_RANGE + 1).is_err());
        assert!(prove(&data, u32::MAX, 1).is_err());
    }
}
