-- CRM around the call center, and the call center's own record.

-- ------------------------------------------------------------------ CRM
CREATE TABLE customers (
    id            bigserial PRIMARY KEY,
    kind          text NOT NULL CHECK (kind IN ('individual', 'company')),
    first_name    text,
    last_name     text,
    company_name  text,
    display_name  text NOT NULL,
    email         text,
    birth_date    date,
    language      text NOT NULL DEFAULT 'en',
    status        text NOT NULL DEFAULT 'active'
                  CHECK (status IN ('prospect', 'active', 'inactive', 'blocked')),
    value_tier    text NOT NULL DEFAULT 'standard'
                  CHECK (value_tier IN ('standard', 'silver', 'gold', 'vip')),
    street        text,
    city          text,
    postal_code   text,
    country       text,
    notes         text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (kind = 'company' AND company_name IS NOT NULL
           OR kind = 'individual' AND last_name IS NOT NULL)
);
CREATE INDEX customers_display_name ON customers (lower(display_name));

-- Phone numbers are stored in E.164 (normalized on the way in) so that a caller ID finds its
-- customer with one index probe.
CREATE TABLE customer_phones (
    id           bigserial PRIMARY KEY,
    customer_id  bigint NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
    e164         text NOT NULL CHECK (e164 ~ '^\+[1-9][0-9]{6,14}$'),
    kind         text NOT NULL DEFAULT 'mobile' CHECK (kind IN ('mobile', 'home', 'work', 'fax', 'other')),
    is_primary   boolean NOT NULL DEFAULT false,
    UNIQUE (customer_id, e164)
);
CREATE INDEX customer_phones_e164 ON customer_phones (e164);

-- People to talk to at a company customer (or relatives/representatives of an individual).
CREATE TABLE contacts (
    id           bigserial PRIMARY KEY,
    customer_id  bigint NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
    name         text NOT NULL,
    role         text,
    email        text,
    phone_e164   text CHECK (phone_e164 ~ '^\+[1-9][0-9]{6,14}$'),
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX contacts_customer ON contacts (customer_id);
CREATE INDEX contacts_phone ON contacts (phone_e164);

CREATE TABLE accounts (
    id           bigserial PRIMARY KEY,
    customer_id  bigint NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
    number       text NOT NULL UNIQUE,
    kind         text NOT NULL CHECK (kind IN ('checking', 'savings', 'credit', 'loyalty', 'prepaid')),
    currency     char(3) NOT NULL DEFAULT 'USD',
    balance      numeric(14, 2) NOT NULL DEFAULT 0,
    points       integer NOT NULL DEFAULT 0,
    status       text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'frozen', 'closed')),
    pin_hash     text,
    opened_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX accounts_customer ON accounts (customer_id);

CREATE TABLE orders (
    id           bigserial PRIMARY KEY,
    customer_id  bigint NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
    number       text NOT NULL UNIQUE,
    status       text NOT NULL CHECK (status IN ('placed', 'paid', 'shipped', 'delivered', 'cancelled', 'returned')),
    total        numeric(14, 2) NOT NULL,
    currency     char(3) NOT NULL DEFAULT 'USD',
    items        integer NOT NULL DEFAULT 1 CHECK (items > 0),
    placed_at    timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    tracking     text
);
CREATE INDEX orders_customer ON orders (customer_id, placed_at DESC);

CREATE TABLE transactions (
    id           bigserial PRIMARY KEY,
    account_id   bigint NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    customer_id  bigint NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
    order_id     bigint REFERENCES orders(id) ON DELETE SET NULL,
    at           timestamptz NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('deposit', 'withdrawal', 'purchase', 'refund', 'fee', 'interest', 'points')),
    amount       numeric(14, 2) NOT NULL,
    points       integer NOT NULL DEFAULT 0,
    description  text NOT NULL DEFAULT ''
);
CREATE INDEX transactions_account ON transactions (account_id, at DESC);
CREATE INDEX transactions_customer ON transactions (customer_id, at DESC);

-- ------------------------------------------------------------------ call center configuration
CREATE TABLE skills (
    id    bigserial PRIMARY KEY,
    name  text NOT NULL UNIQUE CHECK (name ~ '^[a-z][a-z0-9_.-]*$')
);

CREATE TABLE queues (
    id        bigserial PRIMARY KEY,
    name      text NOT NULL UNIQUE CHECK (name ~ '^[a-z][a-z0-9_.-]*$'),
    title     text NOT NULL DEFAULT '',
    settings  jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE agents (
    id          bigserial PRIMARY KEY,
    login       text NOT NULL UNIQUE CHECK (login ~ '^[a-z][a-z0-9_.-]*$'),
    name        text NOT NULL,
    extension   text UNIQUE,
    sip_uri     text,
    password_hash text,
    active      boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE agent_skills (
    agent_id     bigint NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    skill_id     bigint NOT NULL REFERENCES skills(id) ON DELETE CASCADE,
    proficiency  smallint NOT NULL CHECK (proficiency BETWEEN 1 AND 5),
    PRIMARY KEY (agent_id, skill_id)
);

CREATE TABLE queue_members (
    queue_id  bigint NOT NULL REFERENCES queues(id) ON DELETE CASCADE,
    agent_id  bigint NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    penalty   smallint NOT NULL DEFAULT 0 CHECK (penalty >= 0),
    PRIMARY KEY (queue_id, agent_id)
);

-- ------------------------------------------------------------------ the contact record
-- One row per call (inbound leg); originated legs are events of the same interaction.
CREATE TABLE interactions (
    id                 uuid PRIMARY KEY,
    direction          text NOT NULL DEFAULT 'inbound' CHECK (direction IN ('inbound', 'outbound')),
    caller_number      text,
    caller_name        text,
    caller_uri         text,
    dialed_number      text,
    dialed_uri         text,
    sip_call_id        text,
    customer_id        bigint REFERENCES customers(id) ON DELETE SET NULL,
    route              text,
    worker_id          text,
    media_call_id      text,
    arrived_at         timestamptz NOT NULL,
    answered_at        timestamptz,
    queued_at          timestamptz,
    queue_id           bigint REFERENCES queues(id) ON DELETE SET NULL,
    agent_offered_at   timestamptz,
    agent_answered_at  timestamptz,
    agent_id           bigint REFERENCES agents(id) ON DELETE SET NULL,
    ended_at           timestamptz,
    disconnect_reason  text,
    disconnect_side    text CHECK (disconnect_side IN ('caller', 'platform', 'agent', 'system')),
    sip_code           integer,
    digits             text
);
CREATE INDEX interactions_arrived ON interactions (arrived_at, id);
CREATE INDEX interactions_customer ON interactions (customer_id, arrived_at DESC);
CREATE INDEX interactions_open ON interactions (worker_id) WHERE ended_at IS NULL;

-- Append-only log; names follow Asterisk queue_log where one fits (DID, ENTERQUEUE, CONNECT, ...).
CREATE TABLE interaction_events (
    id              bigserial PRIMARY KEY,
    interaction_id  uuid NOT NULL REFERENCES interactions(id) ON DELETE CASCADE,
    at              timestamptz NOT NULL,
    event           text NOT NULL CHECK (event ~ '^[A-Z][A-Z0-9_]*$'),
    queue_id        bigint,
    agent_id        bigint,
    data            jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX interaction_events_interaction ON interaction_events (interaction_id, at);
CREATE INDEX interaction_events_at ON interaction_events (at);

CREATE FUNCTION interaction_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'interaction_events is append-only';
END $$;
CREATE TRIGGER interaction_events_no_update BEFORE UPDATE ON interaction_events
    FOR EACH ROW EXECUTE FUNCTION interaction_events_append_only();

-- ------------------------------------------------------------------ service requests
CREATE TABLE tickets (
    id              bigserial PRIMARY KEY,
    customer_id     bigint NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
    number          text NOT NULL UNIQUE,
    kind            text NOT NULL CHECK (kind IN ('service_request', 'complaint', 'inquiry', 'incident')),
    status          text NOT NULL CHECK (status IN ('open', 'pending', 'resolved', 'closed')),
    priority        text NOT NULL DEFAULT 'normal' CHECK (priority IN ('low', 'normal', 'high', 'urgent')),
    subject         text NOT NULL,
    description     text NOT NULL DEFAULT '',
    order_id        bigint REFERENCES orders(id) ON DELETE SET NULL,
    interaction_id  uuid REFERENCES interactions(id) ON DELETE SET NULL,
    opened_at       timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    closed_at       timestamptz
);
CREATE INDEX tickets_customer ON tickets (customer_id, opened_at DESC);
