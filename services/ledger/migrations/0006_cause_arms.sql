-- An entry's cause names the member's experiment arms (experiment id -> arm) and the tier earn applied to a
-- purchase, so the ledger itself says which arm and tier judged every entry (issue 19: experiments and what-if).
-- Null: none known (every entry posted before these existed, and those of members in no experiment).
ALTER TABLE entries ADD COLUMN IF NOT EXISTS arms jsonb;
ALTER TABLE entries ADD COLUMN IF NOT EXISTS tier text;
