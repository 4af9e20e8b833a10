-- The archive of inbound events (services/insight/archive.py): every event of the inbound topics, the tiers'
-- announcements and the ledger's entries, as its CloudEvent JSON, kept past the topics' retention for the what-if.
-- One chunk per consumed batch per (programme, month, topic): `month` is the first day of the UTC month of the
-- events' `time`; `body` is zlib (level 6) of their newline-delimited JSON, sorted by (time, event id), and
-- `raw_bytes` its length before compression. Chunks are only inserted, and deleted whole by the `archive-prune` job
-- once `last_at` is older than JIFEN_ARCHIVE_RETENTION_DAYS.
CREATE TABLE archive_chunks (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    program_id text NOT NULL,
    month date NOT NULL,
    topic text NOT NULL,
    first_at timestamptz NOT NULL,
    last_at timestamptz NOT NULL,
    events integer NOT NULL,
    raw_bytes integer NOT NULL,
    body bytea NOT NULL,
    CHECK (first_at <= last_at AND events > 0)
);
-- A read of a period takes the programme's chunks in first_at order; the prune looks by last_at.
CREATE INDEX archive_chunks_read ON archive_chunks (program_id, first_at);
CREATE INDEX archive_chunks_prune ON archive_chunks (last_at);
