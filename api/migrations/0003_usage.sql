-- Metering: usage per endpoint that relays count and flush (`POST /v1/internal/usage`), the
-- basis of billing. One row per (batch, account, endpoint, proto): a relay re-sends a batch
-- it is unsure about with the same batch id, and the unique key makes that a no-op.
CREATE TABLE usage_records (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    relay_id     TEXT NOT NULL,
    batch_id     UUID NOT NULL,
    account_id   UUID NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    -- The relay's endpoint name: `demo` (HTTP), `tcp:20000` (TCP).
    endpoint     TEXT NOT NULL,
    proto        TEXT NOT NULL,
    bytes_in     BIGINT NOT NULL CHECK (bytes_in >= 0),
    bytes_out    BIGINT NOT NULL CHECK (bytes_out >= 0),
    requests     BIGINT NOT NULL CHECK (requests >= 0),
    connections  BIGINT NOT NULL CHECK (connections >= 0),
    period_start TIMESTAMPTZ NOT NULL,
    period_end   TIMESTAMPTZ NOT NULL,
    received_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (period_end >= period_start),
    CONSTRAINT usage_records_batch_key UNIQUE (batch_id, account_id, endpoint, proto)
);
-- Per-account windows (`GET /v1/accounts/{id}/usage?since=&until=`).
CREATE INDEX usage_records_account_period ON usage_records(account_id, period_start);
