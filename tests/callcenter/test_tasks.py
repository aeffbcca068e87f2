"""Supervised background loops (callcenter/tasks.py): a loop that dies comes back and says so."""

from __future__ import annotations

import asyncio

from callcenter.tasks import Loops


async def test_a_dead_loop_is_restarted_and_reported() -> None:
    loops = Loops(backoff_max=0.2)
    runs: list[int] = []

    async def flaky(stop: asyncio.Event) -> None:
        runs.append(1)
        if len(runs) < 3:
            raise RuntimeError(f"boom {len(runs)}")
        await stop.wait()

    async def steady(stop: asyncio.Event) -> None:
        await stop.wait()

    loops.start("flaky", flaky)
    loops.start("steady", steady)
    await asyncio.sleep(0.05)
    first = {t["name"]: t for t in loops.status()}
    assert first["flaky"]["state"] == "restarting" and first["flaky"]["last_error"] == "RuntimeError: boom 1"
    assert first["steady"]["state"] == "running"
    for _ in range(100):
        if len(runs) == 3:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.05)
    now = {t["name"]: t for t in loops.status()}
    assert len(runs) == 3 and now["flaky"]["state"] == "running" and now["flaky"]["restarts"] == 2
    await loops.stop(timeout=1)
    assert {t["state"] for t in loops.status()} == {"stopped"}


async def test_a_loop_that_ignores_stop_is_cancelled() -> None:
    loops = Loops()

    async def deaf(_stop: asyncio.Event) -> None:
        await asyncio.sleep(3600)

    task = loops.start("deaf", deaf)
    await asyncio.sleep(0.01)
    await loops.stop(timeout=0.1)
    assert task.cancelled()
