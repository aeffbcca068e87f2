"""Through Kamailio with several workers: simultaneous calls are all answered and spread; a worker
killed mid-call loses only its own calls, each closed with a cause; new calls keep being answered;
a burst beyond total capacity gets 503 for the excess and leaves accepted calls alone."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.conftest import ROOT, Platform, Stores, require, sipp, start_platform
from tests.sip.load import load, outcome

WORKERS = 7  # 3 inbound calls each with the wheel (4 per process, 1 kept for originated legs)


@pytest.fixture(scope="module")
def platform(stores: Stores, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    require("kamailio")
    p = start_platform(stores, tmp_path_factory.mktemp("frontdoor"), front_door="kamailio", workers=WORKERS)
    p.wait(lambda: p.health()["workers"]["up"] == WORKERS, what="all workers up")
    yield p
    assert p.stop() == 0


async def _loop_calls(pool: asyncpg.Pool, since: float, closed: bool = False) -> list[asyncpg.Record]:
    """Calls to the loop route since ``since``; with ``closed``, first wait (the record is written in
    batches a moment after the BYE) until every one of them has ended."""
    sql = "SELECT * FROM interactions WHERE route = 'loop' AND arrived_at >= to_timestamp($1) ORDER BY arrived_at"
    for _ in range(50):
        rows = await pool.fetch(sql, since)
        if not closed or all(r["ended_at"] is not None for r in rows):
            break
        await asyncio.sleep(0.1)
    return rows


async def test_twenty_simultaneous_calls_spread_across_workers(platform: Platform, pool: asyncpg.Pool,
                                                               tmp_path: Path) -> None:
    since = time.time()
    res = await asyncio.to_thread(load, f"127.0.0.1:{platform.sip_port}", tmp_path, 20, 5000, 50)
    assert (res.answered, res.refused, res.failed) == (20, 0, 0), res.proc.stdout[-3000:]
    rows = await _loop_calls(pool, since, closed=True)
    assert len(rows) == 20
    per_worker: dict[str, int] = {}
    for r in rows:
        per_worker[r["worker_id"]] = per_worker.get(r["worker_id"], 0) + 1
    cap = platform.health()["workers"]["items"][0]["capacity"]
    assert len(per_worker) == WORKERS, per_worker  # least-loaded dispatch uses every worker
    assert max(per_worker.values()) <= cap, per_worker  # and never offers one more than it holds
    assert all(r["answered_at"] and r["ended_at"] and r["disconnect_side"] == "caller" for r in rows)


async def test_killed_worker_closes_only_its_calls(platform: Platform, pool: asyncpg.Pool, tmp_path: Path) -> None:
    since = time.time()
    calls = 12
    args_dir = tmp_path / "long"
    args_dir.mkdir()
    def run_long() -> subprocess.CompletedProcess[str]:
        return sipp("load_call.xml", f"127.0.0.1:{platform.sip_port}", calls=calls, rate=50, limit=calls,
                    service="300", cwd=args_dir, extra=["-d", "12000", "-trace_logs", "-recv_timeout", "4000"],
                    timeout=60)

    long_calls = asyncio.create_task(asyncio.to_thread(run_long))
    for _ in range(100):
        rows = await _loop_calls(pool, since)
        if len(rows) == calls and all(r["answered_at"] for r in rows):
            break
        await asyncio.sleep(0.1)
    assert len(rows) == calls
    held: dict[str, int] = {}
    for r in rows:
        held[r["worker_id"]] = held.get(r["worker_id"], 0) + 1
    victim = max(held, key=lambda w: held[w])
    pid = next(w["pid"] for w in platform.workers() if w["worker_id"] == victim)
    os.kill(pid, signal.SIGKILL)

    # The victim's calls are closed with a cause within the heartbeat window; the others are untouched.
    for _ in range(100):
        closed = [r for r in await _loop_calls(pool, since) if r["ended_at"] is not None]
        if len(closed) >= held[victim]:
            break
        await asyncio.sleep(0.1)
    rows = await _loop_calls(pool, since)
    lost = [r for r in rows if r["worker_id"] == victim]
    others = [r for r in rows if r["worker_id"] != victim]
    assert all(r["disconnect_reason"] == "media_worker_lost" and r["disconnect_side"] == "system"
               for r in lost), [(r["worker_id"], r["disconnect_reason"]) for r in lost]
    assert all(r["ended_at"] is None for r in others), "a call on a healthy worker was closed"
    events = await pool.fetch("SELECT data FROM interaction_events WHERE event = 'HANGUP' AND interaction_id = "
                              "ANY($1::uuid[])", [r["id"] for r in lost])
    assert len(events) == len(lost)

    # New calls are answered by the remaining workers while the victim restarts.
    fresh = await asyncio.to_thread(load, f"127.0.0.1:{platform.sip_port}", tmp_path / "fresh", 5, 1000, 20)
    assert fresh.answered == 5, fresh.proc.stdout[-2000:]

    done = await long_calls
    res = outcome(args_dir, done, calls)
    assert res.answered == calls - held[victim], (res, held)
    survivor_ids = {r["id"] for r in others}
    ended = [r for r in await _loop_calls(pool, since, closed=True) if r["id"] in survivor_ids]
    assert [(r["disconnect_reason"], r["disconnect_side"]) for r in ended] == \
        [("normal_clearing", "caller")] * len(survivor_ids)
    platform.wait(lambda: next(w for w in platform.workers() if w["worker_id"] == victim)["up"], 20,
                  "the killed worker to be restarted")
    assert next(w for w in platform.workers() if w["worker_id"] == victim)["restarts"] == 1


async def test_burst_beyond_capacity_gets_503_for_the_excess(platform: Platform, pool: asyncpg.Pool,
                                                             tmp_path: Path) -> None:
    platform.wait(lambda: platform.health()["workers"]["up"] == WORKERS, what="all workers up")
    capacity = platform.health()["workers"]["capacity"]
    since = time.time()
    calls = capacity + 9
    res = await asyncio.to_thread(load, f"127.0.0.1:{platform.sip_port}", tmp_path, calls, 6000, 100)
    assert res.answered == capacity and res.refused == 9 and res.failed == 0, (res, res.proc.stdout[-2000:])
    rows = await _loop_calls(pool, since, closed=True)
    assert len(rows) == capacity  # refused calls never reached a worker's application
    assert all(r["disconnect_reason"] == "normal_clearing" and r["disconnect_side"] == "caller" for r in rows)


def test_kamailio_config_is_rendered_from_sip_config(platform: Platform) -> None:
    cfg = (platform.var_dir / "kamailio" / "kamailio.cfg").read_text()
    code = [ln for ln in cfg.splitlines() if not ln.lstrip().startswith("#")]
    assert not [ln for ln in code if "{{" in ln], "unfilled markers"
    assert f"listen=udp:127.0.0.1:{platform.sip_port}" in code
    lines = [ln for ln in (platform.var_dir / "kamailio" / "dispatcher.list").read_text().splitlines()
             if ln and not ln.startswith("#")]
    assert len(lines) == WORKERS and all("maxload=3" in ln for ln in lines)
    assert (ROOT / "sip_config" / "kamailio.cfg").exists()
