-- Member order within a queue (linear and round-robin strategies): penalty, then this position,
-- which is the order the member list was given in.
ALTER TABLE queue_members ADD COLUMN position integer NOT NULL DEFAULT 0;
