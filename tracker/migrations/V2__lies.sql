-- Reports that a source sent bytes not matching their hash, shared by the replicas so a ban
-- holds whichever replica a client asks: source || 0x00 || signed reporter -> Unix ms of the
-- report (u64, little-endian) || its weight (f64, little-endian). Soft state, expiring with
-- the ban window; lost without harm on a database crash.
CREATE UNLOGGED TABLE lies (k BYTEA PRIMARY KEY, v BYTEA NOT NULL);
