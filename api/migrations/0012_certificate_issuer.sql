-- The ACME directory a certificate was issued by: revoking one takes the account at that CA,
-- so a certificate from another directory (the worker since moved to a different CA) is left
-- to expire. NULL for certificates stored before this column (revocation tries the current CA).
ALTER TABLE certificates ADD COLUMN directory_url TEXT;
