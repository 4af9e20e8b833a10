-- Insight: a projection of the public topics, per programme and local day, plus the little per-member state the
-- KPIs need. Every row is additive or last-writer-wins by a sequence, so a replay through the inbox changes nothing.

-- The sums each KPI needs, per programme and local day (the programme's time zone): `metric` names what is summed
-- (in:<entry kind>, out:<entry kind>, issued_rule, redeemed_reward, purchase, refund, task, checkin, ...), `dim` the
-- rule, reward, channel, tier, task type or reason it is summed by ('' when none).
CREATE TABLE day_facts (
    program_id text NOT NULL,
    day date NOT NULL,
    metric text NOT NULL,
    dim text NOT NULL DEFAULT '',
    points bigint NOT NULL DEFAULT 0,
    money numeric NOT NULL DEFAULT 0,
    n bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (program_id, day, metric, dim)
);

-- What a member did on a local day: active members, leaderboards and the abuse watch of any period come from here.
CREATE TABLE member_days (
    program_id text NOT NULL,
    day date NOT NULL,
    member_id text NOT NULL,
    earned bigint NOT NULL DEFAULT 0,
    redeemed bigint NOT NULL DEFAULT 0,
    received bigint NOT NULL DEFAULT 0,
    spend numeric NOT NULL DEFAULT 0,
    purchases integer NOT NULL DEFAULT 0,
    tasks integer NOT NULL DEFAULT 0,
    checkins integer NOT NULL DEFAULT 0,
    redeemed_soon integer NOT NULL DEFAULT 0,
    PRIMARY KEY (program_id, day, member_id)
);
CREATE INDEX member_days_member ON member_days (program_id, member_id, day);

-- A member's balance (the ledger's balance_after of its newest entry), tier and the facts the segments need.
CREATE TABLE members (
    program_id text NOT NULL,
    member_id text NOT NULL,
    balance bigint NOT NULL DEFAULT 0,
    seq bigint NOT NULL DEFAULT 0,
    tier text,
    enrolled_at timestamptz,
    last_active_at timestamptz,
    last_earned_at timestamptz,
    opted_out boolean NOT NULL DEFAULT false,
    PRIMARY KEY (program_id, member_id)
);
CREATE INDEX members_balance ON members (program_id, balance);

-- Opaque fingerprint hashes from enrolments: many members sharing one is on the abuse watch.
CREATE TABLE fingerprints (
    program_id text NOT NULL,
    kind text NOT NULL,
    hash text NOT NULL,
    member_id text NOT NULL,
    PRIMARY KEY (program_id, kind, hash, member_id)
);

-- Orders, for the revenue a rule's points paid on and the GMV touched by points (paid in part with points or a
-- coupon). `related` is set by a points payment or a coupon use, which may arrive before the purchase.
CREATE TABLE orders (
    program_id text NOT NULL,
    order_id text NOT NULL,
    event_id text,
    day date,
    total numeric,
    refunded numeric NOT NULL DEFAULT 0,
    related boolean NOT NULL DEFAULT false,
    PRIMARY KEY (program_id, order_id)
);
CREATE INDEX orders_event ON orders (event_id);

-- The points each rule paid on each source event: a rebate's cost against the revenue of the baskets it paid on.
CREATE TABLE rule_baskets (
    program_id text NOT NULL,
    rule_id text NOT NULL,
    source_event_id text NOT NULL,
    day date NOT NULL,
    points bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (program_id, rule_id, source_event_id)
);

-- Referees who qualified, for their spend in the 90 days after.
CREATE TABLE referees (
    program_id text NOT NULL,
    member_id text NOT NULL,
    qualified_on date NOT NULL,
    PRIMARY KEY (program_id, member_id)
);

-- Cohorts by issue month: what each month's issue became in each later month (redeemed, expired, reversed, ...).
-- `member_cohorts` holds each member's points still open per issue month, spent oldest first.
CREATE TABLE cohort_facts (
    program_id text NOT NULL,
    cohort date NOT NULL,
    month date NOT NULL,
    outcome text NOT NULL,
    points bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (program_id, cohort, month, outcome)
);
CREATE TABLE member_cohorts (
    program_id text NOT NULL,
    member_id text NOT NULL,
    cohort date NOT NULL,
    open bigint NOT NULL,
    PRIMARY KEY (program_id, member_id, cohort)
);
-- The issue month of each lot an earn made, so its expiry is charged to its own cohort.
CREATE TABLE lot_cohorts (
    lot_id bigint PRIMARY KEY,
    cohort date NOT NULL
);

-- The abuse watch's last findings, replaced by each round.
CREATE TABLE watch (
    program_id text NOT NULL,
    member_id text NOT NULL,
    reason text NOT NULL,
    detail text NOT NULL,
    found_at timestamptz NOT NULL,
    PRIMARY KEY (program_id, member_id, reason)
);
