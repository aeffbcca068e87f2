"""Waiting calls in the real Redis: priority, FIFO, positions, fairness across queues, single claim."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from acd.waiting import Waiting, order_key
from tests.conftest import Stores, fresh_redis


@pytest_asyncio.fixture(loop_scope="session")
async def waiting(stores: Stores) -> AsyncIterator[Waiting]:
    async with fresh_redis(stores, 6) as r:
        yield Waiting(r)


async def test_priority_first_then_longest_waiting(waiting: Waiting) -> None:
    t = 1_795_000_000.0
    assert await waiting.enqueue("sales", "std-early", 0, t) == 1
    assert await waiting.enqueue("sales", "std-late", 0, t + 5) == 2
    assert await waiting.enqueue("sales", "vip-late", 50, t + 9) == 1  # VIP jumps ahead
    assert await waiting.enqueue("sales", "std-mid", 0, t + 3) == 3
    order = [(await waiting.head("sales"))]
    assert order[0] is not None and order[0].call_id == "vip-late" and order[0].priority == 50
    assert order[0].enqueued_at == pytest.approx(t + 9)
    assert [await waiting.position("sales", c) for c in ("vip-late", "std-early", "std-mid", "std-late")] == \
        [1, 2, 3, 4]
    assert await waiting.remove("sales", "std-early") == 2  # abandon: logged with the position held
    assert await waiting.position("sales", "std-mid") == 2 and await waiting.size("sales") == 3


async def test_agent_in_several_queues_gets_the_longest_waiting_caller(waiting: Waiting) -> None:
    t = 1_795_000_000.0
    await waiting.enqueue("billing", "b1", 0, t + 20)
    await waiting.enqueue("support", "s1", 0, t + 10)  # waited longer
    await waiting.enqueue("tech", "t1", 0, t + 30)
    best = await waiting.best_head(["billing", "support", "tech", "empty"])
    assert best is not None and (best.queue, best.call_id) == ("support", "s1")
    await waiting.enqueue("tech", "t-vip", 10, t + 40)  # but priority still comes first
    best = await waiting.best_head(["billing", "support", "tech"])
    assert best is not None and best.call_id == "t-vip"


async def test_a_call_is_claimed_once_and_requeued_at_its_place(waiting: Waiting) -> None:
    t = 1_795_000_000.0
    for i in range(3):
        await waiting.enqueue("q", f"c{i}", 0, t + i)
    head = await waiting.head("q")
    assert head is not None
    wins = await asyncio.gather(*(waiting.claim("q", head.call_id) for _ in range(8)))
    assert sum(wins) == 1
    await waiting.enqueue("q", "c9", 0, t + 100)
    await waiting.requeue(head)  # the offer was missed: back to the front, not behind c9
    assert await waiting.position("q", "c0") == 1


def test_order_key_bounds() -> None:
    assert order_key(99, 0) < order_key(0, 0) < order_key(0, 1)
    with pytest.raises(ValueError):
        order_key(100, 0)
