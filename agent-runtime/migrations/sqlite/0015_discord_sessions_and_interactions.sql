-- Discord. The holder of a bot's lease keeps the Gateway session beside it
-- (session id, last sequence number stored, resume URL, the bot user), so a pod that takes
-- the lease over resumes the session (Discord replays what arrived during the
-- handover) instead of identifying afresh; a released lease keeps them. An
-- outbox row of a slash command carries the interaction's token, with which
-- its answer edits the deferred response (valid 15 minutes at Discord).

ALTER TABLE chat_app_leases ADD COLUMN session_id TEXT;
ALTER TABLE chat_app_leases ADD COLUMN session_sequence INTEGER;
ALTER TABLE chat_app_leases ADD COLUMN resume_url TEXT;
ALTER TABLE chat_app_leases ADD COLUMN bot_user_id TEXT;
ALTER TABLE webhook_outbox ADD COLUMN interaction_token TEXT;
