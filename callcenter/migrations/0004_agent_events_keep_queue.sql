-- agent_events is append-only: a foreign key that rewrites it (ON DELETE SET NULL) made deleting a
-- queue fail once an agent had joined it. The event keeps the queue's id, as interaction_events does.
ALTER TABLE agent_events DROP CONSTRAINT agent_events_queue_id_fkey;
