"""Strategies and routing steps on hand-made data; round-robin's rotation shared through Redis."""

from __future__ import annotations

import random

import pytest
import redis.asyncio as aioredis

from acd.routing import RoutingError, Step, eligible, next_change, requirements, validate
from acd.strategies import Candidate, Strategy, last_offered, rank, remember_offered
from tests.conftest import Stores

# agent: idle since, calls, talk time, member order
AGENTS = [Candidate(1, idle_since=100, calls=5, talk_time=900, order=2),
          Candidate(2, idle_since=50, calls=9, talk_time=300, order=0),
          Candidate(3, idle_since=70, calls=2, talk_time=1200, order=1),
          Candidate(4, idle_since=90, calls=7, talk_time=100, order=3)]


@pytest.mark.parametrize(("strategy", "want"), [
    (Strategy.LONGEST_IDLE, [2, 3, 4, 1]),
    (Strategy.RING_ALL, [2, 3, 4, 1]),
    (Strategy.FEWEST_CALLS, [3, 1, 4, 2]),
    (Strategy.LEAST_TALK_TIME, [4, 2, 1, 3]),
    (Strategy.LINEAR, [2, 3, 1, 4]),
])
def test_strategies_order(strategy: Strategy, want: list[int]) -> None:
    assert [c.agent_id for c in rank(strategy, AGENTS)] == want


def test_round_robin_continues_after_the_last_offered() -> None:
    assert [c.agent_id for c in rank(Strategy.ROUND_ROBIN, AGENTS, last_order=-1)] == [2, 3, 1, 4]
    assert [c.agent_id for c in rank(Strategy.ROUND_ROBIN, AGENTS, last_order=1)] == [1, 4, 2, 3]
    assert [c.agent_id for c in rank(Strategy.ROUND_ROBIN, AGENTS, last_order=3)] == [2, 3, 1, 4]


def test_random_uses_everyone() -> None:
    seen = {rank(Strategy.RANDOM, AGENTS, rng=random.Random(s))[0].agent_id for s in range(50)}
    assert seen == {1, 2, 3, 4}


def test_ties_break_on_longest_idle() -> None:
    tied = [Candidate(8, idle_since=30, calls=1), Candidate(9, idle_since=10, calls=1)]
    assert [c.agent_id for c in rank(Strategy.FEWEST_CALLS, tied)] == [9, 8]


async def test_round_robin_rotation_is_shared(stores: Stores) -> None:
    r = aioredis.from_url(stores.redis_db(7))
    await r.flushdb()
    other = aioredis.from_url(stores.redis_db(7))  # a second node
    first = rank(Strategy.ROUND_ROBIN, AGENTS, last_order=await last_offered(r, "sales"))[0]
    await remember_offered(r, "sales", first.order)
    second = rank(Strategy.ROUND_ROBIN, AGENTS, last_order=await last_offered(other, "sales"))[0]
    assert (first.agent_id, second.agent_id) == (2, 3)
    await r.aclose()
    await other.aclose()


STEPS = validate([Step(0, {"billing": 4}), Step(30, {"billing": 2}), Step(60, {})])


def test_routing_steps_widen_over_time() -> None:
    expert, junior, other = {"billing": 5}, {"billing": 2, "en": 3}, {"en": 5}
    assert [eligible(a, requirements(STEPS, 10)) for a in (expert, junior, other)] == [True, False, False]
    assert [eligible(a, requirements(STEPS, 30)) for a in (expert, junior, other)] == [True, True, False]
    assert [eligible(a, requirements(STEPS, 75)) for a in (expert, junior, other)] == [True, True, True]
    assert next_change(STEPS, 10) == 20 and next_change(STEPS, 61) is None


def test_ivr_attached_skills_apply_at_every_step() -> None:
    req = requirements(STEPS, 75, attached={"es": 3})
    assert req == {"es": 3}
    assert requirements(STEPS, 0, attached={"billing": 2, "es": 1}) == {"billing": 4, "es": 1}
    assert not eligible({"billing": 5}, requirements(STEPS, 0, attached={"es": 1}))


@pytest.mark.parametrize(("steps", "problem"), [
    ([], "at least one"),
    ([Step(5, {})], "from 0 s"),
    ([Step(0, {}), Step(0, {})], "increasing"),
    ([Step(0, {"billing": 6})], "1..5"),
])
def test_bad_steps_are_refused(steps: list[Step], problem: str) -> None:
    with pytest.raises(RoutingError, match=problem):
        validate(steps)
