-- Webhook channel: every accepted inbound message and the delivery of its answer
-- to the channel's callback URL. A row is written before the 202 answers (its
-- unique (channel, inbound_key) refuses replays), stays 'pending' until the
-- callback accepts the answer, and survives restarts. Times are unix milliseconds.

CREATE TABLE webhook_outbox (
    id                TEXT PRIMARY KEY,
    channel           TEXT NOT NULL,
    inbound_key       TEXT NOT NULL,
    conversation_id   TEXT NOT NULL,
    user_id           TEXT NOT NULL,
    text              TEXT NOT NULL,
    callback_url      TEXT NOT NULL,
    session_id        TEXT,
    user_message_id   TEXT,
    answer_message_id TEXT,
    answer            TEXT,
    status            TEXT NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts          INTEGER NOT NULL DEFAULT 0,
    last_error        TEXT,
    next_attempt_at   INTEGER NOT NULL,
    locked_until      INTEGER,
    created_at        INTEGER NOT NULL,
    delivered_at      INTEGER,
    UNIQUE (channel, inbound_key)
);

CREATE INDEX webhook_outbox_due_idx ON webhook_outbox (status, next_attempt_at);
