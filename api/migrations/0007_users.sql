-- People: a user has one role. Developers belong to an account (and act only on it); ops,
-- finance and admin are platform staff with no account. API keys may belong to a user: they
-- carry the user's role and account, and stop working when the user is disabled.
CREATE TABLE users (
    id          UUID PRIMARY KEY,
    account_id  UUID REFERENCES accounts(id) ON DELETE CASCADE,
    -- Stored lower-cased; unique across the platform.
    email       TEXT NOT NULL UNIQUE CHECK (email = lower(email) AND email LIKE '%_@_%'),
    name        TEXT NOT NULL DEFAULT '',
    role        TEXT NOT NULL CHECK (role IN ('developer', 'ops', 'finance', 'admin')),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    disabled_at TIMESTAMPTZ,
    CHECK ((role = 'developer') = (account_id IS NOT NULL))
);
CREATE INDEX users_account ON users(account_id);

ALTER TABLE api_keys ADD COLUMN user_id UUID REFERENCES users(id) ON DELETE CASCADE;
CREATE INDEX api_keys_user ON api_keys(user_id);

-- Who acted, when the key belongs to a user (the audit log keeps no foreign keys: history
-- outlives users).
ALTER TABLE audit_log ADD COLUMN actor_user_id UUID;
