-- Inbox: one row per consumed event id, claimed in the same transaction as the event's effects.
CREATE TABLE IF NOT EXISTS inbox (
    event_id    text PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now()
);

-- Outbox: every message the service sends, written in the same transaction as the state that caused it.
-- The relay publishes rows in id order and deletes them once the broker has acknowledged them.
CREATE TABLE IF NOT EXISTS outbox (
    id            bigserial PRIMARY KEY,
    topic         text NOT NULL,
    key           bytea,
    value         bytea NOT NULL,
    headers       jsonb,          -- [[name, value as hex], ...]
    created_at    timestamptz NOT NULL DEFAULT now()
);
