-- The tracker's store on PostgreSQL: one table per keyspace of the embedded store, keys and
-- values as bytes, ordered by key as RocksDB orders them (bytea compares byte by byte).
-- Plain SQL only (no extension), so PostgreSQL-compatible distributed databases run it too.

-- Signed manifests by song id.
CREATE TABLE manifests (k BYTEA PRIMARY KEY, v BYTEA NOT NULL);
-- Node records by peer id (JSON).
CREATE TABLE nodes (k BYTEA PRIMARY KEY, v BYTEA NOT NULL);
-- Layout versions by big-endian version (JSON); a version is inserted once, never changed.
CREATE TABLE layouts (k BYTEA PRIMARY KEY, v BYTEA NOT NULL);
-- Authorised publisher keys.
CREATE TABLE publishers (k BYTEA PRIMARY KEY, v BYTEA NOT NULL);
-- Commit journal: big-endian sequence number -> song id, in commit order.
CREATE TABLE journal (k BYTEA PRIMARY KEY, v BYTEA NOT NULL);
-- The last journal sequence number: a publish locks this row, so journal entries become
-- visible in sequence order and a reader that follows the journal never skips one.
CREATE TABLE journal_head (id INT PRIMARY KEY, seq BIGINT NOT NULL);
INSERT INTO journal_head (id, seq) VALUES (1, 0);
-- Placement index: big-endian partition || segment id -> length || shard ids.
CREATE TABLE placement (k BYTEA PRIMARY KEY, v BYTEA NOT NULL);
-- Join tokens (JSON).
CREATE TABLE invites (k BYTEA PRIMARY KEY, v BYTEA NOT NULL);
-- Play counts: song id || region -> plays, added to by every replica.
CREATE TABLE plays (k BYTEA PRIMARY KEY, n BIGINT NOT NULL);
-- When each node was last heard from, by any replica (Unix ms, little-endian): soft state,
-- lost without harm on a database crash (nodes heartbeat again within their interval).
CREATE UNLOGGED TABLE seen (k BYTEA PRIMARY KEY, v BYTEA NOT NULL);
-- Work one replica does for all (audits): who holds it, until when (Unix ms).
CREATE TABLE leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, until_ms BIGINT NOT NULL);
