"""The stream writer against a real Redis: order, trimming, and nothing lost while Redis is away
(held in memory, spooled past the bound, sent first on reconnect or at the next start)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
import redis.asyncio as aioredis

from bus import events as ev
from bus.keys import EVENTS
from bus.redis import connect
from bus.stream import FIELD, StreamWriter
from callcenter.embedded import free_port
from tests.conftest import Stores, fresh_redis

DB = 14


@pytest_asyncio.fixture(loop_scope="session")
async def r(stores: Stores) -> AsyncIterator[aioredis.Redis]:
    async with fresh_redis(stores, DB) as client:
        yield client


async def stream(r: aioredis.Redis) -> list[ev.Event]:
    return [e for _id, fields in await r.xrange(EVENTS) for e in ev.decode_all(fields[FIELD.encode()])[0]]


def dtmf(n: int) -> ev.Dtmf:
    return ev.Dtmf(interaction="00000000-0000-0000-0000-000000000001", digit=str(n % 10), at=1000.0 + n)


async def until(cond: object, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if await cond():  # type: ignore[operator]
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


async def test_events_reach_the_stream_in_emission_order(r: aioredis.Redis, tmp_path: Path) -> None:
    await r.delete(EVENTS)
    w = StreamWriter(r, tmp_path)
    stop = asyncio.Event()
    task = asyncio.create_task(w.run(stop))
    sent = [dtmf(n) for n in range(1200)]  # more than one pipeline
    for e in sent[:700]:
        w.add(e)
    await asyncio.sleep(0)
    for e in sent[700:]:
        w.add(e)
    await until(lambda: _count(r, 1200))
    stop.set()
    await task
    assert await stream(r) == sent and w.sent == 1200 and w.backlog == 0


async def _count(r: aioredis.Redis, n: int) -> bool:
    return len(await stream(r)) >= n


async def test_redis_away_then_back_and_a_restart_in_between_lose_nothing(r: aioredis.Redis, tmp_path: Path) -> None:
    await r.delete(EVENTS)
    dead = connect(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there: Redis is away
    w = StreamWriter(dead, tmp_path, memory_bound=50)
    stop = asyncio.Event()
    task = asyncio.create_task(w.run(stop))
    sent = [dtmf(n) for n in range(230)]
    for n, e in enumerate(sent[:200]):
        w.add(e)
        if n % 40 == 0:
            await asyncio.sleep(0.15)  # failed sends: past the bound, memory goes to the spool
    await until(lambda: _true(w.failures > 0 and list(tmp_path.glob("events-*.jsonl"))))
    stop.set()
    await task
    await w.close(timeout=1.0)  # the node stops with Redis still away: the rest is spooled too
    await dead.aclose()
    assert w.backlog == 200 and w.spooled == 200

    again = StreamWriter(r, tmp_path)  # the next start, Redis back
    for e in sent[200:]:
        again.add(e)  # emitted before the spool is sent: they still come after it
    stop = asyncio.Event()
    task = asyncio.create_task(again.run(stop))
    await until(lambda: _count(r, 230))
    stop.set()
    await task
    assert await stream(r) == sent
    assert not list(tmp_path.glob("events-*")) and again.backlog == 0


async def _true(v: object) -> bool:
    return bool(v)


async def test_the_stream_is_trimmed_by_age(r: aioredis.Redis, tmp_path: Path) -> None:
    await r.delete(EVENTS)
    for n in range(1, 501):  # a day-old backlog, then the writer's first event
        await r.xadd(EVENTS, {FIELD: dtmf(n).encode()}, id=f"{n}-0")
    w = StreamWriter(r, tmp_path, retention=3600)
    latest = dtmf(0)
    w.add(latest)
    await w.send()
    await w._trim()  # what the writer's loop does once a minute
    first = (await r.xrange(EVENTS, count=1))[0][0]
    assert int(first.split(b"-")[0]) > 100  # whole old nodes are gone (trimming is approximate)
    assert ev.decode((await r.xrevrange(EVENTS, count=1))[0][1][FIELD.encode()]) == latest
