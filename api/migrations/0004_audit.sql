-- Identity: when each credential was last used, and an append-only audit log of admin, ops and
-- finance actions (who, what, when, from where), read through `GET /v1/audit`.

-- Last authentication with an API key / last verification (or live session) of an authtoken,
-- written at most once a minute per credential.
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS last_used_at TIMESTAMPTZ;
ALTER TABLE authtokens ADD COLUMN IF NOT EXISTS last_used_at TIMESTAMPTZ;

-- No foreign keys on purpose: deleting an account (which cascades to its keys) must neither
-- fail because of nor erase the history of what was done.
CREATE TABLE audit_log (
    id               BIGSERIAL PRIMARY KEY,
    at               TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- The API key used; NULL for internal or system actions.
    actor_key_id     UUID,
    actor_role       TEXT NOT NULL,
    actor_account_id UUID,
    -- `account.create`, `authtoken.revoke`, `session.kick`, `usage.read`, ...
    action           TEXT NOT NULL,
    -- The id acted on; NULL when there is none (a refused creation, a listing).
    target           TEXT,
    -- The TCP peer's address.
    source_ip        TEXT,
    -- `ok`, or the error code the caller was answered (`forbidden`, `not_found`, ...).
    outcome          TEXT NOT NULL,
    detail           JSONB NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_log_actor ON audit_log(actor_key_id, id);
CREATE INDEX audit_log_action ON audit_log(action, id);
CREATE INDEX audit_log_at ON audit_log(at);

-- Append-only, enforced by the database: any UPDATE, DELETE or TRUNCATE raises (statement
-- triggers, so even one touching no row), whatever the api does.
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_log_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
