"""The reconciler against the real Redis: no agent stays reserved, on a dead call or in wrap-up,
including when the process that reserved the agent died mid-offer."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator

import pytest_asyncio

from acd.agent_state import NO_ANSWER, Activity, AgentState, Params, Status
from acd.agent_store import AgentStore
from acd.reconciler import Reconciler
from bus import events as ev
from bus.keys import EVENTS
from bus.stream import FIELD
from tests.conftest import ROOT, Stores, fresh_redis


@pytest_asyncio.fixture(loop_scope="session")
async def store(stores: Stores) -> AsyncIterator[AgentStore]:
    async with fresh_redis(stores, 5) as r:
        yield AgentStore(r)


async def test_each_stuck_activity_is_released(store: AgentStore) -> None:
    live_calls = {"alive"}
    changes: list[tuple[str, AgentState, AgentState]] = []

    async def alive(call_id: str) -> bool:
        return call_id in live_calls

    rec = Reconciler(store, alive, on_change=lambda e, b, a: changes.append((e, b, a)), wrap_up=5)
    for a in (1, 2, 3, 4):
        await store.transition(a, "login", now=0)
        await store.reserve(a, {1: "ringing", 2: "alive", 3: "dead", 4: "wrapping"}[a], ring_timeout=10, now=0)
    for a, call in ((2, "alive"), (3, "dead"), (4, "wrapping")):
        await store.transition(a, "connect", now=1, expect_call=call)
    await store.transition(4, "end_call", Params(wrap_up=20), now=2, expect_call="wrapping")

    assert await rec.run_once(now=5) == []  # nothing is due yet
    done = dict(await rec.run_once(now=40))
    assert done == {1: "ring_no_answer", 2: "still_on_call", 3: "end_call", 4: "end_wrap_up"}
    s1, s2, s3, s4 = [await store.get(a) for a in (1, 2, 3, 4)]
    assert (s1.status, s1.reason, s1.activity) == (Status.NOT_READY, NO_ANSWER, Activity.IDLE)
    assert s2.activity is Activity.ON_CALL and s2.deadline > 40  # checked, still talking
    assert s3.activity is Activity.WRAP_UP and s3.deadline == 45  # the dead call was closed
    assert s4.routable
    # Every change is reported (for the interaction log), earliest deadline first.
    assert {c[1].agent_id: c[0] for c in changes} == done
    assert [c[1].deadline for c in changes] == sorted(c[1].deadline for c in changes)
    assert dict(await rec.run_once(now=46)) == {3: "end_wrap_up"}
    assert (await store.get(3)).routable
    # The stream has every change but the finding that agent 2's call is alive: it changed nothing
    # anyone sees, only the time of the next check.
    entries: list[tuple[bytes, dict[bytes, bytes]]] = await store.redis.xrange(EVENTS)  # type: ignore[assignment]
    streamed = [(e.agent_id, e.transition) for _id, fields in entries
                for e in ev.decode_all(fields[FIELD.encode()])[0] if isinstance(e, ev.AgentStateChanged)]
    assert [t for a, t in streamed if a == 2] == ["login", "reserve", "connect"]
    assert [t for a, t in streamed if a == 3] == ["login", "reserve", "connect", "end_call", "end_wrap_up"]


async def test_agent_reserved_by_a_process_that_died_is_freed(store: AgentStore, stores: Stores) -> None:
    url = stores.redis_db(5)
    await store.transition(50, "login", now=0)
    # Another node reserves the agent for an offer and dies before ringing or releasing it.
    code = ("import asyncio, os, time, redis.asyncio as r\n"
            "from acd.agent_store import AgentStore\n"
            "async def m():\n"
            f"    s = AgentStore(r.from_url('{url}'))\n"
            "    assert await s.reserve(50, 'orphan', ring_timeout=2)\n"
            "    os._exit(9)\n"
            "asyncio.run(m())\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT)
    assert p.returncode == 9
    stuck = await store.get(50)
    assert stuck.activity is Activity.RESERVED and stuck.call_id == "orphan"

    async def never(call_id: str) -> bool:
        return False

    rec = Reconciler(store, never)
    assert await rec.run_once(now=stuck.deadline - 0.1) == []
    assert await rec.run_once(now=stuck.deadline + 0.1) == [(50, "ring_no_answer")]
    assert (await store.get(50)).activity is Activity.IDLE


async def test_two_reconcilers_apply_a_timeout_once(store: AgentStore) -> None:
    await store.transition(60, "login", now=0)
    await store.reserve(60, "c", ring_timeout=1, now=0)

    async def never(call_id: str) -> bool:
        return False

    a, b = Reconciler(store, never), Reconciler(store, never)
    import asyncio

    ra, rb = await asyncio.gather(a.run_once(now=5), b.run_once(now=5))
    assert sorted(ra + rb) == [(60, "ring_no_answer")]
    assert (await store.get(60)).version == 3
