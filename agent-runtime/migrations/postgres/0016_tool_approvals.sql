-- Approvals of server-side tool calls (tools.requireApproval): one row per call
-- that waited for a person, with the assistant message that asked for it, the
-- call's arguments, and the decision. state: pending, approved, rejected or
-- expired. Times are unix milliseconds.

CREATE TABLE tool_approvals (
    id               TEXT PRIMARY KEY,
    session_id       TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    message_id       TEXT NOT NULL,
    tool_call_id     TEXT NOT NULL,
    tool             TEXT NOT NULL,
    source           TEXT NOT NULL,
    arguments        TEXT NOT NULL,
    requested_at     BIGINT NOT NULL,
    expires_at       BIGINT NOT NULL,
    state            TEXT NOT NULL,
    decided_by       TEXT,
    decided_at       BIGINT,
    reason           TEXT
);

CREATE INDEX tool_approvals_session_idx ON tool_approvals (session_id);
