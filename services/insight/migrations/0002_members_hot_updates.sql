-- Every batch rewrites the balance of each member it touches. An index on the balance made each of those updates
-- write both indexes anew (no HOT update): most of the members upsert's cost. No read needs it: the balance bands
-- count a programme's members in one pass and a band's CSV pages by member id (the primary key). Free space on
-- each page lets the update stay on it (HOT).
DROP INDEX IF EXISTS members_balance;
ALTER TABLE members SET (fillfactor = 80);
