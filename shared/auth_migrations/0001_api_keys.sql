-- API keys of every service's HTTP side. The secret is never stored: only its SHA-256, which is enough for a key of
-- 256 random bits (nothing to guess, so no slow hash is needed) and useless to someone who reads this table.
CREATE TABLE IF NOT EXISTS api_keys (
    key_id      text PRIMARY KEY,             -- the public part of the key, shown by `jifen keys list`
    name        text NOT NULL,
    scopes      text[] NOT NULL,
    secret_hash bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
