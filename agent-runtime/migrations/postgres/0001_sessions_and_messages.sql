-- Sessions and messages of one tenant's agent, with full-text search.
-- Text search uses the 'simple' configuration (no stemming) so that every
-- language is searched alike, as SQLite's FTS5 does.

CREATE TABLE sessions (
    id              TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL,
    channel         TEXT NOT NULL,
    external_id     TEXT,
    title           TEXT,
    status          TEXT NOT NULL DEFAULT 'active'
                    CHECK (status IN ('active', 'archived', 'deleted')),
    pinned          BOOLEAN NOT NULL DEFAULT FALSE,
    message_count   BIGINT NOT NULL DEFAULT 0,
    tokens_in       BIGINT NOT NULL DEFAULT 0,
    tokens_out      BIGINT NOT NULL DEFAULT 0,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL,
    last_message_at TIMESTAMPTZ,
    title_tsv       TSVECTOR GENERATED ALWAYS AS (to_tsvector('simple', coalesce(title, ''))) STORED
);

CREATE INDEX sessions_user_status_updated_idx ON sessions (user_id, status, updated_at DESC);
CREATE UNIQUE INDEX sessions_external_id_idx ON sessions (user_id, channel, external_id)
    WHERE external_id IS NOT NULL;
CREATE INDEX sessions_title_tsv_idx ON sessions USING GIN (title_tsv);

CREATE TABLE messages (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    session_id  TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    parent_id   TEXT,
    role        TEXT NOT NULL CHECK (role IN ('user', 'assistant', 'system', 'tool')),
    content     TEXT NOT NULL,
    model       TEXT,
    tokens_in   BIGINT NOT NULL DEFAULT 0,
    tokens_out  BIGINT NOT NULL DEFAULT 0,
    latency_ms  BIGINT,
    error       TEXT,
    chain_hash  TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    content_tsv TSVECTOR GENERATED ALWAYS AS (to_tsvector('simple', content)) STORED
);

CREATE INDEX messages_session_seq_idx ON messages (session_id, seq);
CREATE INDEX messages_chain_hash_idx ON messages (chain_hash);
CREATE INDEX messages_content_tsv_idx ON messages USING GIN (content_tsv);
