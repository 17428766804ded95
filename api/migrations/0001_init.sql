-- Accounts, credentials, provider events and the workflow mirror the console reads.

CREATE TABLE accounts (
    id                   UUID PRIMARY KEY,
    name                 TEXT NOT NULL,
    plan                 TEXT NOT NULL DEFAULT 'free',
    -- The payment provider's customer id (e.g. cus_...), set when billing is attached.
    provider_customer_id TEXT UNIQUE,
    created_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at           TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Agent authtokens: only the SHA-256 of the secret is stored.
CREATE TABLE authtokens (
    id          UUID PRIMARY KEY,
    account_id  UUID NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    token_hash  TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at  TIMESTAMPTZ
);
CREATE INDEX authtokens_account ON authtokens(account_id);

-- API keys for people and scripts; role decides what they may do.
CREATE TABLE api_keys (
    id          UUID PRIMARY KEY,
    account_id  UUID REFERENCES accounts(id) ON DELETE CASCADE,
    role        TEXT NOT NULL CHECK (role IN ('developer', 'ops', 'finance', 'admin')),
    key_hash    TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at  TIMESTAMPTZ
);

-- Provider webhook events, stored once by the provider's event id.
CREATE TABLE provider_events (
    id          TEXT PRIMARY KEY,
    event_type  TEXT NOT NULL,
    payload     JSONB NOT NULL,
    received_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Set when a workflow was started for the event.
    workflow_id TEXT,
    -- 'received' | 'applied' | 'ignored'
    status      TEXT NOT NULL DEFAULT 'received',
    applied_at  TIMESTAMPTZ,
    deliveries  INTEGER NOT NULL DEFAULT 1
);

-- Mirror of every durable workflow's state, written by its activities, read by the console.
CREATE TABLE workflow_runs (
    workflow_id TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    subject     TEXT NOT NULL,
    state       TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    replays     INTEGER NOT NULL DEFAULT 0,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX workflow_runs_kind_state ON workflow_runs(kind, state);
