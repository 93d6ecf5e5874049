-- The admin API counts and lists failed answers: a small partial index holds
-- exactly those rows (most answers do not fail).
CREATE INDEX messages_failed_idx ON messages (created_at) WHERE role = 'assistant' AND error IS NOT NULL;
