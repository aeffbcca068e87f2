-- Transfers and conferences on the record, set from the session's CALLSTATE totals
-- (bus/call_session.py): how many transfers, each one (mode blind or attended, kind queue, agent,
-- extension or number, target, from and to agent, when), and the seconds spent in three-way
-- conferences. NULL for a call with none.
ALTER TABLE interactions ADD COLUMN transfer_count integer;
ALTER TABLE interactions ADD COLUMN transfers jsonb;
ALTER TABLE interactions ADD COLUMN conference_seconds double precision;
