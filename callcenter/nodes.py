"""Control-plane nodes: each has an id, a heartbeat key with a TTL (alive), and a last-seen time
that outlives it (when it was last alive). Other nodes read both to tell a live node from a dead
one — and never decide while their own view of Redis is fresh from an outage (a Redis that came
back empty, or a heartbeat that could not be written, is not a dead node)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time

import redis.asyncio as aioredis

from bus.keys import NODE_ALIVE_KEY, NODE_LAST_SEEN
from bus.redis import REDIS_DOWN

log = logging.getLogger("callcenter.nodes")

NODE_TTL = 10


def node_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class NodeHeartbeat:
    def __init__(self, redis: aioredis.Redis, node: str):
        self.redis = redis
        self.node = node
        self.stable_since = 0.0  # monotonic time since which every beat was written; 0: not now

    async def beat(self) -> bool:
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.set(NODE_ALIVE_KEY.format(node=self.node), "1", ex=NODE_TTL)
            pipe.hset(NODE_LAST_SEEN, self.node, f"{time.time():.3f}")
            await pipe.execute()
        except REDIS_DOWN as exc:
            if self.stable_since:
                log.warning("node heartbeat: Redis unreachable (%s)", exc)
            self.stable_since = 0.0
            return False
        if not self.stable_since:
            self.stable_since = time.monotonic()
        return True

    @property
    def judging(self) -> bool:
        """True once this node's beats have been written for longer than a TTL without a gap: by then
        every live node has renewed its own key, so a missing key means a dead node."""
        return bool(self.stable_since) and time.monotonic() - self.stable_since > NODE_TTL + 1

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.beat()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), NODE_TTL / 4)

    async def leave(self) -> None:
        with contextlib.suppress(*REDIS_DOWN):
            await self.redis.delete(NODE_ALIVE_KEY.format(node=self.node))


async def alive(redis: aioredis.Redis, node: str) -> bool:
    return bool(await redis.exists(NODE_ALIVE_KEY.format(node=node)))


async def last_seen(redis: aioredis.Redis, node: str) -> float | None:
    raw = await redis.hget(NODE_LAST_SEEN, node)
    return float(raw) if raw else None
