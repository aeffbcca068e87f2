"""A node's event bus against real Redis and PostgreSQL: an emitted event reaches the record only
through the stream, in batches, and the record can be rebuilt from the stream alone."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest_asyncio
import redis.asyncio as aioredis

from bus import events as ev
from bus.keys import EVENTS
from callcenter import sessions
from callcenter.event_bus import EventBus, rebuild
from callcenter.interactions import InteractionLog
from callcenter.tasks import Loops
from tests.conftest import Stores, fresh_redis

DB = 3


@pytest_asyncio.fixture(loop_scope="session")
async def r(stores: Stores) -> AsyncIterator[aioredis.Redis]:
    async with fresh_redis(stores, DB) as client:
        yield client


async def count(pool: asyncpg.Pool, iid: uuid.UUID) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM interaction_events WHERE interaction_id = $1", iid))


async def until(pool: asyncpg.Pool, iid: uuid.UUID, n: int, timeout: float = 5.0) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if await count(pool, iid) >= n:
            return time.monotonic() - t0
        await asyncio.sleep(0.01)
    raise AssertionError(f"{n} events not written in {timeout} s (got {await count(pool, iid)})")


async def test_events_reach_the_record_through_the_stream_in_batches(r: aioredis.Redis, pool: asyncpg.Pool,
                                                                     tmp_path: Path) -> None:
    bus = EventBus("node-1", r, pool, tmp_path / "spool", pause=1.0)
    loops = Loops()
    bus.start(loops)
    iid = uuid.uuid4()
    i = str(iid)
    try:
        await until_reading(bus)
        bus.notifier.emit(ev.CallArrived(interaction=i, caller_number="+15550003"))
        assert await until(pool, iid, 1) < 0.5  # after a quiet spell: at once
        for n in range(20):  # a burst right after: held for the next batch, a pause after the first
            bus.notifier.emit(ev.Dtmf(interaction=i, digit=str(n % 10)))
        await asyncio.sleep(0.3)
        assert await count(pool, iid) == 1
        await until(pool, iid, 21)
        bus.notifier.emit(ev.Hangup(interaction=i, cause="normal_clearing"))  # the node's last event
    finally:
        await loops.stop()
        await bus.close()  # sends it and lets the log take it before the node goes
    assert await count(pool, iid) == 22
    assert await pool.fetchval("SELECT node FROM interactions WHERE id = $1 AND ended_at IS NOT NULL", iid) == "node-1"
    stream = [e for _id, f in await r.xrange(EVENTS) for e in ev.decode_all(f[b"e"])[0]]
    assert len(stream) >= 22 and await r.xpending(EVENTS, "interactions") == {
        "pending": 0, "min": None, "max": None, "consumers": []}


async def until_reading(bus: EventBus) -> None:
    for _ in range(200):
        if bus.record.reading:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the interaction log never started reading")


async def test_the_record_is_rebuilt_from_the_stream(r: aioredis.Redis, pool: asyncpg.Pool, tmp_path: Path) -> None:
    await r.delete(EVENTS)
    bus = EventBus("node-2", r, pool, tmp_path / "spool", pause=0.0)
    loops = Loops()
    bus.start(loops)
    ids = [uuid.uuid4() for _ in range(3)]
    for n, iid in enumerate(ids):
        i = str(iid)
        bus.notifier.emit(ev.CallArrived(interaction=i, caller_number=f"+1555000{n}", dialed_number="100"))
        bus.notifier.emit(ev.CallAnswered(interaction=i))
        bus.notifier.emit(ev.DigitsCollected(interaction=i, digits=f"{n}42", reason="max"))
        bus.notifier.emit(ev.Hangup(interaction=i, cause="normal_clearing", side="remote", code=200))
    for iid in ids:
        await until(pool, iid, 4)
    await loops.stop()
    await bus.close()
    live_rows = await pool.fetch("SELECT * FROM interactions WHERE id = ANY($1) ORDER BY id", ids)
    live_events = await pool.fetch("SELECT interaction_id, at, event, queue_id, agent_id, data, event_id "
                                   "FROM interaction_events WHERE interaction_id = ANY($1) ORDER BY id", ids)
    await pool.execute("DELETE FROM interactions WHERE id = ANY($1)", ids)  # and their events with them

    log = InteractionLog(pool, tmp_path / "spool")
    read, bad = await rebuild(r, log, chunk=5)  # several chunks
    assert (read, bad) == (18, 0) and log.written_events == 12  # CALLSTATE is derived: read, not written
    assert await pool.fetch("SELECT * FROM interactions WHERE id = ANY($1) ORDER BY id", ids) == live_rows
    assert await pool.fetch("SELECT interaction_id, at, event, queue_id, agent_id, data, event_id "
                            "FROM interaction_events WHERE interaction_id = ANY($1) ORDER BY id", ids) == live_events
    await rebuild(r, log)  # again: everything is there already
    assert log.written_events == 12


async def test_sessions_follow_their_calls_events_and_any_node_reads_them(r: aioredis.Redis, pool: asyncpg.Pool,
                                                                         tmp_path: Path) -> None:
    await r.delete(EVENTS)
    bus = EventBus("node-3", r, pool, tmp_path / "spool", pause=0.0)
    loops = Loops()
    bus.start(loops)
    a, b, gone = (str(uuid.uuid4()) for _ in range(3))
    try:
        for i, n in ((a, "+15550031"), (b, "+15550032")):
            bus.notifier.emit(ev.CallArrived(interaction=i, at=100.0, caller_number=n, media_call=f"m-{n}"))
            bus.notifier.emit(ev.CallAnswered(interaction=i, at=100.5))
        bus.notifier.emit(ev.EnterQueue(interaction=a, at=101.0, queue="support", position=1))
        bus.notifier.emit(ev.Offer(interaction=a, at=102.0, queue="support", agents=[7]))
        bus.notifier.emit(ev.Hangup(interaction=b, at=103.0, cause="normal_clearing"))
        bus.notifier.emit(ev.Hangup(interaction=gone, at=104.0, cause="control_plane_lost", node="dead-node"))
        for _ in range(200):
            if await sessions.read(r, gone):
                break
            await asyncio.sleep(0.01)
        live = await sessions.live(r)  # what any node sees
        assert [(s["interaction"], s["state"], s["queue"], s["agent_id"], s["node"]) for s in live] == [
            (a, "offering", "support", 7, "node-3")]
        assert (await sessions.read(r, b))["state"] == "ended"  # type: ignore[index]
        assert (await sessions.read(r, gone))["state"] == "ended"  # type: ignore[index]  # another node's call
        assert list(bus.sessions.live) == [a]
        # An ended call's later events (its agent leg's, a late lookup) still find their interaction.
        late = bus.sessions.for_call("m-+15550032")
        assert late is not None and (late.interaction, late.state) == (b, "ended")
    finally:
        await loops.stop()
        await bus.close()
    names = [(e.NAME, getattr(e, "state", "")) for e in (
        x for _id, f in await r.xrange(EVENTS) for x in ev.decode_all(f[b"e"])[0]) if e.interaction == a]  # type: ignore[attr-defined]
    assert names == [("DID", ""), ("ANSWER", ""), ("CALLSTATE", "ivr"), ("ENTERQUEUE", ""), ("CALLSTATE", "queued"),
                     ("OFFER", ""), ("CALLSTATE", "offering")]
