-- A session's title is re-indexed only when it changes. Every message write
-- sets `title = COALESCE(title, ...)` with the session's counters, which fired
-- the `UPDATE OF title` trigger, and a full-text delete and insert, for every
-- message, title changed or not.
DROP TRIGGER sessions_fts_update;
CREATE TRIGGER sessions_fts_update AFTER UPDATE OF title ON sessions
WHEN old.title IS NOT new.title BEGIN
    INSERT INTO sessions_fts (sessions_fts, rowid, title) VALUES ('delete', old.rid, coalesce(old.title, ''));
    INSERT INTO sessions_fts (rowid, title) VALUES (new.rid, coalesce(new.title, ''));
END;
