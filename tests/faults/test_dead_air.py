"""Never dead air: whatever process goes away — a media worker, the control plane, or the whole
platform on Ctrl-C — every caller still on the line gets a BYE within a few seconds (counted, and
timed), and the record says how each call ended. Real SIPp callers behind the real Kamailio."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from callcenter.embedded import free_port
from callcenter.procs import pid_alive
from tests.conftest import Platform, Stores, launch
from tests.faults.helpers import answered, byes, figure, hang_up, record, two_worker_platform, waiting_callers
from tests.sip.phones import phone, result

BYE_WITHIN = 5.0  # seconds from the fault to the last caller's BYE


PLAN = """
[[route]]
number = "560"
name = "deadair"
action = "queue"
prompt = "connecting"
queue = "deadair"

[[route]]
number = "300"
name = "loop"
action = "loop"
prompt = "hold_loop"
"""


@pytest.fixture
def platform(stores: Stores, tmp_path: Path) -> Iterator[Platform]:
    p = two_worker_platform(stores, tmp_path, PLAN, redis_db=10)
    yield p
    if p.proc.poll() is None:
        p.stop()


def _pids(platform: Platform) -> list[int]:
    return [w["pid"] for w in platform.workers() if w["pid"]]


async def test_worker_killed_its_callers_get_a_bye(platform: Platform, pool: asyncpg.Pool) -> None:
    callers = waiting_callers(platform, 4)
    try:
        await answered(pool, callers)
        by_worker: dict[str, list] = {}
        for c in callers:
            assert c.interaction is not None
            by_worker.setdefault(c.interaction["worker_id"], []).append(c)
        victim = max(by_worker, key=lambda w: len(by_worker[w]))
        pid = next(w["pid"] for w in platform.workers() if w["worker_id"] == victim)
        killed_at = time.time()
        os.kill(pid, signal.SIGKILL)
        ended = await byes(by_worker[victim], BYE_WITHIN)
        assert ended == by_worker[victim] and all(c.got_bye for c in ended), "a caller was left in dead air"
        assert max(c.ended_at for c in ended) - killed_at < BYE_WITHIN
        others = [c for c in callers if c not in by_worker[victim]]
        assert not [c for c in others if c.poll()], "a call on the healthy worker was ended"
        for c in by_worker[victim]:
            row = await record(pool, c.interaction["id"])
            assert (row["disconnect_reason"], row["disconnect_side"]) == ("media_worker_lost", "system")
        figure("media worker killed (SIGKILL)", calls_on_it=len(ended), byes=len(ended),
               last_bye_s=round(max(c.ended_at for c in ended) - killed_at, 2), other_calls_dropped=0,
               records_lost=0)
    finally:
        hang_up(callers)


async def test_worker_killed_caller_and_agent_phone_both_get_a_bye(platform: Platform, pool: asyncpg.Pool) -> None:
    p = platform
    for method, path, body in (("POST", "/api/queues", {"name": "deadair", "settings": {"wrap_up": 1}}),
                               ("POST", "/api/agents", {"login": "dora", "name": "Dora", "extension": "461"}),
                               ("PUT", "/api/queues/deadair/members", {"members": [{"agent": "dora"}]})):
        assert p.send(method, path, body)[0] in (200, 201, 409)
    st, creds = p.send("POST", "/api/agents/dora/sip-password", {})
    assert st == 200
    agent = phone("--port", str(free_port()), "--agent", "--register", f"sip:461@127.0.0.1:{p.sip_port}",
                  f"--password={creds['password']}", "--tone", "1000", "--seconds", "25")  # type: ignore[index]
    assert p.send("POST", "/api/agents/dora/status", {"status": "available"})[0] == 200
    callers = waiting_callers(p, 1, service="560")
    try:
        await answered(pool, callers)
        iid = callers[0].interaction["id"]  # type: ignore[index]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not await pool.fetchval(
                "SELECT 1 FROM interaction_events WHERE interaction_id = $1 AND event = 'CONNECT'", iid):
            await asyncio.sleep(0.1)
        worker = callers[0].interaction["worker_id"]  # type: ignore[index]
        pid = next(w["pid"] for w in p.workers() if w["worker_id"] == worker)
        killed_at = time.time()
        os.kill(pid, signal.SIGKILL)
        ended = await byes(callers, BYE_WITHIN)
        assert ended and ended[0].got_bye, "the caller was left in dead air"
    finally:
        hang_up(callers)
    calls = result(agent)["calls"]
    assert calls and calls[0]["answered"], calls
    assert 0 < calls[0]["ended_at"] - killed_at < BYE_WITHIN, "the agent's phone was left in dead air"
    figure("media worker killed during an agent call", caller_bye=True,
           agent_phone_bye_s=round(calls[0]["ended_at"] - killed_at, 2))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and p.get("/api/agents/dora")[1]["state"]["activity"] == "on_call":  # type: ignore[index]
        await asyncio.sleep(0.2)
    assert p.get("/api/agents/dora")[1]["state"]["activity"] != "on_call"  # type: ignore[index]


async def test_clean_stop_says_goodbye_before_the_front_door_goes(platform: Platform, pool: asyncpg.Pool) -> None:
    callers = waiting_callers(platform, 3)
    try:
        await answered(pool, callers)
        stopped_at = time.time()
        assert platform.stop() == 0
        ended = await byes(callers, 1.0)
        assert len(ended) == 3 and all(c.got_bye for c in ended), [c.proc.returncode for c in callers]
        assert max(c.ended_at for c in ended) - stopped_at < BYE_WITHIN
        for c in callers:
            row = await record(pool, c.interaction["id"])  # type: ignore[index]
            assert row["disconnect_reason"] == "worker_shutdown"
        figure("clean stop (SIGINT)", calls=3, byes=len(ended),
               last_bye_s=round(max(c.ended_at for c in ended) - stopped_at, 2), records_lost=0)
    finally:
        hang_up(callers)


async def test_control_plane_killed_callers_get_a_bye_and_nothing_is_left(platform: Platform, stores: Stores,
                                                                          pool: asyncpg.Pool) -> None:
    callers = waiting_callers(platform, 3)
    workers = _pids(platform)
    kamailio = int((platform.var_dir / "kamailio" / "kamailio.pid").read_text())
    try:
        await answered(pool, callers)
        killed_at = time.time()
        os.kill(platform.proc.pid, signal.SIGKILL)  # the control plane alone, as the OOM killer would
        platform.proc.wait()
        ended = await byes(callers, BYE_WITHIN)
        assert len(ended) == 3 and all(c.got_bye for c in ended), [c.proc.returncode for c in callers]
        assert max(c.ended_at for c in ended) - killed_at < BYE_WITHIN
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(pid_alive(p) for p in [*workers, kamailio]):
            time.sleep(0.2)
        assert not [p for p in [*workers, kamailio] if pid_alive(p)], "processes left behind by the crash"
    finally:
        hang_up(callers)

    # The restarted control plane closes what the dead one left open, with the cause and the time
    # the calls ended (its last heartbeat), not the time it noticed.
    launch(stores, platform)
    for c in callers:
        row = await record(pool, c.interaction["id"], timeout=40)  # type: ignore[index]
        assert (row["disconnect_reason"], row["disconnect_side"]) == ("control_plane_lost", "system"), dict(row)
        assert abs(row["ended_at"].timestamp() - killed_at) < 5, (row["ended_at"], killed_at)
    figure("control plane killed (SIGKILL), then started again", calls=3, byes=len(ended),
           last_bye_s=round(max(c.ended_at for c in ended) - killed_at, 2), records_closed_after_restart=3,
           records_lost=0)
