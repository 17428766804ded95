-- Pending custom domains no longer block anyone: several accounts may add the same domain
-- (each gets its own TXT token), and the first to prove ownership holds it. Before this, an
-- account that added a domain it did not own and never verified it kept the real owner out.
ALTER TABLE custom_domains DROP CONSTRAINT custom_domains_pkey;
ALTER TABLE custom_domains ADD PRIMARY KEY (domain, account_id);
-- At most one account holds a domain verified.
CREATE UNIQUE INDEX custom_domains_verified ON custom_domains(domain) WHERE status = 'verified';
