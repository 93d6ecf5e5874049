-- Server-side tool executions: one row per call the runtime ran for the model
-- (or refused: invalid arguments, rejected approval), with the assistant message
-- that asked for it, the tool message holding its result, and what happened.
-- Times are unix milliseconds.

CREATE TABLE tool_executions (
    id               TEXT PRIMARY KEY,
    session_id       TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    call_message_id  TEXT NOT NULL,
    result_message_id TEXT NOT NULL,
    tool_call_id     TEXT NOT NULL,
    tool             TEXT NOT NULL,
    source           TEXT NOT NULL,
    input            TEXT NOT NULL,
    output           TEXT NOT NULL,
    status           TEXT NOT NULL,
    duration_ms      BIGINT NOT NULL,
    error            TEXT,
    started_at       BIGINT NOT NULL
);

CREATE INDEX tool_executions_session_idx ON tool_executions (session_id);
