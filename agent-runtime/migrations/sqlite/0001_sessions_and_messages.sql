-- Sessions and messages of one agent, with FTS5 full-text search kept in step by
-- triggers (external-content tables keyed by an explicit INTEGER PRIMARY KEY,
-- which VACUUM never renumbers).

CREATE TABLE sessions (
    rid             INTEGER PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    user_id         TEXT NOT NULL,
    channel         TEXT NOT NULL,
    external_id     TEXT,
    title           TEXT,
    status          TEXT NOT NULL DEFAULT 'active'
                    CHECK (status IN ('active', 'archived', 'deleted')),
    pinned          BOOLEAN NOT NULL DEFAULT FALSE,
    message_count   INTEGER NOT NULL DEFAULT 0,
    tokens_in       INTEGER NOT NULL DEFAULT 0,
    tokens_out      INTEGER NOT NULL DEFAULT 0,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    last_message_at TEXT
);

CREATE INDEX sessions_user_status_updated_idx ON sessions (user_id, status, updated_at DESC);
CREATE UNIQUE INDEX sessions_external_id_idx ON sessions (user_id, channel, external_id)
    WHERE external_id IS NOT NULL;

CREATE TABLE messages (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,
    session_id  TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    parent_id   TEXT,
    role        TEXT NOT NULL CHECK (role IN ('user', 'assistant', 'system', 'tool')),
    content     TEXT NOT NULL,
    model       TEXT,
    tokens_in   INTEGER NOT NULL DEFAULT 0,
    tokens_out  INTEGER NOT NULL DEFAULT 0,
    latency_ms  INTEGER,
    error       TEXT,
    chain_hash  TEXT NOT NULL,
    created_at  TEXT NOT NULL
);

CREATE INDEX messages_session_seq_idx ON messages (session_id, seq);
CREATE INDEX messages_chain_hash_idx ON messages (chain_hash);

CREATE VIRTUAL TABLE sessions_fts USING fts5(title, content = 'sessions', content_rowid = 'rid');
CREATE VIRTUAL TABLE messages_fts USING fts5(content, content = 'messages', content_rowid = 'seq');

CREATE TRIGGER sessions_fts_insert AFTER INSERT ON sessions BEGIN
    INSERT INTO sessions_fts (rowid, title) VALUES (new.rid, coalesce(new.title, ''));
END;
CREATE TRIGGER sessions_fts_delete AFTER DELETE ON sessions BEGIN
    INSERT INTO sessions_fts (sessions_fts, rowid, title) VALUES ('delete', old.rid, coalesce(old.title, ''));
END;
CREATE TRIGGER sessions_fts_update AFTER UPDATE OF title ON sessions BEGIN
    INSERT INTO sessions_fts (sessions_fts, rowid, title) VALUES ('delete', old.rid, coalesce(old.title, ''));
    INSERT INTO sessions_fts (rowid, title) VALUES (new.rid, coalesce(new.title, ''));
END;

CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
    INSERT INTO messages_fts (rowid, content) VALUES (new.seq, new.content);
END;
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, content) VALUES ('delete', old.seq, old.content);
END;
CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, content) VALUES ('delete', old.seq, old.content);
    INSERT INTO messages_fts (rowid, content) VALUES (new.seq, new.content);
END;
