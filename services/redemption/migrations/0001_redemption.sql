-- The redemption service's state: its projection of members (tiers, blocks), the stock of rewards, redemptions and
-- their coupons, and points payments with the refunds that gave points back. Points themselves are the ledger's.

-- What redemption knows of a member, from jifen.tiers and jifen.members (each part kept by the time of the event
-- that set it, so an older event arriving late changes nothing). A redemption request locks its member's row:
-- the limits are counted and the new redemption recorded one request at a time per member.
CREATE TABLE IF NOT EXISTS members (
    program_id   text        NOT NULL,
    member_id    text        NOT NULL,
    tier         text,
    tier_at      timestamptz,
    blocked      boolean     NOT NULL DEFAULT false,
    block_reason text,
    block_at     timestamptz,
    PRIMARY KEY (program_id, member_id)
);

-- The running count of a reward with stock: made from the catalogue's initial stock on first use, taken by
-- redemptions in the transaction that records them, given back by rejections and cancellations.
CREATE TABLE IF NOT EXISTS stock (
    program_id text    NOT NULL,
    reward_id  text    NOT NULL,
    initial    integer NOT NULL CHECK (initial >= 0),
    remaining  bigint  NOT NULL CHECK (remaining >= 0),
    PRIMARY KEY (program_id, reward_id)
);

-- Stock added by hand (admin), once per idempotency key.
CREATE TABLE IF NOT EXISTS stock_additions (
    program_id      text        NOT NULL,
    reward_id       text        NOT NULL,
    idempotency_key text        NOT NULL,
    quantity        integer     NOT NULL CHECK (quantity > 0),
    added_at        timestamptz NOT NULL,
    added_by        text        NOT NULL,  -- the API key's id
    PRIMARY KEY (program_id, reward_id, idempotency_key)
);

CREATE TABLE IF NOT EXISTS redemptions (
    redemption_id   text        PRIMARY KEY,
    program_id      text        NOT NULL,
    member_id       text        NOT NULL,
    reward_id       text        NOT NULL,
    kind            text        NOT NULL,
    quantity        integer     NOT NULL CHECK (quantity > 0),
    points          bigint      NOT NULL CHECK (points >= 0),
    tier            text,
    terms           jsonb,                 -- the reward as redeemed, and the programme's time zone
    status          text        NOT NULL CHECK (status IN ('pending', 'completed', 'rejected', 'cancelled')),
    reason          text,
    detail          text,
    idempotency_key text        NOT NULL,
    request_hash    bytea       NOT NULL,
    stock_taken     integer     NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL,
    held_at         timestamptz,           -- the ledger placed the hold
    hold_expires_at timestamptz,
    settled_at      timestamptz,           -- completed or rejected
    cancelled_at    timestamptz,
    cancel_error    text,                  -- the ledger refused the cancellation's reversal (a person must look)
    fulfilment      text,                  -- goods, services, cash back: `to_fulfil` once paid for
    UNIQUE (program_id, idempotency_key)
);
-- A member's redemptions that count towards limits, newest last.
CREATE INDEX IF NOT EXISTS redemptions_usage ON redemptions (program_id, member_id, created_at)
    WHERE status IN ('pending', 'completed');
CREATE INDEX IF NOT EXISTS redemptions_pending ON redemptions (created_at) WHERE status = 'pending';

-- A coupon: found by the hash of its code; the sealed code is dropped once the redemption's answer showed it.
CREATE TABLE IF NOT EXISTS coupons (
    coupon_id     text          PRIMARY KEY,
    redemption_id text          NOT NULL UNIQUE REFERENCES redemptions,
    program_id    text          NOT NULL,
    member_id     text          NOT NULL,
    code_hash     bytea         NOT NULL UNIQUE,
    code_sealed   bytea,
    code_shown_at timestamptz,
    value         numeric       NOT NULL CHECK (value > 0),
    currency      text          NOT NULL,
    issued_at     timestamptz   NOT NULL,
    expires_at    timestamptz   NOT NULL,
    state         text          NOT NULL CHECK (state IN ('active', 'used', 'void')),
    used_order_id text,
    used_at       timestamptz,
    voided_at     timestamptz
);

CREATE TABLE IF NOT EXISTS payments (
    payment_id      text        PRIMARY KEY,
    program_id      text        NOT NULL,
    member_id       text        NOT NULL,
    order_id        text        NOT NULL,
    points          bigint      NOT NULL CHECK (points > 0),
    basket_total    numeric     NOT NULL CHECK (basket_total > 0),
    currency        text        NOT NULL,
    points_per_unit numeric     NOT NULL CHECK (points_per_unit > 0),
    decimals        integer     NOT NULL,
    status          text        NOT NULL CHECK (status IN ('pending', 'authorised', 'capturing', 'captured',
                                                           'voiding', 'voided', 'expired', 'rejected')),
    reason          text,
    detail          text,
    idempotency_key text        NOT NULL,
    request_hash    bytea       NOT NULL,
    created_at      timestamptz NOT NULL,
    expires_at      timestamptz,
    capture_points  bigint,
    captured_points bigint      NOT NULL DEFAULT 0,
    settled_at      timestamptz,
    UNIQUE (program_id, idempotency_key)
);
-- One live payment per order: what a refund of the order gives back is read from it.
CREATE UNIQUE INDEX IF NOT EXISTS payments_live_order ON payments (program_id, order_id)
    WHERE status NOT IN ('voided', 'expired', 'rejected');
CREATE INDEX IF NOT EXISTS payments_pending ON payments (created_at) WHERE status IN ('pending', 'capturing', 'voiding');

-- Refunds of an order paid partly with points, once each; `points` is what the refund gave back (null until the
-- payment is captured).
CREATE TABLE IF NOT EXISTS payment_refunds (
    payment_id  text        NOT NULL REFERENCES payments,
    refund_id   text        NOT NULL,
    total       numeric     NOT NULL,
    points      bigint,
    refunded_at timestamptz NOT NULL,
    seq         bigserial,
    PRIMARY KEY (payment_id, refund_id)
);
