"""Calls waiting in queues, shared in Redis.

Order: higher priority first (VIP tier, IVR-raised priority), then longest waiting. The order key is
one number, the same formula in every queue, so that for an agent in several queues the best caller
across them is simply the lowest key among the queues' heads (multi-queue fairness).

A call is offered only after ``claim`` removed it from its queue: ZREM succeeds for one caller only, so
two nodes can never offer the same call. ``requeue`` puts it back with its original key, i.e. ahead of
everyone who arrived later (a missed offer must not cost the caller their place).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import redis.asyncio as aioredis

from bus.keys import WAITING_KEY

MAX_PRIORITY = 99
_BAND = 10_000_000_000.0  # > any Unix time in seconds this code will see


def order_key(priority: int, enqueued_at: float) -> float:
    """Lower is served first. Priority 0..99 (higher is more urgent), then arrival time."""
    if not 0 <= priority <= MAX_PRIORITY:
        raise ValueError(f"priority must be 0..{MAX_PRIORITY}, got {priority}")
    return (MAX_PRIORITY - priority) * _BAND + enqueued_at


@dataclass(frozen=True)
class Head:
    queue: str
    call_id: str
    key: float

    @property
    def priority(self) -> int:
        return MAX_PRIORITY - int(self.key // _BAND)

    @property
    def enqueued_at(self) -> float:
        return self.key % _BAND


class Waiting:
    def __init__(self, redis: aioredis.Redis):
        self.redis = redis

    async def enqueue(self, queue: str, call_id: str, priority: int, enqueued_at: float) -> int:
        """Add a call; returns its 1-based position."""
        key = WAITING_KEY.format(queue=queue)
        await self.redis.zadd(key, {call_id: order_key(priority, enqueued_at)}, nx=True)
        return await self.position(queue, call_id) or 0

    async def position(self, queue: str, call_id: str) -> int | None:
        rank = await self.redis.zrank(WAITING_KEY.format(queue=queue), call_id)
        return None if rank is None else int(cast(int, rank)) + 1

    async def size(self, queue: str) -> int:
        return int(await self.redis.zcard(WAITING_KEY.format(queue=queue)))

    async def head(self, queue: str) -> Head | None:
        got = cast(list[tuple[bytes, float]],
                   await self.redis.zrange(WAITING_KEY.format(queue=queue), 0, 0, withscores=True))
        if not got:
            return None
        member, score = got[0]
        return Head(queue, member.decode() if isinstance(member, bytes) else str(member), float(score))

    async def best_head(self, queues: list[str]) -> Head | None:
        """The caller to serve first among several queues (highest priority, then longest wait)."""
        pipe = self.redis.pipeline(transaction=False)
        for q in queues:
            pipe.zrange(WAITING_KEY.format(queue=q), 0, 0, withscores=True)
        heads = [Head(q, got[0][0].decode(), float(got[0][1]))
                 for q, got in zip(queues, await pipe.execute(), strict=True) if got]
        return min(heads, key=lambda h: h.key, default=None)

    async def claim(self, queue: str, call_id: str) -> bool:
        """Take the call out of its queue to offer it; True for exactly one claimant."""
        return bool(await self.redis.zrem(WAITING_KEY.format(queue=queue), call_id))

    async def requeue(self, head: Head) -> None:
        """Put a claimed call back where it was (after a missed or failed offer)."""
        await self.redis.zadd(WAITING_KEY.format(queue=head.queue), {head.call_id: head.key}, nx=True)

    async def remove(self, queue: str, call_id: str) -> int | None:
        """The caller left (abandon, timeout, key); returns the position they had, for the log."""
        pos = await self.position(queue, call_id)
        await self.redis.zrem(WAITING_KEY.format(queue=queue), call_id)
        return pos
