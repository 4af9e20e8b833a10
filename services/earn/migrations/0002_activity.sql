-- Check-ins (once per member per day) and how much of each capped rule a member used per period.
CREATE TABLE checkins (
    program_id text NOT NULL,
    member_id  text NOT NULL,
    day        date NOT NULL,
    event_id   text NOT NULL,
    PRIMARY KEY (program_id, member_id, day)
);

CREATE TABLE rule_usage (
    program_id text    NOT NULL,
    member_id  text    NOT NULL,
    rule_id    text    NOT NULL,
    period     text    NOT NULL,  -- 2026-11-23 (day), 2026-11-23 (week from Monday), 2026-11, 2026, ever
    used       integer NOT NULL CHECK (used > 0),
    PRIMARY KEY (program_id, member_id, rule_id, period)
);

-- What a cap cut, and why: an event that earned nothing because its rule's cap was full.
CREATE TABLE capped (
    program_id text        NOT NULL,
    member_id  text        NOT NULL,
    rule_id    text        NOT NULL,
    event_id   text        NOT NULL PRIMARY KEY,
    period     text        NOT NULL,
    why        text        NOT NULL,
    at         timestamptz NOT NULL
);
