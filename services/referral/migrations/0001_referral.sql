-- The referral service's own record of what it reads from the topics (members and their fingerprints, purchases,
-- refunds), the referrals with their verdicts, the credits it asked of the ledger, and members' referral codes.
-- Facts are stored by key (a replay is a no-op, with or without the inbox); where two events claim one key, the
-- earlier by event time wins, so the outcome does not depend on which arrived first.

-- One code per member, issued on first ask; unique in the programme.
CREATE TABLE IF NOT EXISTS codes (
    program_id text        NOT NULL,
    member_id  text        NOT NULL,
    code       text        NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (program_id, member_id),
    UNIQUE (program_id, code)
);

-- Every member seen (enrolled, or buying): the first purchase ever seen decides `existing_customer`.
CREATE TABLE IF NOT EXISTS members (
    program_id        text NOT NULL,
    member_id         text NOT NULL,
    enrolled_at       timestamptz,
    first_purchase_at timestamptz,
    PRIMARY KEY (program_id, member_id)
);

-- Opaque hashes from jifen.member.enrolled.v1, compared and never shown.
CREATE TABLE IF NOT EXISTS fingerprints (
    program_id text NOT NULL,
    kind       text NOT NULL,
    hash       text NOT NULL,
    member_id  text NOT NULL,
    PRIMARY KEY (program_id, kind, hash, member_id)
);
CREATE INDEX IF NOT EXISTS fingerprints_member ON fingerprints (program_id, member_id);

CREATE TABLE IF NOT EXISTS purchases (
    program_id  text        NOT NULL,
    order_id    text        NOT NULL,
    member_id   text        NOT NULL,
    event_id    text        NOT NULL,
    occurred_at timestamptz NOT NULL,
    currency    text        NOT NULL,
    total       numeric     NOT NULL,
    PRIMARY KEY (program_id, order_id)
);
CREATE INDEX IF NOT EXISTS purchases_member ON purchases (program_id, member_id, occurred_at);

-- Refunds by their own id; one may arrive before the order it refunds.
CREATE TABLE IF NOT EXISTS refunds (
    program_id  text        NOT NULL,
    refund_id   text        NOT NULL,
    order_id    text        NOT NULL,
    member_id   text        NOT NULL,
    event_id    text        NOT NULL,
    occurred_at timestamptz NOT NULL,
    total       numeric     NOT NULL,
    PRIMARY KEY (program_id, refund_id)
);
CREATE INDEX IF NOT EXISTS refunds_order ON refunds (program_id, order_id);

-- A referral (one per programme, referrer and referee) and its verdict now. `grant_*` count each side's grants of
-- points (a side's grant is reversed when the verdict stops paying it as it is, and a new one credited), `live_*`
-- are the points in force, `announced` the outcomes published; `due_at` is when the expiry job must look at it.
CREATE TABLE IF NOT EXISTS referrals (
    referral_id   text PRIMARY KEY,
    program_id    text        NOT NULL,
    referrer_id   text        NOT NULL,
    referee_id    text        NOT NULL,
    accepted_at   timestamptz NOT NULL,
    via           text        NOT NULL,   -- accepted (jifen.referral.accepted.v1) or enrolled (a referral code)
    event_id      text        NOT NULL,
    status        text        NOT NULL DEFAULT 'new',
    reason        text,
    detail        text        NOT NULL DEFAULT '',
    verdict_at    timestamptz,
    order_id      text,
    qualified_at  timestamptz,
    position      integer,
    rule_version  integer,
    available_at  timestamptz,
    grant_referrer integer    NOT NULL DEFAULT 0,
    grant_referee integer     NOT NULL DEFAULT 0,
    grant_bonus   integer     NOT NULL DEFAULT 0,
    live_referrer integer     NOT NULL DEFAULT 0,
    live_referee  integer     NOT NULL DEFAULT 0,
    live_bonus    integer     NOT NULL DEFAULT 0,
    announced     integer     NOT NULL DEFAULT 0,
    decision      text,
    decided_at    timestamptz,
    decided_by    text,
    due_at        timestamptz,
    UNIQUE (program_id, referee_id, referrer_id)
);
CREATE INDEX IF NOT EXISTS referrals_referrer ON referrals (program_id, referrer_id);
CREATE INDEX IF NOT EXISTS referrals_referee ON referrals (program_id, referee_id, accepted_at);
CREATE INDEX IF NOT EXISTS referrals_due ON referrals (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS referrals_status ON referrals (program_id, status);

-- Every credit asked of the ledger, by its idempotency key, with what became of it (`state`: sent, posted,
-- refused) and of its reversal (`reverse`: none, wanted (waiting for the credit's entry), sent, done, failed).
CREATE TABLE IF NOT EXISTS credits (
    key            text PRIMARY KEY,
    program_id     text        NOT NULL,
    referral_id    text        NOT NULL,
    grant_no       integer     NOT NULL,
    role           text        NOT NULL,
    member_id      text        NOT NULL,
    amount         integer     NOT NULL,
    occurred_at    timestamptz NOT NULL,
    state          text        NOT NULL DEFAULT 'sent',
    reverse        text        NOT NULL DEFAULT 'none',
    reverse_at     timestamptz,
    reverse_reason text,
    reverse_source text
);
CREATE INDEX IF NOT EXISTS credits_referral ON credits (referral_id, role, grant_no);
