"""A media worker's side of the media protocol's transport (Redis, docs/media-protocol.md): events
out in order (held while Redis is away), the heartbeat and registry entry, commands in."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bus import keys
from bus.redis import REDIS_DOWN, connect
from media import protocol as mp

log = logging.getLogger("media.worker")

STALLED = 1.0  # seconds an operation may wait before Redis counts as away
COMMAND_BLOCK = 5  # seconds a command read blocks (whole seconds: Redis 6.2's BLPOP timeout)


class WorkerBus:
    def __init__(self, worker_id: str, redis_url: str):
        self.worker_id = worker_id
        self.events: asyncio.Queue[mp.Event] = asyncio.Queue()
        self.redis = connect(redis_url, max_connections=8)
        # Its own connection, which BLPOP holds. A long block: an idle worker's read that times out
        # is a round trip on both sides for nothing (64 workers: 64 a second at a 1 s block).
        self._cmd_redis = connect(redis_url, max_connections=2, socket_timeout=COMMAND_BLOCK + 2.0)
        self._cmd_key = keys.MEDIA_CMD_KEY.format(worker_id=worker_id)
        # False from the first failed operation until one succeeds again, or while one has waited
        # more than STALLED (a frozen Redis answers nothing): new calls are then refused at once
        # rather than left ringing for a control plane that cannot hear of them.
        self._ok = True
        self._pending: dict[str, float] = {}  # operation -> when it was sent

    @property
    def reachable(self) -> bool:
        now = time.monotonic()
        return self._ok and all(now - since < STALLED for since in self._pending.values())

    async def _timed(self, op: str, work: Awaitable[Any]) -> Any:
        self._pending[op] = time.monotonic()
        try:
            result = await work
        except REDIS_DOWN:
            self._ok = False
            raise
        finally:
            self._pending.pop(op, None)
        self._ok = True
        return result

    def emit(self, ev: mp.Event) -> None:
        self.events.put_nowait(ev)

    async def publish(self) -> None:
        """Send events in batches, in order; retry while Redis is away. Ends after WorkerDown."""
        while True:
            batch = [await self.events.get()]
            while not self.events.empty() and len(batch) < 200:
                batch.append(self.events.get_nowait())
            while True:
                try:
                    pipe = self.redis.pipeline(transaction=False)
                    for ev in batch:
                        pipe.xadd(keys.MEDIA_EVENTS, {"m": ev.encode()}, maxlen=200_000, approximate=True)
                    await self._timed("publish", pipe.execute())
                    break
                except REDIS_DOWN:
                    log.warning("redis unreachable; %d events held", len(batch) + self.events.qsize())
                    await asyncio.sleep(0.5)
            if isinstance(batch[-1], mp.WorkerDown):
                return

    async def heartbeat(self, stop: asyncio.Event, ttl: float, interval: float, info: Callable[[], str]) -> None:
        alive = keys.MEDIA_ALIVE_KEY.format(worker_id=self.worker_id)
        while not stop.is_set():
            try:
                pipe = self.redis.pipeline(transaction=False)
                pipe.set(alive, os.getpid(), px=int(ttl * 1000))
                pipe.hset(keys.MEDIA_WORKERS, self.worker_id, info())
                await self._timed("heartbeat", pipe.execute())
            except REDIS_DOWN:
                log.warning("heartbeat: redis unreachable")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    async def commands(self, stop: asyncio.Event, handle: Callable[[bytes], None]) -> None:
        while not stop.is_set():
            try:
                # One command per round trip: a second read for "whatever else is queued" came back
                # empty most of the time and cost as much CPU as the command (~0.27 ms, BENCHMARKS.md).
                item = await self._cmd_redis.blpop([self._cmd_key], timeout=COMMAND_BLOCK)
            except REDIS_DOWN:
                await asyncio.sleep(0.5)
                continue
            if item is not None:
                raw = item[1]
                assert isinstance(raw, bytes)  # the client does not decode responses
                handle(raw)

    async def forget_commands(self) -> None:
        """Commands left for an earlier process with this id are not for this one."""
        await self.redis.delete(self._cmd_key)

    async def leave(self) -> None:
        with contextlib.suppress(*REDIS_DOWN):
            await self.redis.hdel(keys.MEDIA_WORKERS, self.worker_id)
            await self.redis.delete(keys.MEDIA_ALIVE_KEY.format(worker_id=self.worker_id))

    async def aclose(self) -> None:
        await self.redis.aclose()
        await self._cmd_redis.aclose()
