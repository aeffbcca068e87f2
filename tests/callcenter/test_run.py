"""`callcenter run` stopped with Ctrl-C (SIGINT) while calls are up: every call is hung up and its
interaction closed, every process it started is gone, the record loses nothing."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path

import asyncpg
import pytest

from tests.conftest import Stores, require, sipp, start_platform


async def test_ctrl_c_with_calls_up_loses_nothing(stores: Stores, pool: asyncpg.Pool, tmp_path: Path) -> None:
    require("kamailio")
    p = start_platform(stores, tmp_path, front_door="kamailio", workers=2)
    p.wait(lambda: p.health()["workers"]["up"] == 2, what="workers up")
    since = time.time()
    calls = asyncio.create_task(asyncio.to_thread(
        sipp, "load_call.xml", f"127.0.0.1:{p.sip_port}", calls=4, rate=20, service="300", cwd=tmp_path,
        extra=["-d", "8000"], timeout=30))
    sql = "SELECT count(*) FROM interactions WHERE route = 'loop' AND answered_at >= to_timestamp($1)"
    for _ in range(100):
        if await pool.fetchval(sql, since) == 4:
            break
        await asyncio.sleep(0.1)
    assert await pool.fetchval(sql, since) == 4
    pids = [w["pid"] for w in p.workers()]

    t0 = time.monotonic()
    assert p.stop() == 0
    assert time.monotonic() - t0 < 20
    await calls
    rows = await pool.fetch("SELECT disconnect_reason, disconnect_side, ended_at FROM interactions WHERE route = "
                            "'loop' AND arrived_at >= to_timestamp($1)", since)
    assert len(rows) == 4
    assert all(r["ended_at"] is not None and r["disconnect_side"] == "platform" for r in rows), rows
    assert {r["disconnect_reason"] for r in rows} == {"worker_shutdown"}
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    assert str(p.var_dir) not in ps, "Kamailio (or another child) is still running"
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
