"""The interaction log against the real PostgreSQL: the record derived from events, a repeat
skipped, nothing lost when the database is away (spooled to disk, written later), and refused
events set aside with the reason."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import asyncpg

from bus import events as ev
from callcenter.interactions import InteractionLog
from callcenter.records import ts
from tests.conftest import ROOT, Stores


async def test_open_update_and_events_land_in_postgres(pool: asyncpg.Pool, tmp_path: Path) -> None:
    log = InteractionLog(pool, tmp_path / "spool")
    iid = uuid.uuid4()
    t0 = time.time()
    queue_id = await pool.fetchval("INSERT INTO queues (name) VALUES ('ilog-test') ON CONFLICT (name) "
                                   "DO UPDATE SET title = queues.title RETURNING id")
    agent = await pool.fetchval("INSERT INTO agents (login, name) VALUES ('ilog-test', 'Ilog Test') "
                                "ON CONFLICT (login) DO UPDATE SET name = agents.name RETURNING id")
    i = str(iid)
    await log.write([ev.CallArrived(interaction=i, at=t0, caller_number="+15550001", dialed_number="100",
                                    worker="w9", node="n1")])
    later: list[ev.Event] = [
        ev.CallAnswered(interaction=i, at=t0 + 1),
        ev.EnterQueue(interaction=i, at=t0 + 2, queue="ilog-test", position=1, priority=3),
        ev.Offer(interaction=i, at=t0 + 3, queue="ilog-test", agents=[agent]),
        ev.Connect(interaction=i, at=t0 + 4, queue="ilog-test", agent_id=agent, wait=2.0, ring=1.0),
        ev.Dtmf(interaction=i, at=t0 + 4.5, call="o-1", digit="5"),  # a leg's event: in the log only
        ev.Hangup(interaction=i, at=t0 + 5, cause="normal_clearing", code=200, side="remote"),
        ev.AgentLogin(agent_id=agent, at=t0 + 6),  # the agent's log
    ]
    await log.write(later)
    await log.write(later[2:])  # delivered again (a reader died before acknowledging): recognised, skipped
    assert log.written_events == 8
    row = await pool.fetchrow("SELECT * FROM interactions WHERE id = $1", iid)
    assert row["caller_number"] == "+15550001" and row["worker_id"] == "w9"  # not overwritten by updates
    assert (row["answered_at"], row["queued_at"], row["agent_offered_at"], row["agent_answered_at"], row["ended_at"]) \
        == (ts(t0 + 1), ts(t0 + 2), ts(t0 + 3), ts(t0 + 4), ts(t0 + 5))
    assert (row["queue_id"], row["agent_id"], row["node"]) == (queue_id, agent, "n1")
    assert (row["disconnect_reason"], row["disconnect_side"], row["sip_code"]) == ("normal_clearing", "caller", 200)
    events = await pool.fetch("SELECT event, queue_id, agent_id, data FROM interaction_events "
                              "WHERE interaction_id = $1 ORDER BY at", iid)
    assert [r["event"] for r in events] == ["DID", "ANSWER", "ENTERQUEUE", "OFFER", "CONNECT", "DTMF", "HANGUP"]
    connect, dtmf = events[4], events[5]
    assert (connect["queue_id"], connect["agent_id"]) == (queue_id, agent)
    assert json.loads(connect["data"]) == {"queue": "ilog-test", "wait": 2.0, "ring": 1.0, "agent_call": "",
                                           "callback": False, "attempt": 0}
    assert json.loads(dtmf["data"]) == {"call": "o-1", "digit": "5", "method": ""}
    assert await pool.fetchval("SELECT count(*) FROM agent_events WHERE agent_id = $1 AND event = 'LOGIN' "
                               "AND at = $2", agent, ts(t0 + 6)) == 1


async def test_nothing_is_lost_while_the_database_is_away(pool: asyncpg.Pool, tmp_path: Path) -> None:
    # No pool stands for PostgreSQL going away: every batch is spooled, and the write returns (durable).
    spool = tmp_path / "spool"
    dead = InteractionLog(None, spool)
    ids = [uuid.uuid4() for _ in range(25)]
    t0 = time.time()
    for i, iid in enumerate(ids):
        await dead.write([ev.CallArrived(interaction=str(iid), at=t0 + i, caller_number=f"+1555000{i:04d}")])
        await dead.write([ev.Hangup(interaction=str(iid), at=t0 + i + 3, cause="normal_clearing")])
    assert dead.failures == 1  # then it is known to be away: no attempt per batch
    assert sum(len(p.read_text().splitlines()) for p in spool.glob("interactions-*.jsonl")) == 50

    alive = InteractionLog(pool, spool, retry=0.05)  # the next start, or the database back
    stop = asyncio.Event()
    task = asyncio.create_task(alive.run(stop))
    for _ in range(100):
        if not list(spool.glob("*.jsonl")):
            break
        await asyncio.sleep(0.05)
    stop.set()
    await task
    assert not list(spool.glob("*.jsonl"))
    n = await pool.fetchval("SELECT count(*) FROM interactions WHERE id = ANY($1) AND ended_at IS NOT NULL", ids)
    e = await pool.fetchval("SELECT count(*) FROM interaction_events WHERE interaction_id = ANY($1)", ids)
    assert (n, e) == (25, 50)


async def test_a_refused_record_is_set_aside_and_the_rest_of_its_batch_written(pool: asyncpg.Pool, stores: Stores,
                                                                               tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    log = InteractionLog(pool, spool)
    batch: list[ev.Event] = []
    good = [uuid.uuid4() for _ in range(3)]
    bad_text, bad_ref = uuid.uuid4(), uuid.uuid4()
    t0 = time.time()
    for iid in good:
        batch.append(ev.CallArrived(interaction=str(iid), at=t0, caller_number="+15551230000"))
    # What one hostile caller can produce if it gets past the worker's cleaning: bytes that are not
    # UTF-8 (they reach Python as lone surrogates) and a NUL byte, which PostgreSQL cannot store.
    # Its DID event, which opens the record, is refused.
    batch.append(ev.CallArrived(interaction=str(bad_text), at=t0, caller_name="Mall\udcff\udcfeory\x00"))
    # A record that refers to a customer who does not exist (yet): that event is refused.
    batch.append(ev.CallArrived(interaction=str(bad_ref), at=t0, caller_number="+15551230009"))
    batch.append(ev.CustomerIdentified(interaction=str(bad_ref), at=t0, customer_id=987654321))
    await log.write(batch)
    assert await pool.fetchval("SELECT count(*) FROM interactions WHERE id = ANY($1)", good) == 3
    assert await pool.fetchval("SELECT count(*) FROM interaction_events WHERE interaction_id = ANY($1)", good) == 3
    files = list(spool.glob("rejected-*.jsonl"))
    assert len(files) == 1 and log.rejected == 2  # bad_text's DID, bad_ref's IDENTIFY
    lines = [json.loads(ln) for ln in files[0].read_text().splitlines()]
    assert all(item["reason"] for item in lines)
    assert {ev.decode(item["event"]).NAME for item in lines} == {"DID", "IDENTIFY"}
    assert await pool.fetchval("SELECT customer_id IS NULL FROM interactions WHERE id = $1", bad_ref)

    # The operator fixes the cause of one (the customer exists now) and replays: that one is written,
    # the other is still refused and still kept.
    cid = await pool.fetchval(
        "INSERT INTO customers (id, kind, first_name, last_name, display_name) "
        "VALUES (987654321, 'individual', 'Late', 'Comer', 'Late Comer') "
        "ON CONFLICT (id) DO UPDATE SET display_name = excluded.display_name RETURNING id")
    assert cid == 987654321
    written, still = await InteractionLog(pool, spool).replay_rejected()
    assert (written, still) == (1, 1)  # bad_ref's IDENTIFY; bad_text's DID
    assert await pool.fetchval("SELECT customer_id FROM interactions WHERE id = $1", bad_ref) == cid
    assert sum(len(p.read_text().splitlines()) for p in spool.glob("rejected-*.jsonl")) == 1

    # The operator's view of the same, through the CLI.
    env = {**os.environ, "DATABASE_URL": stores.database_url, "REDIS_URL": stores.redis_url,
           "CC_PATHS__VAR_DIR": str(tmp_path)}
    listed = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "callcenter.cli", "spool", "list"],
                                     cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert "rejected-" in listed.stdout and "1 items; refused:" in listed.stdout, listed.stdout + listed.stderr
    again = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "callcenter.cli", "spool", "replay"],
                                    cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "written: 0; still refused: 1" in again.stdout, again.stdout + again.stderr
