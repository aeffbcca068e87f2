-- What operators report on from a call's session (bus/call_session.py), set from its CALLSTATE
-- events: holds (how many, seconds on hold, the longest), NULL for a call never held, and the call
-- data attached to it.
ALTER TABLE interactions ADD COLUMN hold_count integer;
ALTER TABLE interactions ADD COLUMN hold_seconds double precision;
ALTER TABLE interactions ADD COLUMN hold_longest double precision;
ALTER TABLE interactions ADD COLUMN call_data jsonb;
