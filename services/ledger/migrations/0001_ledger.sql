-- Accounts: one per member per programme, plus the programme's system accounts.
-- Member accounts carry the running state of their entry chain (balance, last sequence, last hash);
-- system account balances are derived from entries, so no hot row is updated per entry.
CREATE TABLE accounts (
    id              bigserial PRIMARY KEY,
    program_id      text   NOT NULL,
    kind            text   NOT NULL CHECK (kind IN ('member', 'issued', 'redeemed', 'expired', 'adjustments')),
    member_id       text   NOT NULL DEFAULT '',   -- '' for system accounts
    balance         bigint NOT NULL DEFAULT 0,
    lifetime_earned bigint NOT NULL DEFAULT 0,
    last_seq        bigint NOT NULL DEFAULT 0,
    last_hash       bytea  NOT NULL DEFAULT '\x0000000000000000000000000000000000000000000000000000000000000000',
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (program_id, kind, member_id),
    CHECK ((kind = 'member') = (member_id <> ''))
);

-- Commands seen, by idempotency key: the ledger's inbox. Same key and same payload hash is a replay;
-- same key with another hash is a conflict, answered with a rejection.
CREATE TABLE commands (
    idempotency_key text PRIMARY KEY,
    payload_hash    bytea NOT NULL,
    command_type    text  NOT NULL,
    program_id      text  NOT NULL,
    member_id       text  NOT NULL,
    outcome         text  NOT NULL CHECK (outcome IN ('posted', 'rejected')),
    reason          text,
    received_at     timestamptz NOT NULL
);

-- Entries: append-only, double entry. Each moves a positive amount from one account to another and
-- belongs to the sequence of its member account (account_id): gapless seq, balance after, hash chain.
CREATE TABLE entries (
    id                bigserial PRIMARY KEY,
    program_id        text   NOT NULL,
    account_id        bigint NOT NULL REFERENCES accounts (id),
    seq               bigint NOT NULL CHECK (seq > 0),
    from_account_id   bigint NOT NULL REFERENCES accounts (id),
    to_account_id     bigint NOT NULL REFERENCES accounts (id),
    amount            bigint NOT NULL CHECK (amount > 0),
    balance_after     bigint NOT NULL,
    kind              text   NOT NULL,
    command_key       text   NOT NULL,
    corrects_entry_id bigint REFERENCES entries (id),
    source_event_id   text,
    rule_id           text,
    rule_version      integer,
    reason            text,
    details           jsonb,
    occurred_at       timestamptz NOT NULL,
    posted_at         timestamptz NOT NULL,
    prev_hash         bytea  NOT NULL,
    hash              bytea  NOT NULL,
    UNIQUE (account_id, seq),
    CHECK (account_id IN (from_account_id, to_account_id) AND from_account_id <> to_account_id)
);
CREATE INDEX entries_command_key ON entries (command_key);

-- Lots: every earn credit is a lot. Its remainder is derived from later allocations, never stored.
CREATE TABLE lots (
    entry_id     bigint PRIMARY KEY REFERENCES entries (id),
    account_id   bigint NOT NULL REFERENCES accounts (id),
    amount       bigint NOT NULL CHECK (amount > 0),
    available_at timestamptz NOT NULL,
    expires_at   timestamptz
);
CREATE INDEX lots_account ON lots (account_id, available_at);
CREATE INDEX lots_expiry ON lots (expires_at) WHERE expires_at IS NOT NULL;

-- Append-only, enforced by the database: corrections are new entries.
CREATE FUNCTION refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger table % is append-only: % refused; post a correcting entry instead',
        TG_TABLE_NAME, TG_OP USING ERRCODE = 'restrict_violation';
END $$;

CREATE TRIGGER entries_append_only BEFORE UPDATE OR DELETE ON entries
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER entries_no_truncate BEFORE TRUNCATE ON entries
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
CREATE TRIGGER lots_append_only BEFORE UPDATE OR DELETE ON lots
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER lots_no_truncate BEFORE TRUNCATE ON lots
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
CREATE TRIGGER commands_append_only BEFORE UPDATE OR DELETE ON commands
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER commands_no_truncate BEFORE TRUNCATE ON commands
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
