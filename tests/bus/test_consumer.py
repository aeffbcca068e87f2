"""Stream subscribers against a real Redis: in order, acknowledged only once handled, one reader
per group at a time, and a dead reader's unacknowledged entries taken over by another node."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest_asyncio
import redis.asyncio as aioredis

from bus import events as ev
from bus.consumer import StreamConsumer
from bus.keys import EVENTS, EVENTS_LEASE_KEY
from bus.stream import FIELD
from tests.conftest import Stores, fresh_redis

DB = 15


@pytest_asyncio.fixture(loop_scope="session")
async def r(stores: Stores) -> AsyncIterator[aioredis.Redis]:
    async with fresh_redis(stores, DB) as client:
        yield client


def dtmf(n: int) -> ev.Dtmf:
    return ev.Dtmf(interaction="00000000-0000-0000-0000-000000000002", digit=str(n % 10), at=2000.0 + n)


async def put(r: aioredis.Redis, events: list[ev.Event]) -> None:
    for e in events:
        await r.xadd(EVENTS, {FIELD: e.encode()})


async def until(cond: object, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if cond():  # type: ignore[operator]
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


async def pending(r: aioredis.Redis, group: str) -> int:
    return int((await r.xpending(EVENTS, group))["pending"])


async def test_a_group_gets_every_event_once_in_order_and_acknowledges_it(r: aioredis.Redis) -> None:
    await r.delete(EVENTS)
    before = [dtmf(n) for n in range(5)]
    await put(r, before)  # in the stream before the group exists: "0" starts at the beginning
    got: list[ev.Event] = []

    async def handle(batch: list[ev.Event]) -> None:
        got.extend(batch)

    c = StreamConsumer(r, "ordered", "node-a", handle, count=7)
    stop = asyncio.Event()
    task = asyncio.create_task(c.run(stop))
    after = [dtmf(n) for n in range(5, 40)]
    await put(r, after)
    await until(lambda: len(got) == 40)
    stop.set()
    await task
    assert got == before + after and await pending(r, "ordered") == 0
    assert not await r.exists(EVENTS_LEASE_KEY.format(group="ordered"))  # released on a clean stop


async def test_a_failed_batch_comes_again_and_undecodable_entries_are_skipped(r: aioredis.Redis) -> None:
    await r.delete(EVENTS)
    sent = [dtmf(n) for n in range(3)]
    await put(r, sent[:1])
    await r.xadd(EVENTS, {FIELD: b'{"v":1,"name":"NO_SUCH_EVENT"}'})
    await put(r, sent[1:])
    calls: list[list[ev.Event]] = []

    async def flaky(batch: list[ev.Event]) -> None:
        calls.append(batch)
        if len(calls) == 1:
            raise RuntimeError("database refused it")

    c = StreamConsumer(r, "flaky", "node-a", flaky)
    stop = asyncio.Event()
    task = asyncio.create_task(c.run(stop))
    await until(lambda: len(calls) >= 2)
    stop.set()
    await task
    assert calls[0] == calls[1] == sent and c.skipped >= 1 and await pending(r, "flaky") == 0


async def test_one_reader_per_group_and_a_dead_one_is_taken_over(r: aioredis.Redis) -> None:
    await r.delete(EVENTS)
    a_got: list[ev.Event] = []
    b_got: list[ev.Event] = []

    async def a_handle(batch: list[ev.Event]) -> None:
        a_got.extend(batch)
        await asyncio.Event().wait()  # the node froze (or died) holding the batch

    async def b_handle(batch: list[ev.Event]) -> None:
        b_got.extend(batch)

    a = StreamConsumer(r, "shared", "node-a", a_handle, lease_ttl=1.0)
    b = StreamConsumer(r, "shared", "node-b", b_handle, lease_ttl=1.0)
    stop = asyncio.Event()
    ta = asyncio.create_task(a.run(stop))
    await until(lambda: a.reading)
    tb = asyncio.create_task(b.run(stop))
    sent = [dtmf(n) for n in range(10)]
    await put(r, sent)
    await until(lambda: a_got)
    await asyncio.sleep(0.2)
    assert not b_got and not b.reading  # node A holds the lease: B stands by
    await until(lambda: len(b_got) == 10, timeout=5)  # A stopped renewing: B adopts what A read
    assert b_got == sent and await pending(r, "shared") == 0
    more = [dtmf(n) for n in range(10, 15)]
    await put(r, more)
    await until(lambda: len(b_got) == 15)
    assert b_got == sent + more
    ta.cancel()
    stop.set()
    await tb
    consumers = {c["name"] for c in await r.xinfo_consumers(EVENTS, "shared")}
    assert b"node-b" in consumers


async def test_drain_takes_the_last_events_before_a_node_goes(r: aioredis.Redis) -> None:
    await r.delete(EVENTS)
    got: list[ev.Event] = []

    async def handle(batch: list[ev.Event]) -> None:
        got.extend(batch)

    c = StreamConsumer(r, "drained", "node-a", handle)
    sent = [dtmf(n) for n in range(1200)]
    await put(r, sent)
    await c.drain()
    assert got == sent and await pending(r, "drained") == 0
