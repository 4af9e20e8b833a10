-- What the kit tests' handler saw: one row per event it applied, written in the batch's transaction.
CREATE TABLE IF NOT EXISTS seen (event_id text PRIMARY KEY, type text NOT NULL);
