-- Reserved names, custom domains, traffic policies, and the change feed relays subscribe to
-- (`RelayFeed.Watch`, served by the api from `pg_notify('burrow_feed', ...)`).

-- A label under the relay's base domain that only one account may bind.
CREATE TABLE reserved_names (
    name       TEXT PRIMARY KEY
               CHECK (name ~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$'),
    account_id UUID NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX reserved_names_account ON reserved_names(account_id);

-- A hostname an account brings. It is `pending` until a TXT record
-- `_burrow-challenge.<domain>` holding `verification_token` is seen, then `verified`.
CREATE TABLE custom_domains (
    domain             TEXT PRIMARY KEY CHECK (domain <> '' AND length(domain) <= 253),
    account_id         UUID NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    verification_token TEXT NOT NULL,
    status             TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'verified')),
    verified_at        TIMESTAMPTZ,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK ((status = 'verified') = (verified_at IS NOT NULL))
);
CREATE INDEX custom_domains_account ON custom_domains(account_id);

-- Outbox of domain changes for the certificate workflow: written in the transaction that makes
-- the change, marked `consumed_at` by whoever acts on it. No foreign key: an event outlives the
-- account it was about.
CREATE TABLE domain_events (
    id          BIGSERIAL PRIMARY KEY,
    kind        TEXT NOT NULL CHECK (kind IN ('domain.verified', 'domain.removed')),
    domain      TEXT NOT NULL,
    account_id  UUID NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    consumed_at TIMESTAMPTZ
);
CREATE INDEX domain_events_pending ON domain_events(id) WHERE consumed_at IS NULL;

-- The current traffic policy of an account's endpoint: a label ("demo"), a custom domain
-- ("app.example.com") or "tcp-<port>". `source` is the document as submitted (YAML or JSON),
-- `document` its canonical JSON from `burrow_policy`.
CREATE TABLE endpoint_policies (
    account_id UUID NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    endpoint   TEXT NOT NULL,
    version    BIGINT NOT NULL CHECK (version >= 1),
    source     TEXT NOT NULL,
    document   JSONB NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, endpoint)
);

-- Every version ever set (document NULL = the policy was removed). Versions keep counting
-- across a removal, so a relay never sees a version go backwards. Append-only.
CREATE TABLE endpoint_policy_versions (
    account_id   UUID NOT NULL,
    endpoint     TEXT NOT NULL,
    version      BIGINT NOT NULL CHECK (version >= 1),
    source       TEXT,
    document     JSONB,
    actor_key_id UUID,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, endpoint, version)
);

CREATE FUNCTION endpoint_policy_versions_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'endpoint_policy_versions is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER endpoint_policy_versions_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON endpoint_policy_versions
    FOR EACH STATEMENT EXECUTE FUNCTION endpoint_policy_versions_append_only();

-- The feed: one small JSON notification per change on channel `burrow_feed` (delivered at
-- commit, in commit order). Payloads carry keys, not documents (NOTIFY payloads are limited to
-- 8000 bytes); the api's listener reads what it needs and fans the change out to relays.
CREATE FUNCTION burrow_feed_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    payload JSONB;
BEGIN
    IF TG_TABLE_NAME = 'reserved_names' THEN
        IF TG_OP = 'DELETE' THEN
            payload := jsonb_build_object('kind', 'name', 'name', OLD.name, 'account_id', '');
        ELSE
            payload := jsonb_build_object('kind', 'name', 'name', NEW.name,
                                          'account_id', NEW.account_id::text);
        END IF;
    ELSIF TG_TABLE_NAME = 'custom_domains' THEN
        -- Only verified domains are claims relays act on.
        IF TG_OP = 'DELETE' THEN
            IF OLD.status <> 'verified' THEN RETURN NULL; END IF;
            payload := jsonb_build_object('kind', 'domain', 'domain', OLD.domain, 'account_id', '');
        ELSIF NEW.status = 'verified'
              AND (TG_OP = 'INSERT' OR OLD.status IS DISTINCT FROM 'verified'
                   OR OLD.account_id IS DISTINCT FROM NEW.account_id) THEN
            payload := jsonb_build_object('kind', 'domain', 'domain', NEW.domain,
                                          'account_id', NEW.account_id::text);
        ELSE
            RETURN NULL;
        END IF;
    ELSIF TG_TABLE_NAME = 'endpoint_policy_versions' THEN
        payload := jsonb_build_object('kind', 'policy', 'account_id', NEW.account_id::text,
                                      'endpoint', NEW.endpoint, 'version', NEW.version);
    ELSIF TG_TABLE_NAME = 'accounts' THEN
        IF TG_OP = 'UPDATE' AND OLD.plan IS NOT DISTINCT FROM NEW.plan THEN RETURN NULL; END IF;
        payload := jsonb_build_object('kind', 'account', 'account_id', NEW.id::text);
    ELSIF TG_TABLE_NAME = 'plans' THEN
        payload := jsonb_build_object('kind', 'plan', 'plan', NEW.name);
    ELSE
        RETURN NULL;
    END IF;
    PERFORM pg_notify('burrow_feed', payload::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER reserved_names_feed AFTER INSERT OR DELETE ON reserved_names
    FOR EACH ROW EXECUTE FUNCTION burrow_feed_notify();
CREATE TRIGGER custom_domains_feed AFTER INSERT OR UPDATE OR DELETE ON custom_domains
    FOR EACH ROW EXECUTE FUNCTION burrow_feed_notify();
CREATE TRIGGER endpoint_policies_feed AFTER INSERT ON endpoint_policy_versions
    FOR EACH ROW EXECUTE FUNCTION burrow_feed_notify();
-- Plan changes by the api (`PUT /v1/accounts/{id}/plan`) and by the worker's activities
-- (provider webhooks) alike; new accounts too, so relays know every account's plan.
CREATE TRIGGER accounts_plan_feed AFTER INSERT OR UPDATE OF plan ON accounts
    FOR EACH ROW EXECUTE FUNCTION burrow_feed_notify();
-- A plan's limits edited in place reach every account on it.
CREATE TRIGGER plans_feed AFTER INSERT OR UPDATE ON plans
    FOR EACH ROW EXECUTE FUNCTION burrow_feed_notify();
