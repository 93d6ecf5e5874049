-- Session titles are indexed for search by the runtime in batches, with the
-- messages (src/db/fts_batch.rs), no longer by a trigger per row: a new session
-- wrote a segment of its own to `sessions_fts`, 11 % of an SQLite chat's
-- instructions once the messages were batched (migration 0019). A session whose
-- current title is not in the index yet is listed in `sessions_fts_pending`;
-- every other session's current title is in the index. `sessions.rid` is not
-- AUTOINCREMENT (a rid can come back after a delete), so a list, not a mark as
-- for the messages. Every session stored so far was indexed by the trigger.
CREATE TABLE sessions_fts_pending (
    rid INTEGER PRIMARY KEY
);

DROP TRIGGER sessions_fts_insert;
DROP TRIGGER sessions_fts_delete;
DROP TRIGGER sessions_fts_update;
CREATE TRIGGER sessions_fts_insert AFTER INSERT ON sessions BEGIN
    INSERT OR IGNORE INTO sessions_fts_pending (rid) VALUES (new.rid);
END;
-- Only a title in the index is taken out of it (an external-content FTS5 table
-- must be told exactly what it holds).
CREATE TRIGGER sessions_fts_delete AFTER DELETE ON sessions BEGIN
    INSERT INTO sessions_fts (sessions_fts, rowid, title)
    SELECT 'delete', old.rid, coalesce(old.title, '')
    WHERE NOT EXISTS (SELECT 1 FROM sessions_fts_pending WHERE rid = old.rid);
    DELETE FROM sessions_fts_pending WHERE rid = old.rid;
END;
CREATE TRIGGER sessions_fts_update AFTER UPDATE OF title ON sessions
WHEN old.title IS NOT new.title BEGIN
    INSERT INTO sessions_fts (sessions_fts, rowid, title)
    SELECT 'delete', old.rid, coalesce(old.title, '')
    WHERE NOT EXISTS (SELECT 1 FROM sessions_fts_pending WHERE rid = old.rid);
    INSERT OR IGNORE INTO sessions_fts_pending (rid) VALUES (new.rid);
END;
