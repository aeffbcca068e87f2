"""Redis faults, on the platform's own embedded Redis as `make run` starts it: killed (SIGKILL) and
frozen (SIGSTOP). Calls in progress keep running and no worker is taken for dead; the server is
started again with its data, so agent states and the routing directory are what they were and a
queue call reaches the agent's phone again within seconds; a call that arrives while Redis is
frozen is refused within two seconds (480) and still gets a record."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from bus import keys
from tests.conftest import Platform, Stores, sipp
from tests.faults.helpers import (
    agent_with_phone,
    answered,
    byes,
    figure,
    hang_up,
    record,
    redis_pid,
    redis_port,
    two_worker_platform,
    wait_healthy,
    waiting_callers,
)
from tests.sip.phones import result

PLAN = """
[[route]]
number = "570"
name = "redisq"
action = "queue"
prompt = "connecting"
queue = "redisq"

[[route]]
number = "300"
name = "loop"
action = "loop"
prompt = "hold_loop"
"""


@pytest.fixture
def platform(stores: Stores, tmp_path: Path) -> Iterator[Platform]:
    p = two_worker_platform(stores, tmp_path, PLAN, redis_db=None)
    yield p
    if p.proc.poll() is None:
        assert p.stop() == 0


async def test_redis_killed_calls_go_on_and_routing_comes_back(platform: Platform, pool: asyncpg.Pool,
                                                               tmp_path: Path) -> None:
    p = platform
    agent = agent_with_phone(p, 40)
    before = {w["worker_id"]: w["pid"] for w in p.workers()}
    callers = waiting_callers(p, 2)
    try:
        await answered(pool, callers)
        killed_at = time.time()
        os.kill(redis_pid(p), signal.SIGKILL)
        recovered = wait_healthy(p, killed_at)
        assert recovered < 10, recovered
        await asyncio.sleep(3)  # past the heartbeat TTL: a supervisor fooled by the outage would act now
        assert all(c.proc.poll() is None for c in callers), "a call in progress was dropped"
        health = p.health()
        assert health["redis"]["restarts"] == 1 and health["routing"]["ok"], health
        assert {w["worker_id"]: w["pid"] for w in p.workers()} == before, "a worker was taken for dead"
        assert all(w["restarts"] == 0 for w in p.workers())
        # Agent state kept (persistence), directory kept: a queue call reaches the agent's phone.
        assert p.get("/api/agents/rita")[1]["state"]["status"] == "available"  # type: ignore[index]
        res = await asyncio.to_thread(sipp, "load_call.xml", f"127.0.0.1:{p.sip_port}", calls=1, service="570",
                                      cwd=tmp_path, extra=["-d", "4000", "-trace_logs"], timeout=30)
        assert "ANSWERED" in "".join(x.read_text() for x in tmp_path.glob("*_logs.log")), res.stdout[-1500:]
        figure("Redis killed (SIGKILL)", calls_in_progress=2, calls_dropped=0, workers_restarted=0,
               healthy_again_s=round(recovered, 2), agent_state_kept=True, queue_call_after=True)
        # The calls that lived through the outage end normally, and their records say so.
        assert p.stop() == 0
        assert len(await byes(callers, 5)) == 2
    finally:
        hang_up(callers)
    calls = result(agent)["calls"]  # type: ignore[arg-type]
    assert calls and calls[0]["answered"], calls
    for c in callers:
        row = await record(pool, c.interaction["id"])  # type: ignore[index]
        assert row["disconnect_reason"] == "worker_shutdown", dict(row)


async def test_redis_frozen_new_call_refused_fast_and_recorded(platform: Platform, pool: asyncpg.Pool,
                                                               tmp_path: Path) -> None:
    p = platform
    callers = waiting_callers(p, 1)
    try:
        await answered(pool, callers)
        frozen_at = time.time()
        os.kill(redis_pid(p), signal.SIGSTOP)
        since = time.time()
        res = await asyncio.to_thread(sipp, "load_call.xml", f"127.0.0.1:{p.sip_port}", calls=1, service="300",
                                      cwd=tmp_path, extra=["-d", "1000", "-trace_logs"], timeout=30)
        refused_in = time.time() - since
        log = "".join(x.read_text() for x in tmp_path.glob("*_logs.log"))
        assert "ANSWERED" not in log and refused_in < 3, (refused_in, log, res.stdout[-1500:])
        recovered = wait_healthy(p, frozen_at)
        assert recovered < 15, recovered
        assert p.health()["redis"]["last_fault"].startswith("no answer"), p.health()
        await asyncio.sleep(3)
        assert callers[0].proc.poll() is None, "the call in progress was dropped"
        assert all(w["restarts"] == 0 for w in p.workers()), "a worker was taken for dead"
    finally:
        hang_up(callers)
    measured = {"new_call_refused_in_s": round(refused_in, 2), "healthy_again_s": round(recovered, 2),
                "calls_dropped": 0, "workers_restarted": 0}
    # The refused caller has a record, written once Redis was back.
    deadline = time.monotonic() + 20
    row = None
    while time.monotonic() < deadline and row is None:
        row = await pool.fetchrow("SELECT * FROM interactions WHERE caller_number LIKE '+15551%' "
                                  "AND arrived_at >= to_timestamp($1) AND ended_at IS NOT NULL", since - 1)
        await asyncio.sleep(0.2)
    assert row is not None, "the call refused during the outage left no record"
    assert row["disconnect_reason"] in ("control_unavailable", "control_plane_timeout"), dict(row)
    figure("Redis frozen (SIGSTOP)", **measured, refused_call_recorded=row["disconnect_reason"])


async def test_redis_back_empty_directory_rebuilt_and_no_worker_blamed(platform: Platform, pool: asyncpg.Pool,
                                                                       tmp_path: Path) -> None:
    """A Redis that comes back with nothing (an external one without persistence, a new server):
    flushed here. The directory is rebuilt from PostgreSQL, no worker is taken for dead although
    every heartbeat key is gone, and a queue call reaches the agent once the agent is available."""
    p = platform
    agent = agent_with_phone(p, 30)
    before = {w["worker_id"]: w["pid"] for w in p.workers()}
    r = aioredis.from_url(f"redis://127.0.0.1:{redis_port(p)}/0")
    try:
        await r.flushall()
        flushed_at = time.time()
        assert not await r.exists(keys.QUEUE_SETTINGS_KEY.format(queue="redisq"))
        rebuilt = wait_healthy(p, flushed_at)
        assert rebuilt < 5
        assert await r.exists(keys.QUEUE_SETTINGS_KEY.format(queue="redisq"))
    finally:
        await r.aclose()
    await asyncio.sleep(3)
    assert {w["worker_id"]: w["pid"] for w in p.workers()} == before, "a worker was taken for dead"
    # Agent states live only in Redis: the agent makes themself available again.
    assert p.send("POST", "/api/agents/rita/status", {"status": "available"})[0] == 200
    res = await asyncio.to_thread(sipp, "load_call.xml", f"127.0.0.1:{p.sip_port}", calls=1, service="570",
                                  cwd=tmp_path, extra=["-d", "3000", "-trace_logs"], timeout=30)
    assert "ANSWERED" in "".join(x.read_text() for x in tmp_path.glob("*_logs.log")), res.stdout[-1500:]
    assert p.stop() == 0
    calls = result(agent)["calls"]  # type: ignore[arg-type]
    assert calls and calls[0]["answered"], calls
    figure("Redis back empty (FLUSHALL)", directory_rebuilt_s=round(rebuilt, 2), workers_restarted=0,
           agent_states="lost: agents set themselves available again")


async def test_redis_frozen_a_queued_caller_keeps_their_place(platform: Platform, pool: asyncpg.Pool) -> None:
    """A caller waiting in a queue while Redis is frozen (and then restarted by the watchdog) keeps
    waiting and is connected to the agent who becomes available afterwards."""
    p = platform
    agent = agent_with_phone(p, 30)
    assert p.send("POST", "/api/agents/rita/status", {"status": "not_ready", "reason": "break"})[0] == 200
    callers = waiting_callers(p, 1, service="570")
    try:
        await answered(pool, callers)
        iid = callers[0].interaction["id"]  # type: ignore[index]

        async def logged(event: str, timeout: float) -> bool:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if await pool.fetchval("SELECT 1 FROM interaction_events WHERE interaction_id = $1 AND event = $2",
                                       iid, event):
                    return True
                await asyncio.sleep(0.2)
            return False

        assert await logged("ENTERQUEUE", 10)
        frozen_at = time.time()
        os.kill(redis_pid(p), signal.SIGSTOP)  # longer than the queue's 5 s staffing check
        recovered = wait_healthy(p, frozen_at)
        await asyncio.sleep(3)
        assert callers[0].proc.poll() is None, "the queued caller was dropped"
        assert p.send("POST", "/api/agents/rita/status", {"status": "available"})[0] == 200
        assert await logged("CONNECT", 20), "the queued caller never reached the agent"
        figure("Redis frozen with a caller in the queue", caller_kept=True, connected_after=True,
               healthy_again_s=round(recovered, 2))
    finally:
        hang_up(callers)
    calls = result(agent)["calls"]  # type: ignore[arg-type]
    assert calls and calls[0]["answered"], calls
