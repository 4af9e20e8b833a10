-- The tiers projection: what each member contributed to the metrics, their tier now, and every change announced.
-- All of it is rebuilt by replaying the topics it is made from (`jifen tiers rebuild`).

-- One row per event that moves a metric: an earn credit (`entry:<id>`), a reversal of one (points < 0, at the time
-- of the credit it corrects), a purchase (`order:<id>`), a refund (`refund:<id>`, at the time of its order).
-- The key makes a replayed event a no-op, with or without the inbox.
CREATE TABLE IF NOT EXISTS contributions (
    program_id  text        NOT NULL,
    member_id   text        NOT NULL,
    key         text        NOT NULL,
    ref         text,                  -- what a reversal or refund corrects (`entry:<id>`, `order:<id>`)
    occurred_at timestamptz NOT NULL,  -- the time it counts at
    points      bigint      NOT NULL DEFAULT 0,
    spend       numeric     NOT NULL DEFAULT 0,
    purchases   integer     NOT NULL DEFAULT 0,
    PRIMARY KEY (program_id, key)
);
CREATE INDEX IF NOT EXISTS contributions_member ON contributions (program_id, member_id, occurred_at);

-- A member's tier now. `due_at` is the next scheduled transition (a review, a manual tier's end) for the job.
CREATE TABLE IF NOT EXISTS members (
    program_id    text        NOT NULL,
    member_id     text        NOT NULL,
    tier          text        NOT NULL,
    since         timestamptz,
    valid_until   timestamptz,
    anchor        timestamptz,          -- enrolment: where anniversary years start
    manual        boolean     NOT NULL DEFAULT false,
    before        jsonb,                -- what the last upgrade replaced, for a reversal to undo it
    upgraded_from timestamptz,          -- the window in which the last upgrade was crossed
    upgraded_to   timestamptz,
    warned_for    timestamptz,          -- the tier period a warning was sent for
    changes       integer     NOT NULL DEFAULT 0,
    due_at        timestamptz,
    PRIMARY KEY (program_id, member_id)
);
CREATE INDEX IF NOT EXISTS members_due ON members (due_at) WHERE due_at IS NOT NULL;

-- Every change announced on jifen.tiers, in order per member (seq is the announcement's id).
CREATE TABLE IF NOT EXISTS changes (
    program_id       text        NOT NULL,
    member_id        text        NOT NULL,
    seq              integer     NOT NULL,
    at               timestamptz NOT NULL,
    tier             text        NOT NULL,
    previous_tier    text        NOT NULL,
    reason           text        NOT NULL,
    detail           text,
    valid_until      timestamptz,
    qualifying_value numeric     NOT NULL,
    PRIMARY KEY (program_id, member_id, seq)
);

-- Tiers set by hand, once per event (a replay is a no-op).
CREATE TABLE IF NOT EXISTS assignments (
    event_id    text PRIMARY KEY,
    program_id  text        NOT NULL,
    member_id   text        NOT NULL,
    tier        text        NOT NULL,
    until       timestamptz,
    at          timestamptz NOT NULL,
    assigned_by text        NOT NULL,
    reason      text        NOT NULL
);
