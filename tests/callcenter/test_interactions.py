"""The interaction log against the real PostgreSQL: batching, merging, and nothing lost when the
database is away (spooled to disk, replayed later)."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import asyncpg

from callcenter.interactions import InteractionLog, ts


async def test_open_update_and_events_land_in_postgres(pool: asyncpg.Pool, tmp_path: Path) -> None:
    log = InteractionLog(pool, tmp_path / "spool", flush_interval=0.05)
    log.start()
    iid = uuid.uuid4()
    t0 = time.time()
    log.open(iid, caller_number="+15550001", dialed_number="100", arrived_at=ts(t0), worker_id="w9")
    log.event(iid, "DID", t0, dialed="100")
    await asyncio.sleep(0.2)  # first flush: the row exists
    log.update(iid, answered_at=ts(t0 + 1))
    log.event(iid, "ANSWER", t0 + 1)
    log.update(iid, ended_at=ts(t0 + 5), disconnect_reason="normal_clearing", disconnect_side="caller")
    log.event(iid, "HANGUP", t0 + 5, cause="normal_clearing")
    await log.close()
    row = await pool.fetchrow("SELECT * FROM interactions WHERE id = $1", iid)
    assert row["caller_number"] == "+15550001" and row["worker_id"] == "w9"  # not overwritten by updates
    assert row["answered_at"] == ts(t0 + 1) and row["ended_at"] == ts(t0 + 5)
    events = [r["event"] for r in await pool.fetch(
        "SELECT event FROM interaction_events WHERE interaction_id = $1 ORDER BY at", iid)]
    assert events == ["DID", "ANSWER", "HANGUP"]


async def test_nothing_is_lost_while_the_database_is_away(pool: asyncpg.Pool, tmp_path: Path) -> None:
    # A pool to a server that is not there stands for PostgreSQL going away.
    spool = tmp_path / "spool"
    dead = InteractionLog(None, spool, flush_interval=0.05)
    dead.start()
    ids = [uuid.uuid4() for _ in range(25)]
    t0 = time.time()
    for i, iid in enumerate(ids):
        dead.open(iid, caller_number=f"+1555000{i:04d}", arrived_at=ts(t0 + i))
        dead.event(iid, "DID", t0 + i)
        dead.update(iid, ended_at=ts(t0 + i + 3), disconnect_reason="normal_clearing")
        dead.event(iid, "HANGUP", t0 + i + 3)
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
