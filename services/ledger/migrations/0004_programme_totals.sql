-- Each programme's points in and out of member accounts, by entry kind, kept exact per batch (one statement per
-- batch, never per entry) and checked against the entries by `jifen ledger verify`. The programme summary and the
-- programme health metrics read it instead of scanning every entry.
CREATE TABLE IF NOT EXISTS programme_totals (
    program_id text   NOT NULL,
    kind       text   NOT NULL,
    entries    bigint NOT NULL,
    points_in  bigint NOT NULL,  -- points this kind of entry brought into member accounts
    points_out bigint NOT NULL,  -- points it took out of them
    PRIMARY KEY (program_id, kind)
);

INSERT INTO programme_totals (program_id, kind, entries, points_in, points_out)
SELECT program_id, kind, count(*),
       coalesce(sum(amount) FILTER (WHERE to_account_id = account_id), 0),
       coalesce(sum(amount) FILTER (WHERE to_account_id <> account_id), 0)
FROM entries GROUP BY program_id, kind
ON CONFLICT DO NOTHING;
