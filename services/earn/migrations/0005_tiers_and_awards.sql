-- Each member's tiers as the tiers service announced them, with the time each took effect: a purchase is judged
-- by the tier held when it happened, so history is kept, not overwritten.
CREATE TABLE member_tiers (
    program_id   text        NOT NULL,
    member_id    text        NOT NULL,
    effective_at timestamptz NOT NULL,
    event_id     text        NOT NULL,
    tier         text        NOT NULL,
    multiplier   numeric     NOT NULL CHECK (multiplier >= 1),
    PRIMARY KEY (program_id, member_id, effective_at, event_id)
);

-- Manual awards paid, by the award's own id: a form resubmitted with a new event id is not paid twice.
CREATE TABLE manual_awards (
    program_id text        NOT NULL,
    award_id   text        NOT NULL,
    event_id   text        NOT NULL,
    member_id  text        NOT NULL,
    points     bigint      NOT NULL CHECK (points > 0),
    source     text        NOT NULL,
    awarded_by text        NOT NULL,
    reason     text        NOT NULL,
    at         timestamptz NOT NULL,
    PRIMARY KEY (program_id, award_id)
);
