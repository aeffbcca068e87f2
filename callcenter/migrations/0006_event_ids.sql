-- The interaction log is a subscriber of the event stream (docs/events.md), which delivers an event
-- at least once: every event carries a unique id, and a redelivered one is recognised and skipped.
-- Rows written before the stream have none (NULLs never conflict).
ALTER TABLE interaction_events ADD COLUMN event_id text;
CREATE UNIQUE INDEX interaction_events_event_id ON interaction_events (event_id);
ALTER TABLE agent_events ADD COLUMN event_id text;
CREATE UNIQUE INDEX agent_events_event_id ON agent_events (event_id);
