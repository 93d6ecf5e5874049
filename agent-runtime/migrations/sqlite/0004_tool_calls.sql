-- Tool calls in stored history: an assistant message's calls (a JSON array of
-- {"id", "name", "arguments"}; NULL when it called none) and the call a tool
-- message answers.

ALTER TABLE messages ADD COLUMN tool_calls TEXT;
ALTER TABLE messages ADD COLUMN tool_call_id TEXT;
