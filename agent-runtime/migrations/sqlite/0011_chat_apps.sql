-- Chat apps. The outbox row of a Discord message names the message its answer
-- replies to. A lease per Discord bot (its name derived from the token, never
-- the token) lets exactly one runtime pod hold the bot's Gateway connection:
-- the holder renews it, another pod takes it over once it expires. Times are
-- unix milliseconds.

ALTER TABLE webhook_outbox ADD COLUMN reply_to TEXT;

CREATE TABLE chat_app_leases (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    expires_at  INTEGER NOT NULL
);
