-- API keys: programs (a CRM, scripts) authenticate with a key; only a hash of its secret is kept.
CREATE TABLE api_keys (
    id           text PRIMARY KEY CHECK (id ~ '^[0-9a-f]{12}$'),   -- the key's public part
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    secret_hash  bytea NOT NULL,                                   -- SHA-256 of the secret part
    scopes       text[] NOT NULL CHECK (scopes <@ ARRAY['read', 'control', 'configure']::text[]
                                        AND cardinality(scopes) > 0),
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);

-- SIP digest credential of the agent's phone: HA1 = MD5(extension:realm:password), what the front
-- door checks (Kamailio auth). The password itself is never stored.
ALTER TABLE agents ADD COLUMN sip_ha1 text CHECK (sip_ha1 ~ '^[0-9a-f]{32}$');

-- The control-plane node that owns the call: a node that dies leaves its open interactions to be
-- closed by the others (or by itself when it restarts).
ALTER TABLE interactions ADD COLUMN node text;
CREATE INDEX interactions_open_node ON interactions (node) WHERE ended_at IS NULL;
