-- What each member of an experiment did while it ran: the member's arm (shared/experiments.arm_of, the hash every
-- service uses) and the sums the arms are compared on. A member is in an experiment once seen with an event in its
-- window [starts, ends); only the events in the window are summed. Every column is additive (first_seen the least),
-- so a replay through the inbox changes nothing.
CREATE TABLE experiment_members (
    program_id text NOT NULL,
    experiment_id text NOT NULL,
    member_id text NOT NULL,
    arm text NOT NULL,
    first_seen timestamptz NOT NULL,
    earned bigint NOT NULL DEFAULT 0,              -- earn credits, referral rewards included
    referral_points bigint NOT NULL DEFAULT 0,     -- the earn credits of referral rewards (rule referral-*)
    spend numeric NOT NULL DEFAULT 0,              -- purchases less refunds
    orders integer NOT NULL DEFAULT 0,             -- purchases
    redemptions integer NOT NULL DEFAULT 0,        -- completed less cancelled
    redeemed bigint NOT NULL DEFAULT 0,            -- points of those, less what cancellations gave back
    referrals_judged integer NOT NULL DEFAULT 0,   -- as the referrer: referrals rewarded or rejected
    referrals_rewarded integer NOT NULL DEFAULT 0,
    PRIMARY KEY (program_id, experiment_id, member_id)
);
