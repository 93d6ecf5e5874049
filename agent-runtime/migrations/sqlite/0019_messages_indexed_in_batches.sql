-- Messages are indexed for search by the runtime in batches (src/db/fts_batch.rs),
-- no longer by a trigger per row: FTS5 writes a segment of its index for every
-- transaction that added rows (and at every statement inside one), then merges
-- the segments as they pile up, which was a quarter of an SQLite chat's
-- instructions. `messages_fts_indexed.seq` is the last message indexed, moved
-- in the same transaction as the index's rows (seq is AUTOINCREMENT: never
-- reused, so every message above it is one not indexed yet); `prev` is where
-- the last move started. Every message stored so far was indexed by the
-- trigger.
CREATE TABLE messages_fts_indexed (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    prev INTEGER NOT NULL
);
INSERT INTO messages_fts_indexed (id, seq, prev)
SELECT 1, coalesce(max(seq), 0), coalesce(max(seq), 0) FROM messages;

DROP TRIGGER messages_fts_insert;
DROP TRIGGER messages_fts_delete;
DROP TRIGGER messages_fts_update;
-- Only an indexed message is taken out of the index (an external-content FTS5
-- table must be told exactly what it holds; a message not indexed yet is
-- indexed as it is when its turn comes, or never if it is gone by then).
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages
WHEN old.seq <= (SELECT seq FROM messages_fts_indexed) BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, content) VALUES ('delete', old.seq, old.content);
END;
CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages
WHEN old.seq <= (SELECT seq FROM messages_fts_indexed) BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, content) VALUES ('delete', old.seq, old.content);
    INSERT INTO messages_fts (rowid, content) VALUES (new.seq, new.content);
END;
