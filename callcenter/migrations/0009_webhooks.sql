-- Webhook subscriptions (callcenter/webhooks.py): where to POST which events, signed with the
-- subscription's secret (HMAC-SHA256; kept, since signing needs it; shown once at creation). The API
-- key that made it owns it: events are delivered only while that key is valid and may read.
CREATE TABLE webhooks (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    url         text NOT NULL CHECK (url ~ '^https?://' AND length(url) <= 2000),
    secret      text NOT NULL,
    events      text[] NOT NULL DEFAULT '{}',   -- event names or patterns (DIAL_*); empty: every event
    api_key_id  text NOT NULL REFERENCES api_keys(id),
    active      boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Events a receiver never took: kept with the last error, to be looked at and sent again.
CREATE TABLE webhook_dead_letters (
    id          bigserial PRIMARY KEY,
    webhook_id  bigint NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    event_id    text NOT NULL,
    event       text NOT NULL,                  -- the event's JSON, as it was sent
    attempts    integer NOT NULL,
    error       text NOT NULL,
    failed_at   timestamptz NOT NULL DEFAULT now(),
    redeliver   boolean NOT NULL DEFAULT false  -- marked to be sent again
);
CREATE INDEX webhook_dead_letters_by_webhook ON webhook_dead_letters (webhook_id, id);
