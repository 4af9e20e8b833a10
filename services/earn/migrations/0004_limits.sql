-- Points granted under a cap (per member, rule and period) and under the programme's budget (per period).
CREATE TABLE points_usage (
    program_id text   NOT NULL,
    member_id  text   NOT NULL,
    rule_id    text   NOT NULL,
    period     text   NOT NULL,
    points     bigint NOT NULL CHECK (points >= 0),
    PRIMARY KEY (program_id, member_id, rule_id, period)
);

CREATE TABLE budgets (
    program_id text   NOT NULL,
    period     text   NOT NULL,
    points     bigint NOT NULL CHECK (points >= 0),
    PRIMARY KEY (program_id, period)
);
