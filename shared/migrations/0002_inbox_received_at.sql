-- The inbox prune job walks the inbox oldest first and deletes what is older than the retention window.
CREATE INDEX IF NOT EXISTS inbox_received_at ON inbox (received_at);
