-- Cost accounting: tokens and cost of each budget window (a calendar month in
-- UTC, e.g. '2026-12'), summed by every pod of the agent with one atomic upsert
-- per flush, so a budget holds across replicas. Costs are exact integers in
-- pico-units (1e-12) of the agent's pricing currency.

CREATE TABLE spend_windows (
    window_key TEXT PRIMARY KEY,
    currency   TEXT NOT NULL,
    tokens_in  BIGINT NOT NULL DEFAULT 0,
    tokens_out BIGINT NOT NULL DEFAULT 0,
    cost_picos BIGINT NOT NULL DEFAULT 0,
    turns      BIGINT NOT NULL DEFAULT 0
);
