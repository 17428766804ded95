-- Plans and their entitlements. Relays learn an account's plan and limits when they verify an
-- authtoken (`POST /v1/internal/authtokens/verify`) and enforce them when an agent binds.
-- NULL means unlimited. `max_online_endpoints` counts every endpoint (HTTP, TCP, TLS) of the
-- account online on one relay; `max_tcp_endpoints` the TCP ones among them. Reserved names,
-- custom domains and bandwidth are carried for the features that will enforce them; nothing
-- enforces them yet.
CREATE TABLE plans (
    name                    TEXT PRIMARY KEY CHECK (name <> ''),
    max_online_endpoints    INTEGER CHECK (max_online_endpoints >= 0),
    max_tcp_endpoints       INTEGER CHECK (max_tcp_endpoints >= 0),
    max_reserved_names      INTEGER CHECK (max_reserved_names >= 0),
    max_custom_domains      INTEGER CHECK (max_custom_domains >= 0),
    bandwidth_bytes_per_sec BIGINT CHECK (bandwidth_bytes_per_sec > 0)
);

INSERT INTO plans (name, max_online_endpoints, max_tcp_endpoints, max_reserved_names,
                   max_custom_domains, bandwidth_bytes_per_sec) VALUES
    ('free',         4,    1,    1,    0,    1048576),
    ('pro',         50,   10,   10,    5,   10485760),
    ('team',       200,   50,   50,   25,  104857600),
    ('enterprise', NULL, NULL, NULL, NULL,       NULL);

-- Plans accounts already had that are not seeded above (set by provider events before plans
-- existed) are kept, unlimited as they were until now; give them limits with an UPDATE.
INSERT INTO plans (name)
SELECT DISTINCT plan FROM accounts WHERE plan <> '' AND plan NOT IN (SELECT name FROM plans);
UPDATE accounts SET plan = 'free' WHERE plan = '';

ALTER TABLE accounts
    ADD CONSTRAINT accounts_plan_fkey FOREIGN KEY (plan) REFERENCES plans(name) ON UPDATE CASCADE;
