-- The IVR (ivr/): phone access to accounts, how each call left the IVR, post-call survey answers.

-- Wrong PINs in a row (reset by a right one) and, after too many, the time phone access reopens.
ALTER TABLE accounts ADD COLUMN pin_failures integer NOT NULL DEFAULT 0;
ALTER TABLE accounts ADD COLUMN phone_locked_until timestamptz;

-- From IVR_EXIT: the flow and node the call left the IVR from, and how (served, agent, abandoned, ...).
ALTER TABLE interactions ADD COLUMN ivr_flow text;
ALTER TABLE interactions ADD COLUMN ivr_exit text;
ALTER TABLE interactions ADD COLUMN ivr_exit_node text;

-- Tickets opened from the phone get numbers a caller can be read: T followed by digits.
CREATE SEQUENCE ticket_numbers START 100001;

-- One row per answer (SURVEY events), written as each answer is given.
CREATE TABLE survey_answers (
    event_id        text PRIMARY KEY,
    interaction_id  uuid NOT NULL REFERENCES interactions(id) ON DELETE CASCADE,
    at              timestamptz NOT NULL,
    survey          text NOT NULL,
    question        text NOT NULL,
    answer          smallint NOT NULL CHECK (answer BETWEEN 0 AND 10),
    how             text NOT NULL DEFAULT 'key',
    customer_id     bigint REFERENCES customers(id) ON DELETE SET NULL,
    agent_id        bigint REFERENCES agents(id) ON DELETE SET NULL,
    queue           text
);
CREATE INDEX survey_answers_agent ON survey_answers (agent_id, at);
CREATE INDEX survey_answers_queue ON survey_answers (queue, at);
