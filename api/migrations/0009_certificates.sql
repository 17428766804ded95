-- Certificate lifecycle: ACME accounts, issued certificates (private keys encrypted), orders
-- (the CA budget), what each relay serves (replication), signed callbacks and incidents.

-- One ACME account per directory URL. `credentials` is instant-acme's credentials JSON,
-- encrypted like certificate keys (see `certificates.key_encrypted`).
CREATE TABLE acme_accounts (
    directory_url TEXT PRIMARY KEY,
    credentials   BYTEA NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Every certificate version issued for a domain. `key_encrypted` is the PKCS#8 PEM private key
-- sealed with AES-256-GCM under the worker's `cert_encryption_key`: 12-byte nonce, then
-- ciphertext and tag; the domain and version are the associated data, so a key copied to
-- another row does not open.
CREATE TABLE certificates (
    domain          TEXT NOT NULL,
    version         BIGINT NOT NULL CHECK (version >= 1),
    chain_pem       TEXT NOT NULL,
    key_encrypted   BYTEA NOT NULL,
    -- Serial number, lowercase hex.
    serial          TEXT NOT NULL,
    -- RFC 9773 certificate identifier (base64url AKI "." base64url serial), for ARI and `replaces`.
    ari_id          TEXT,
    not_before      TIMESTAMPTZ NOT NULL,
    not_after       TIMESTAMPTZ NOT NULL,
    issued_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- The version this one renewed, if any.
    renewed_version BIGINT,
    PRIMARY KEY (domain, version)
);

-- Orders placed with the CA: the global order budget counts these, and failed authorizations
-- per hostname are counted from `outcome`.
CREATE TABLE acme_orders (
    id         BIGSERIAL PRIMARY KEY,
    domain     TEXT NOT NULL,
    order_url  TEXT,
    outcome    TEXT NOT NULL DEFAULT 'pending'
               CHECK (outcome IN ('pending', 'valid', 'authorization_failed', 'failed')),
    detail     TEXT,
    -- The certificate key generated for finalize, sealed (see `certificates.key_encrypted`), so
    -- a finalize retried after the CA answered can still pair the certificate with its key.
    key_encrypted BYTEA,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX acme_orders_created ON acme_orders(created_at);
CREATE INDEX acme_orders_domain ON acme_orders(domain, created_at);

-- The certificate version each relay reported serving for each domain, written by the
-- distribution and replication activities.
CREATE TABLE cert_replicas (
    domain      TEXT NOT NULL,
    relay_id    TEXT NOT NULL,
    region      TEXT NOT NULL,
    version     BIGINT NOT NULL,
    reported_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (domain, relay_id)
);

-- Region replication snapshots: per region, the lowest version any of its relays serves per
-- domain, taken by the replication workflow. `drift` lists domains whose region version lags
-- the latest issued one.
CREATE TABLE region_snapshots (
    id           BIGSERIAL PRIMARY KEY,
    region       TEXT NOT NULL,
    relays       INTEGER NOT NULL,
    certificates JSONB NOT NULL,
    drift        JSONB NOT NULL,
    taken_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX region_snapshots_region ON region_snapshots(region, taken_at DESC);

-- Callback-only ingest: which (callbackClass, callbackAction) means which internal event.
CREATE TABLE cert_callback_mappings (
    callback_class  TEXT NOT NULL,
    callback_action TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    PRIMARY KEY (callback_class, callback_action)
);
INSERT INTO cert_callback_mappings (callback_class, callback_action, event_type) VALUES
    ('certificate', 'revoked',        'certificate.revoked'),
    ('certificate', 'renew',          'certificate.renewal_requested'),
    ('certificate', 'expiring',       'certificate.expiry_warning'),
    ('ari',         'window_changed', 'certificate.renewal_window_changed'),
    ('domain',      'dns_changed',    'certificate.renewal_requested');

-- Every callback received, once per sender id. `event_type` is NULL for an unmapped pair
-- (status 'unmapped', kept for review).
CREATE TABLE cert_callbacks (
    id              TEXT PRIMARY KEY,
    callback_class  TEXT NOT NULL,
    callback_action TEXT NOT NULL,
    event_type      TEXT,
    domain          TEXT,
    payload         JSONB NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('received', 'signalled', 'unmapped', 'no_workflow')),
    detail          TEXT,
    deliveries      INTEGER NOT NULL DEFAULT 1,
    received_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX cert_callbacks_status ON cert_callbacks(status, received_at);

-- Incidents opened by workflows entering failure states. At most one unresolved incident per
-- workflow; later failures of the same workflow update it (state, tier) and add to its timeline.
CREATE TABLE incidents (
    id              UUID PRIMARY KEY,
    workflow_id     TEXT NOT NULL,
    kind            TEXT NOT NULL,
    subject         TEXT NOT NULL,
    failure_state   TEXT NOT NULL,
    tier            TEXT NOT NULL CHECK (tier IN ('sev1', 'sev2', 'sev3')),
    status          TEXT NOT NULL CHECK (status IN ('open', 'acknowledged', 'resolved')),
    hostnames       INTEGER NOT NULL DEFAULT 1,
    -- Expiry of the certificate being served, if any.
    expires_at      TIMESTAMPTZ,
    summary         TEXT NOT NULL DEFAULT '',
    opened_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    acknowledged_at TIMESTAMPTZ,
    acknowledged_by TEXT,
    resolved_at     TIMESTAMPTZ,
    resolved_by     TEXT,
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX incidents_one_unresolved ON incidents(workflow_id) WHERE status <> 'resolved';
CREATE INDEX incidents_status ON incidents(status, opened_at DESC);

CREATE TABLE incident_events (
    id          BIGSERIAL PRIMARY KEY,
    incident_id UUID NOT NULL REFERENCES incidents(id) ON DELETE CASCADE,
    at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- opened | escalated | state_changed | acknowledged | resolved | auto_resolved | note
    event       TEXT NOT NULL,
    detail      TEXT NOT NULL DEFAULT '',
    -- API key id or 'workflow'.
    actor       TEXT NOT NULL
);
CREATE INDEX incident_events_incident ON incident_events(incident_id, id);
