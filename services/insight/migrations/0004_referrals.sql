-- Each referral's decision as insight last saw it: the referral service announces a referral again when its points
-- or its reason change, and a referral counts once, as what it became.
CREATE TABLE referrals (
    program_id text NOT NULL,
    referral_id text NOT NULL,
    outcome text NOT NULL,  -- rewarded | rejected
    reason text NOT NULL DEFAULT '',
    decided_on date NOT NULL,
    revoked boolean NOT NULL DEFAULT false,
    PRIMARY KEY (program_id, referral_id)
);
