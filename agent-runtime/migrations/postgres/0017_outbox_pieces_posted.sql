-- An answer posted to a chat app in pieces (Slack and Discord take 4,000 and 2,000
-- characters a message) records how many went out, so an attempt that failed part
-- way resumes after them instead of posting them again (Slack's chat.postMessage
-- has no idempotency key; Discord's nonces are remembered for minutes only).
ALTER TABLE webhook_outbox ADD COLUMN pieces_posted BIGINT NOT NULL DEFAULT 0;
