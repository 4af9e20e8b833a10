-- The rebates of a period read the baskets of its days: without this they read every basket the programme ever had
-- (one per earn credit; 700,000 in a year of a 1,000,000-entry programme) even for the default 30 days.
CREATE INDEX IF NOT EXISTS rule_baskets_day ON rule_baskets (program_id, day);
