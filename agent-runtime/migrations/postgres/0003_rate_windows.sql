-- Rate limits shared by every pod of the agent: one counter per limit key
-- (a user, a channel and user, a channel, the tenant's tokens) and unix minute.
-- A request is counted by one upsert that refuses to count past `lim`; rows of
-- minutes gone by are deleted by the pods. UNLOGGED: the counters need no
-- write-ahead log (no fsync per request); after a server crash they start
-- again from zero, which only forgives the current minute.

CREATE UNLOGGED TABLE rate_windows (
    key    TEXT   NOT NULL,
    minute BIGINT NOT NULL,
    count  BIGINT NOT NULL,
    lim    BIGINT NOT NULL,
    PRIMARY KEY (key, minute)
);
