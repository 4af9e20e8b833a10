-- Found by `jifen bench --mode ledger`: every credit inserts a lot, and lots_account (account_id, available_at)
-- is no longer read by anything (open lots are found through lots_account_id), so it only cost writes.
DROP INDEX lots_account;
-- The account tip is updated once per batch per member: room on the page lets PostgreSQL update it in place
-- (a HOT update, no index writes) instead of writing a new tuple elsewhere and new index entries for it.
ALTER TABLE accounts SET (fillfactor = 70);
