-- Rejected redemptions are pruned once past their retention (jobs.py `prune_rejected`), oldest first.
CREATE INDEX IF NOT EXISTS redemptions_rejected ON redemptions (settled_at) WHERE status = 'rejected';
-- A shown code's sealed copy is kept for its reveal window only (jobs.py `forget_codes`).
CREATE INDEX IF NOT EXISTS coupons_sealed_shown ON coupons (code_shown_at) WHERE code_sealed IS NOT NULL;
