"""Supervised background loops: every long-running task of a control-plane node runs here. A loop
that raises is logged with its traceback and started again after a back-off, and ``status()`` says
so in ``/healthz`` — a dead loop must never silently leave a node that looks healthy."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("callcenter.tasks")

Loop = Callable[[asyncio.Event], Coroutine[Any, Any, None]]  # runs until the event is set


@dataclass
class _Entry:
    name: str
    loop: Loop
    task: asyncio.Task[None] | None = None
    restarts: int = 0
    last_error: str = ""
    failed_at: float = 0.0
    restarting: bool = False  # died, waiting out its back-off


class Loops:
    def __init__(self, backoff_max: float = 10.0):
        self.stopping = asyncio.Event()
        self.backoff_max = backoff_max
        self._entries: dict[str, _Entry] = {}

    def start(self, name: str, loop: Loop) -> asyncio.Task[None]:
        """Run ``loop`` until it returns; the task returned ends with it."""
        if name in self._entries:
            raise ValueError(f"loop {name!r} already runs")
        entry = _Entry(name, loop)
        self._entries[name] = entry
        entry.task = asyncio.create_task(self._keep(entry), name=name)
        return entry.task

    async def _keep(self, e: _Entry) -> None:
        while not self.stopping.is_set():
            try:
                await e.loop(self.stopping)
                return  # asked to stop (by this event or its own)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - whatever killed it, it must come back
                e.restarts += 1
                e.last_error = f"{type(exc).__name__}: {exc}"[:300]
                e.failed_at = time.time()
                delay = min(0.5 * 2 ** min(e.restarts - 1, 5), self.backoff_max)
                log.exception("background loop %s died (%d so far); restarting in %.1f s", e.name, e.restarts, delay)
                e.restarting = True
                try:
                    await asyncio.wait_for(self.stopping.wait(), delay)
                except TimeoutError:
                    pass
                e.restarting = False

    def status(self) -> list[dict[str, object]]:
        out: list[dict[str, object]] = []
        for e in self._entries.values():
            done = e.task is None or e.task.done()
            out.append({"name": e.name, "state": "stopped" if done else "restarting" if e.restarting else "running",
                        "restarts": e.restarts, "last_error": e.last_error or None, "failed_at": e.failed_at or None})
        return out

    async def stop(self, timeout: float = 5.0) -> None:
        """Ask every loop to end (they watch the event), then cancel whatever did not."""
        self.stopping.set()
        tasks = [e.task for e in self._entries.values() if e.task is not None]
        if not tasks:
            return
        _done, late = await asyncio.wait(tasks, timeout=timeout)
        for t in late:
            log.warning("background loop %s did not stop in %.0f s; cancelling it", t.get_name(), timeout)
            t.cancel()
        if late:
            await asyncio.wait(late, timeout=timeout)
