-- The commands admin calls sent, noted in the transaction that puts each in the outbox. A retried call (the same
-- Idempotency-Key from the same API key) finds its command here and sends nothing again, so the ledger does not
-- see a second copy with another request time and refuse it as an idempotency conflict; and
-- GET …/commands/{key} can tell a command on its way (pending) from one nobody sent (404 unknown_command).
CREATE TABLE IF NOT EXISTS admin_commands (
    idempotency_key text PRIMARY KEY,
    program_id      text        NOT NULL,
    sent_at         timestamptz NOT NULL
);
