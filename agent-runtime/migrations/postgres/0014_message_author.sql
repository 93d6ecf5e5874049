-- Who wrote a user message when it is not the session's owner alone: in a chat
-- app's thread (a Slack thread is one session for everyone in it) each message
-- keeps its platform user id. NULL: the session's user.
ALTER TABLE messages ADD COLUMN author TEXT;
