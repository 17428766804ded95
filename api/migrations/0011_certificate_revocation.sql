-- When a verified domain is removed, its certificates that are still valid are revoked at the CA
-- (reason cessationOfOperation); `revoked_at` records when, so a run replayed later does not ask
-- again.
ALTER TABLE certificates ADD COLUMN revoked_at TIMESTAMPTZ;
