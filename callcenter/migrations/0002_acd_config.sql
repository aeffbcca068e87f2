-- ACD configuration and the agents' own event log (LOGIN, LOGOFF, PAUSE, UNPAUSE with reason),
-- which has no interaction to hang from.

CREATE TABLE not_ready_reasons (
    code   text PRIMARY KEY CHECK (code ~ '^[a-z][a-z0-9_]*$'),
    label  text NOT NULL,
    system boolean NOT NULL DEFAULT false  -- set by the platform, not chosen by agents
);
INSERT INTO not_ready_reasons (code, label, system) VALUES
    ('break', 'Break', false), ('lunch', 'Lunch', false), ('training', 'Training', false),
    ('meeting', 'Meeting', false), ('after_call_work', 'After-call work', false),
    ('login', 'Just logged in', true), ('no_answer', 'Missed an offered call', true);

CREATE TABLE agent_events (
    id        bigserial PRIMARY KEY,
    agent_id  bigint NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    at        timestamptz NOT NULL DEFAULT now(),
    event     text NOT NULL CHECK (event ~ '^[A-Z][A-Z0-9_]*$'),
    queue_id  bigint REFERENCES queues(id) ON DELETE SET NULL,
    data      jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX agent_events_agent ON agent_events (agent_id, at);
CREATE TRIGGER agent_events_no_update BEFORE UPDATE ON agent_events
    FOR EACH ROW EXECUTE FUNCTION interaction_events_append_only();
