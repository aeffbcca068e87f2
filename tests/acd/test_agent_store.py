"""Agent states in the real Redis: atomic reservation across processes, deadlines, stale events."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from acd.agent_state import Activity, InvalidTransition, Params
from acd.agent_store import AgentStore
from bus import events as ev
from bus.keys import EVENTS
from bus.stream import FIELD
from tests.conftest import ROOT, Stores, fresh_redis

RACER = """
import asyncio, json, sys
import redis.asyncio as aioredis
from acd.agent_store import AgentStore
from bus import events as ev
from bus.keys import EVENTS
from bus.stream import FIELD
async def main(url, name, n):
    store = AgentStore(aioredis.from_url(url))
    won = [a for a in range(1, n + 1) if await store.reserve(a, f"{name}-{a}", ring_timeout=30)]
    print(json.dumps(won))
asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


@pytest_asyncio.fixture(loop_scope="session")
async def store(stores: Stores) -> AsyncIterator[AgentStore]:
    async with fresh_redis(stores, 4) as r:
        yield AgentStore(r)


async def test_two_processes_never_reserve_the_same_agent(store: AgentStore, stores: Stores) -> None:
    n = 300
    for a in range(1, n + 1):
        await store.transition(a, "login", now=0)
    url = stores.redis_db(4)
    procs = [subprocess.Popen([sys.executable, "-c", RACER, url, name, str(n)], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True) for name in ("node-a", "node-b", "node-c")]
    won = {name: set(json.loads(p.communicate(timeout=60)[0])) for name, p in zip(("node-a", "node-b", "node-c"),
                                                                                 procs, strict=True)}
    assert not (won["node-a"] & won["node-b"]) and not (won["node-a"] & won["node-c"])
    assert not (won["node-b"] & won["node-c"])
    assert set().union(*won.values()) == set(range(1, n + 1))  # and every agent went to someone
    for name, agents in won.items():
        for a in list(agents)[:20]:
            s = await store.get(a)
            assert s.activity is Activity.RESERVED and s.call_id == f"{name}-{a}"


async def test_deadlines_are_found_and_late_timers_cannot_touch_the_next_call(store: AgentStore) -> None:
    await store.transition(900, "login", now=0)
    s = await store.reserve(900, "call-1", ring_timeout=15, now=100)
    assert s is not None and await store.due(now=114) == [] and await store.due(now=116) == [900]
    await store.transition(900, "connect", now=101, expect_call="call-1")
    await store.transition(900, "end_call", Params(wrap_up=0), now=110, expect_call="call-1")
    assert await store.reserve(900, "call-2", ring_timeout=15, now=120) is not None
    # The first call's ring timer fires late: it must not pause the agent who is ringing for call 2.
    with pytest.raises(InvalidTransition, match="no longer on call"):
        await store.transition(900, "ring_no_answer", now=121, expect_call="call-1")
    assert (await store.get(900)).call_id == "call-2"


async def test_concurrent_transitions_are_serialized(store: AgentStore) -> None:
    await store.transition(901, "login", now=0)
    results = await asyncio.gather(*(store.transition(901, "not_ready", Params(reason=f"r{i}"), now=1)
                                     for i in range(10)))
    s = await store.get(901)
    assert s.version == 1 + 10 and s.reason in {r.reason for r in results}


async def test_every_transition_is_on_the_event_stream_written_by_the_same_script(stores: Stores) -> None:
    async with fresh_redis(stores, 4) as r:
        store = AgentStore(r, node="node-x")
        await store.transition(77, "login", now=10.5)
        await store.transition(77, "not_ready", Params(reason="lunch"), now=11.25)
        await store.transition(77, "available", now=12.0)
        assert await store.reserve(77, "call-9", ring_timeout=15, now=13.0) is not None
        got = [ev.decode(f[FIELD.encode()]) for _id, f in await r.xrange(EVENTS)]
    assert all(isinstance(e, ev.AgentStateChanged) and e.agent_id == 77 and e.node == "node-x" for e in got)
    assert [(e.transition, e.status, e.activity, e.reason, e.call, e.version, e.at) for e in got] == [  # type: ignore[attr-defined]
        ("login", "available", "idle", "", "", 1, 10.5),
        ("not_ready", "not_ready", "idle", "lunch", "", 2, 11.25),
        ("available", "available", "idle", "", "", 3, 12.0),
        ("reserve", "available", "reserved", "", "call-9", 4, 13.0)]
    assert len({e.id for e in got}) == 4
