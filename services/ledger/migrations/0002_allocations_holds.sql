-- Lots, allocations, holds and debt. Everything here is append-only like the entries: a lot's remainder,
-- a hold's state and a member's debt are derived from rows that are only ever inserted.

-- `transfers` is the clearing account a member-to-member transfer passes through (out leg, in leg),
-- so every entry touches exactly one member chain and the clearing account nets to zero.
ALTER TABLE accounts DROP CONSTRAINT accounts_kind_check;
ALTER TABLE accounts ADD CONSTRAINT accounts_kind_check
    CHECK (kind IN ('member', 'issued', 'redeemed', 'expired', 'adjustments', 'transfers'));
-- The account tip also carries the points the member owes (derived from debts and their repayments,
-- checked by verify) and a version that every change of the member's state moves on (optimistic concurrency
-- for changes that post no entry, such as placing a hold).
ALTER TABLE accounts ADD COLUMN debt bigint NOT NULL DEFAULT 0 CHECK (debt >= 0);
ALTER TABLE accounts ADD COLUMN version bigint NOT NULL DEFAULT 0;

ALTER TABLE entries ADD COLUMN hold_id text;
CREATE INDEX entries_corrects ON entries (corrects_entry_id) WHERE corrects_entry_id IS NOT NULL;

-- A lot has its own id (an entry may make several: a transfer keeps each source lot's expiry).
ALTER TABLE lots DROP CONSTRAINT lots_pkey;
ALTER TABLE lots ADD COLUMN id bigserial PRIMARY KEY;
ALTER TABLE lots ADD COLUMN origin_lot_id bigint REFERENCES lots (id);
CREATE INDEX lots_entry ON lots (entry_id);
CREATE INDEX lots_account_id ON lots (account_id, id);
DROP INDEX lots_expiry;
CREATE INDEX lots_expiry ON lots (expires_at, id) WHERE expires_at IS NOT NULL;

-- Which lot paid for which debit entry. `by_entry_id` is the entry that made the allocation: the debit
-- itself, or a later credit repaying a debt the debit left.
CREATE TABLE allocations (
    id          bigserial PRIMARY KEY,
    entry_id    bigint NOT NULL REFERENCES entries (id),
    lot_id      bigint NOT NULL REFERENCES lots (id),
    amount      bigint NOT NULL CHECK (amount > 0),
    by_entry_id bigint NOT NULL REFERENCES entries (id)
);
CREATE INDEX allocations_lot ON allocations (lot_id);
CREATE INDEX allocations_entry ON allocations (entry_id);

-- A lot whose remainder reached zero; open lots are those without a row here.
CREATE TABLE lot_closures (
    lot_id      bigint PRIMARY KEY REFERENCES lots (id),
    account_id  bigint NOT NULL REFERENCES accounts (id),
    by_entry_id bigint NOT NULL REFERENCES entries (id)
);
CREATE INDEX lot_closures_account ON lot_closures (account_id, lot_id);

-- A debit that took more than the member had (a reversal of spent points): the shortfall is debt,
-- repaid by allocations from later credits.
CREATE TABLE debts (
    entry_id   bigint PRIMARY KEY REFERENCES entries (id),
    account_id bigint NOT NULL REFERENCES accounts (id),
    amount     bigint NOT NULL CHECK (amount > 0)
);
CREATE INDEX debts_account ON debts (account_id, entry_id);

CREATE TABLE holds (
    hold_id     text PRIMARY KEY,
    program_id  text   NOT NULL,
    account_id  bigint NOT NULL REFERENCES accounts (id),
    amount      bigint NOT NULL CHECK (amount > 0),
    command_key text   NOT NULL,
    placed_at   timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX holds_account ON holds (account_id);
CREATE INDEX holds_expiry ON holds (expires_at);

CREATE TABLE hold_reservations (
    hold_id text   NOT NULL REFERENCES holds (hold_id),
    lot_id  bigint NOT NULL REFERENCES lots (id),
    amount  bigint NOT NULL CHECK (amount > 0),
    PRIMARY KEY (hold_id, lot_id)
);
CREATE INDEX hold_reservations_lot ON hold_reservations (lot_id);

-- The primary key is the database's guarantee that a hold resolves at most once.
CREATE TABLE hold_resolutions (
    hold_id     text PRIMARY KEY REFERENCES holds (hold_id),
    outcome     text   NOT NULL CHECK (outcome IN ('captured', 'released', 'expired')),
    captured    bigint NOT NULL CHECK (captured >= 0),
    entry_id    bigint REFERENCES entries (id),
    command_key text   NOT NULL,
    resolved_at timestamptz NOT NULL
);

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['allocations', 'lot_closures', 'debts', 'holds', 'hold_reservations',
                             'hold_resolutions'] LOOP
        EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE OR DELETE ON %I FOR EACH ROW EXECUTE FUNCTION refuse_change()',
                       t || '_append_only', t);
        EXECUTE format('CREATE TRIGGER %I BEFORE TRUNCATE ON %I FOR EACH STATEMENT EXECUTE FUNCTION refuse_change()',
                       t || '_no_truncate', t);
    END LOOP;
END $$;
