-- What each replica heard of demand (plays, listeners' announcements, reports about sources,
-- the whole copies nodes hold, the hot copies ordered), for the other replicas to take up:
-- an append-only log, big-endian sequence number -> one replica's batch of about a second
-- (JSON). Soft state, trimmed to the last minutes; lost without harm on a database crash.
CREATE UNLOGGED TABLE demand (k BYTEA PRIMARY KEY, v BYTEA NOT NULL);
-- The last sequence number of each log: an append locks its row until it commits, so entries
-- become visible in sequence order and a reader that follows the log never skips one.
CREATE TABLE log_heads (name TEXT PRIMARY KEY, seq BIGINT NOT NULL);
INSERT INTO log_heads (name, seq) VALUES ('demand', 0);
