"""Queue strategies: the order in which eligible agents are offered a call.

``rank`` is pure: it orders the candidates a queue's routing step allowed. ``ring_all`` returns every
candidate (offered at once); the other strategies are offered to the first, then the next on a miss.
Round-robin's memory (who was offered last) is a per-queue value in Redis, so every node continues
the same rotation.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum

import redis.asyncio as aioredis

from bus.keys import RR_KEY


class Strategy(StrEnum):
    LONGEST_IDLE = "longest_idle"
    ROUND_ROBIN = "round_robin"
    FEWEST_CALLS = "fewest_calls"
    LEAST_TALK_TIME = "least_talk_time"
    RING_ALL = "ring_all"
    LINEAR = "linear"
    RANDOM = "random"


@dataclass(frozen=True)
class Candidate:
    agent_id: int
    idle_since: float  # when the agent last became idle (earlier = idle longer)
    calls: int = 0  # calls answered in the current period
    talk_time: float = 0.0  # seconds talked in the current period
    order: int = 0  # position in the queue's member list (linear, round-robin)


def rank(strategy: Strategy, candidates: list[Candidate], *, last_order: int = -1,
         rng: random.Random | None = None) -> list[Candidate]:
    """Candidates in offer order. Ties fall back to longest idle, then agent id, so the result is
    deterministic (except for ``random``)."""
    idle = sorted(candidates, key=lambda c: (c.idle_since, c.agent_id))
    if strategy in (Strategy.LONGEST_IDLE, Strategy.RING_ALL):
        return idle
    if strategy is Strategy.FEWEST_CALLS:
        return sorted(idle, key=lambda c: c.calls)
    if strategy is Strategy.LEAST_TALK_TIME:
        return sorted(idle, key=lambda c: c.talk_time)
    if strategy is Strategy.LINEAR:
        return sorted(idle, key=lambda c: c.order)
    if strategy is Strategy.ROUND_ROBIN:
        by_order = sorted(idle, key=lambda c: c.order)
        after = [c for c in by_order if c.order > last_order]
        return after + [c for c in by_order if c.order <= last_order]
    if strategy is Strategy.RANDOM:
        shuffled = list(idle)
        (rng or random.Random()).shuffle(shuffled)
        return shuffled
    raise ValueError(f"unknown strategy {strategy!r}")




async def last_offered(redis: aioredis.Redis, queue: str) -> int:
    raw = await redis.get(RR_KEY.format(queue=queue))
    return int(raw) if raw is not None else -1


async def remember_offered(redis: aioredis.Redis, queue: str, order: int) -> None:
    await redis.set(RR_KEY.format(queue=queue), order)
