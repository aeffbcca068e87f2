"""The interaction log against the real PostgreSQL: batching, merging, and nothing lost when the
database is away (spooled to disk, replayed later)."""

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
    log = InteractionLog(pool, tmp_path / "spool", flush_interval=0.05)
    log.start()
    iid = uuid.uuid4()
    t0 = time.time()
    queue_id = await pool.fetchval("INSERT INTO queues (name) VALUES ('ilog-test') ON CONFLICT (name) "
                                   "DO UPDATE SET title = queues.title RETURNING id")
    agent = await pool.fetchval("INSERT INTO agents (login, name) VALUES ('ilog-test', 'Ilog Test') "
                                "ON CONFLICT (login) DO UPDATE SET name = agents.name RETURNING id")
    i = str(iid)
    log.add(ev.CallArrived(interaction=i, at=t0, caller_number="+15550001", dialed_number="100", worker="w9",
                           node="n1"))
    await asyncio.sleep(0.2)  # first flush: the row exists
    log.add(ev.CallAnswered(interaction=i, at=t0 + 1))
    log.add(ev.EnterQueue(interaction=i, at=t0 + 2, queue="ilog-test", position=1, priority=3))
    log.add(ev.Offer(interaction=i, at=t0 + 3, queue="ilog-test", agents=[agent]))
    log.add(ev.Connect(interaction=i, at=t0 + 4, queue="ilog-test", agent_id=agent, wait=2.0, ring=1.0))
    log.add(ev.Dtmf(interaction=i, at=t0 + 4.5, call="o-1", digit="5"))  # a leg's event: in the log only
    log.add(ev.Hangup(interaction=i, at=t0 + 5, cause="normal_clearing", code=200, side="remote"))
    log.add(ev.AgentLogin(agent_id=agent))  # not a call's: not the interaction log's
    await log.close()
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


async def test_nothing_is_lost_while_the_database_is_away(pool: asyncpg.Pool, tmp_path: Path) -> None:
    # A pool to a server that is not there stands for PostgreSQL going away.
    spool = tmp_path / "spool"
    dead = InteractionLog(None, spool, flush_interval=0.05)
    dead.start()
    ids = [uuid.uuid4() for _ in range(25)]
    t0 = time.time()
    for i, iid in enumerate(ids):
        dead.add(ev.CallArrived(interaction=str(iid), at=t0 + i, caller_number=f"+1555000{i:04d}"))
        dead.add(ev.Hangup(interaction=str(iid), at=t0 + i + 3, cause="normal_clearing"))
    await asyncio.sleep(0.3)
    assert dead.failures > 0 and dead.backlog > 0
    await dead.close()  # the database never came back: everything goes to the spool
    assert list(spool.glob("*.jsonl"))

    alive = InteractionLog(pool, spool, flush_interval=0.05)  # the next start replays the spool
    alive.start()
    await asyncio.sleep(0.3)
    await alive.close()
    assert not list(spool.glob("*.jsonl"))
    n = await pool.fetchval("SELECT count(*) FROM interactions WHERE id = ANY($1) AND ended_at IS NOT NULL", ids)
    e = await pool.fetchval("SELECT count(*) FROM interaction_events WHERE interaction_id = ANY($1)", ids)
    assert (n, e) == (25, 50)


async def test_the_first_item_is_written_at_once_and_the_rest_batched(pool: asyncpg.Pool, tmp_path: Path) -> None:
    log = InteractionLog(pool, tmp_path / "spool", flush_interval=1.0)
    log.start()
    iid, t0 = uuid.uuid4(), time.time()

    async def events_written() -> int:
        return int(await pool.fetchval("SELECT count(*) FROM interaction_events WHERE interaction_id = $1", iid))

    try:
        log.add(ev.CallArrived(interaction=str(iid), at=t0, caller_number="+15550002"))
        for _ in range(100):  # after a quiet spell: written without waiting for the interval
            if await events_written():
                break
            await asyncio.sleep(0.02)
        assert await events_written() == 1
        for n in range(20):  # a burst right after: held for the next batch, a second after the first
            log.add(ev.Dtmf(interaction=str(iid), at=t0 + n, digit=str(n % 10)))
        await asyncio.sleep(0.3)
        assert await events_written() == 1
        for _ in range(150):
            if await events_written() == 21:
                break
            await asyncio.sleep(0.02)
        assert await events_written() == 21
    finally:
        await log.close()


async def test_a_refused_record_is_set_aside_and_the_rest_of_its_batch_written(pool: asyncpg.Pool, stores: Stores,
                                                                               tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    log = InteractionLog(pool, spool, flush_interval=5)  # one batch: flushed by close()
    good = [uuid.uuid4() for _ in range(3)]
    bad_text, bad_ref = uuid.uuid4(), uuid.uuid4()
    t0 = time.time()
    for iid in good:
        log.add(ev.CallArrived(interaction=str(iid), at=t0, caller_number="+15551230000"))
    # What one hostile caller can produce if it gets past the worker's cleaning: bytes that are not
    # UTF-8 (they reach Python as lone surrogates) and a NUL byte, which PostgreSQL cannot store.
    # Its row and its DID event (which carries the name too) are refused.
    log.add(ev.CallArrived(interaction=str(bad_text), at=t0, caller_name="Mall\udcff\udcfeory\x00"))
    # A record that refers to a customer who does not exist (yet): refused, and so are its two events.
    log.add(ev.CallArrived(interaction=str(bad_ref), at=t0, caller_number="+15551230009"))
    log.add(ev.CustomerIdentified(interaction=str(bad_ref), at=t0, customer_id=987654321))
    log.start()
    await asyncio.sleep(0.1)
    await log.close()
    assert await pool.fetchval("SELECT count(*) FROM interactions WHERE id = ANY($1)", good) == 3
    assert await pool.fetchval("SELECT count(*) FROM interaction_events WHERE interaction_id = ANY($1)", good) == 3
    files = list(spool.glob("rejected-*.jsonl"))
    assert len(files) == 1 and log.rejected == 5  # the two rows and their three events
    lines = [json.loads(ln) for ln in files[0].read_text().splitlines()]
    assert all(item["reason"] for item in lines)
    assert {item.get("row") for item in lines} >= {str(bad_text), str(bad_ref)}

    # The operator fixes the cause of one (the customer exists now) and replays: that one is written,
    # the other is still refused and still kept.
    cid = await pool.fetchval(
        "INSERT INTO customers (id, kind, first_name, last_name, display_name) "
        "VALUES (987654321, 'individual', 'Late', 'Comer', 'Late Comer') "
        "ON CONFLICT (id) DO UPDATE SET display_name = excluded.display_name RETURNING id")
    assert cid == 987654321
    written, still = await InteractionLog(pool, spool).replay_rejected()
    assert (written, still) == (3, 2)  # bad_ref's row and its two events; bad_text's row and event
    assert await pool.fetchval("SELECT customer_id FROM interactions WHERE id = $1", bad_ref) == cid
    assert sum(len(p.read_text().splitlines()) for p in spool.glob("rejected-*.jsonl")) == 2

    # The operator's view of the same, through the CLI.
    env = {**os.environ, "DATABASE_URL": stores.database_url, "REDIS_URL": stores.redis_url,
           "CC_PATHS__VAR_DIR": str(tmp_path)}
    listed = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "callcenter.cli", "spool", "list"],
                                     cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert "rejected-" in listed.stdout and "2 items; refused:" in listed.stdout, listed.stdout + listed.stderr
    again = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "callcenter.cli", "spool", "replay"],
                                    cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "written: 0; still refused: 2" in again.stdout, again.stdout + again.stderr
