"""The distributor against the real Redis: every strategy in the order acd.strategies.rank defines,
skills and routing steps widening over time, priority, multi-queue fairness, ring-all, the idle index
following every state change, and two processes deciding at once without double-booking."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from acd.agent_state import Activity, AgentState, Params, apply
from acd.agent_store import AgentStore
from acd.directory import AgentEntry, Directory, Staffing
from acd.distributor import CallInfo, Distributor, Offer
from acd.models import QueueSettings, RoutingStep
from acd.strategies import Candidate, Strategy, rank
from acd.waiting import Waiting
from bus import events as ev
from bus import keys
from bus.stream import FIELD
from tests.conftest import ROOT, Stores, fresh_redis

DB = 9


class Acd:
    def __init__(self, r: aioredis.Redis):
        self.redis = r
        self.agents = AgentStore(r)
        self.directory = Directory(r)
        self.waiting = Waiting(r)
        self.dist = Distributor(r, self.directory, node="node-t")

    async def queue(self, name: str, **settings: object) -> QueueSettings:
        s = QueueSettings.model_validate({"strategy": "longest_idle", **settings}, strict=False)
        await self.directory.put_queue(name, s)
        return s

    async def agent(self, aid: int, queues: dict[str, int], skills: dict[str, int] | None = None,
                    login_at: float = 0.0) -> None:
        await self.directory.put_agent(AgentEntry(aid, queues, skills or {}, f"sip:agent{aid}@127.0.0.1"))
        await self.agents.transition(aid, "login", now=login_at)

    async def call(self, queue: str, call_id: str, at: float, priority: int = 0,
                   skills: dict[str, int] | None = None) -> None:
        await self.dist.put_call(call_id, CallInfo(queue, at, priority, skills or {}, "test"))
        await self.waiting.enqueue(queue, call_id, priority, at)

    async def finish(self, aid: int, at: float) -> None:
        """Take the reserved call through connect/end (no wrap-up): the agent is free again."""
        await self.agents.transition(aid, "connect", now=at)
        await self.agents.transition(aid, "end_call", Params(wrap_up=0), now=at + 1)


@pytest_asyncio.fixture(loop_scope="session")
async def acd(stores: Stores) -> AsyncIterator[Acd]:
    async with fresh_redis(stores, DB) as r:
        yield Acd(r)


async def test_the_lua_reservation_is_the_tables_reserve(acd: Acd) -> None:
    await acd.queue("q")
    await acd.agent(1, {"q": 0}, login_at=5.0)
    before = await acd.agents.get(1)
    await acd.call("q", "c1", at=10.0)
    assert await acd.dist.decide("q", "c1", {}, ring_timeout=15.0, now=20.0) == [1]
    assert await acd.agents.get(1) == apply(before, "reserve", 20.0, Params(ring_timeout=15.0, call_id="c1"))
    assert await acd.agents.due(now=36.0) == [1]
    assert await acd.directory.idle("q") == [] and await acd.waiting.size("q") == 0
    assert await acd.dist.decide("q", "c1", {}, ring_timeout=15.0) is None  # offered once only
    # The script that reserved the agent put the change on the event stream.
    last = ev.decode((await acd.redis.xrevrange(keys.EVENTS, count=1))[0][1][FIELD.encode()])
    assert isinstance(last, ev.AgentStateChanged)
    assert (last.agent_id, last.transition, last.activity, last.call, last.node, last.at, last.version) == (
        1, "reserve", "reserved", "c1", "node-t", 20.0, before.version + 1)


# Agent: idle since (login time), calls, talk time, member order — the same data as test_strategies.
PEOPLE = [Candidate(1, idle_since=100, calls=5, talk_time=900, order=2),
          Candidate(2, idle_since=50, calls=9, talk_time=300, order=0),
          Candidate(3, idle_since=70, calls=2, talk_time=1200, order=1),
          Candidate(4, idle_since=90, calls=7, talk_time=100, order=3)]


async def _people(acd: Acd, queue: str) -> None:
    for c in PEOPLE:
        await acd.directory.put_agent(AgentEntry(c.agent_id, {queue: c.order}, {}, ""))
        s = apply(AgentState(c.agent_id), "login", c.idle_since)
        s = replace(s, calls=c.calls, talk_time=c.talk_time)
        assert await acd.agents._write(await acd.agents.get(c.agent_id), s, "login", c.idle_since)


@pytest.mark.parametrize("strategy", [Strategy.LONGEST_IDLE, Strategy.FEWEST_CALLS, Strategy.LEAST_TALK_TIME,
                                      Strategy.LINEAR])
async def test_each_strategy_offers_in_the_order_rank_defines(acd: Acd, strategy: Strategy) -> None:
    await acd.queue("q", strategy=strategy.value)
    await _people(acd, "q")
    expected = [c.agent_id for c in rank(strategy, PEOPLE)]
    assert await acd.directory.idle("q") == expected
    got = []
    for i in range(4):
        await acd.call("q", f"c{i}", at=1000 + i)
        got += await acd.dist.decide("q", f"c{i}", {}, 15.0, now=2000) or []
    assert got == expected


async def test_round_robin_continues_the_rotation_after_the_last_offered(acd: Acd) -> None:
    await acd.queue("q", strategy="round_robin")
    await _people(acd, "q")
    seen = []
    for i in range(6):
        await acd.call("q", f"c{i}", at=1000 + i)
        [aid] = await acd.dist.decide("q", f"c{i}", {}, 15.0, now=2000 + i) or [0]
        seen.append(aid)
        await acd.finish(aid, 2000.5 + i)  # free again: the rotation, not availability, decides
    by_order = [c.agent_id for c in sorted(PEOPLE, key=lambda c: c.order)]
    assert seen == by_order + by_order[:2]
    assert [c.agent_id for c in rank(Strategy.ROUND_ROBIN, PEOPLE, last_order=0)] == by_order[1:] + by_order[:1]


async def test_random_offers_only_free_agents_and_all_of_them_over_time(acd: Acd) -> None:
    await acd.queue("q", strategy="random")
    await _people(acd, "q")
    await acd.agents.transition(4, "not_ready", Params(reason="break"))
    seen = set()
    for i in range(40):
        await acd.call("q", f"c{i}", at=1000 + i)
        [aid] = await acd.dist.decide("q", f"c{i}", {}, 15.0, now=2000 + i) or [0]
        seen.add(aid)
        await acd.finish(aid, 2000.5 + i)
    assert seen == {1, 2, 3}


async def test_ring_all_reserves_every_qualified_free_agent(acd: Acd) -> None:
    await acd.queue("q", strategy="ring_all")
    await _people(acd, "q")
    await acd.directory.put_agent(AgentEntry(3, {"q": 1}, {"billing": 1}, ""))
    await acd.call("q", "c1", at=1000)
    assert sorted(await acd.dist.decide("q", "c1", {}, 15.0, now=2000) or []) == [1, 2, 3, 4]
    for aid in (1, 2, 3, 4):
        assert (await acd.agents.get(aid)).call_id == "c1"
    reserved = [ev.decode(f[FIELD.encode()]) for _id, f in await acd.redis.xrevrange(keys.EVENTS, count=4)]
    assert sorted(e.agent_id for e in reserved
                  if isinstance(e, ev.AgentStateChanged) and e.call == "c1") == [1, 2, 3, 4]
    assert len({e.id for e in reserved}) == 4


async def test_routing_steps_widen_over_the_callers_wait(acd: Acd) -> None:
    settings = await acd.queue("billing", routing=[RoutingStep(after=0, require={"billing": 4}),
                                                   RoutingStep(after=30, require={"billing": 2}),
                                                   RoutingStep(after=60)])
    await acd.agent(1, {"billing": 0}, {"billing": 1}, login_at=0)  # longest idle, least skilled
    await acd.agent(2, {"billing": 0}, {"billing": 3}, login_at=1)
    await acd.agent(3, {"billing": 0}, {}, login_at=2)
    await acd.call("billing", "c1", at=100)
    assert await acd.dist.decide_for("billing", "c1", settings, now=110) == []  # nobody has billing >= 4
    assert await acd.waiting.size("billing") == 1
    assert await acd.dist.decide_for("billing", "c1", settings, now=131) == [2]  # billing >= 2 from 30 s
    await acd.call("billing", "c2", at=200)
    assert await acd.dist.decide_for("billing", "c2", settings, now=261) == [1]  # anyone from 60 s


async def test_ivr_skills_are_added_to_every_step(acd: Acd) -> None:
    settings = await acd.queue("sales")
    await acd.agent(1, {"sales": 0}, {"english": 5}, login_at=0)
    await acd.agent(2, {"sales": 0}, {"english": 3, "french": 4}, login_at=1)
    await acd.call("sales", "c1", at=100, skills={"french": 3})
    assert await acd.dist.decide_for("sales", "c1", settings, now=500) == [2]


async def test_a_free_agent_gets_the_best_caller_across_their_queues(acd: Acd) -> None:
    await acd.queue("a")
    await acd.queue("b")
    await acd.queue("c")
    await acd.call("a", "a-old", at=100)
    await acd.call("b", "b-older", at=50)
    await acd.call("c", "c-vip", at=300, priority=10)  # VIP: served first despite the shorter wait
    await acd.call("c", "c-french", at=10, skills={"french": 1})  # the agent can't serve this one
    await acd.agent(1, {"a": 0, "b": 0, "c": 0}, {"english": 5}, login_at=400)
    order = []
    for t in (401, 402, 403):
        assert await acd.dist.agent_free(await acd.agents.get(1), now=t)
        order.append((await acd.agents.get(1)).call_id)
        await acd.finish(1, t + 0.5)
    assert order == ["c-vip", "b-older", "a-old"]
    assert not await acd.dist.agent_free(await acd.agents.get(1), now=410)
    assert await acd.waiting.size("c") == 1


async def test_the_idle_index_follows_status_activity_and_memberships(acd: Acd) -> None:
    await acd.queue("a")
    await acd.queue("b")
    await acd.agent(1, {"a": 0}, login_at=10)
    await acd.agent(2, {"a": 1, "b": 0}, login_at=5)
    assert await acd.directory.idle("a") == [2, 1] and await acd.directory.idle("b") == [2]
    await acd.agents.transition(2, "not_ready", Params(reason="lunch"))
    assert await acd.directory.idle("a") == [1] and await acd.directory.idle("b") == []
    assert await acd.directory.staffing("a") == Staffing(logged_in=2, staffed=1, idle=1)
    await acd.agents.transition(2, "available", now=20)  # back from lunch: idle from now
    assert await acd.directory.idle("a") == [1, 2]
    assert await acd.directory.staffing("b") == Staffing(logged_in=1, staffed=1, idle=1)
    await acd.directory.put_memberships(2, {"b": 0})
    assert await acd.directory.idle("a") == [1] and await acd.directory.idle("b") == [2]
    assert await acd.directory.members("a") == [1]
    assert await acd.directory.staffing("a") == Staffing(logged_in=1, staffed=1, idle=1)  # 2 left a
    await acd.agents.transition(1, "reserve", Params(call_id="c-1"))
    assert await acd.directory.staffing("a") == Staffing(logged_in=1, staffed=1, idle=0)  # busy, still staffed
    await acd.agents.transition(1, "release")
    await acd.agents.transition(1, "logout")
    assert await acd.directory.idle("a") == []
    assert await acd.directory.staffing("a") == Staffing(logged_in=0, staffed=0, idle=0)
    await acd.queue("b", strategy="fewest_calls")  # a strategy change re-scores the members
    assert await acd.redis.zscore(keys.IDLE_KEY.format(queue="b"), "2") == 20.0
    await acd.directory.drop_queue("b")
    assert await acd.directory.memberships(2) == {} and await acd.directory.queues() == ["a"]
    assert await acd.directory.staffing("b") == Staffing(logged_in=0, staffed=0, idle=0)


async def test_offers_are_published_for_the_node_that_holds_the_call(acd: Acd) -> None:
    await acd.queue("q")
    await acd.agent(7, {"q": 0})
    await acd.call("q", "c1", at=100, priority=3)
    sub = acd.redis.pubsub()
    await sub.subscribe(keys.OFFERS_CHANNEL)
    await sub.get_message(timeout=1)  # the subscribe confirmation
    assert await acd.dist.decide("q", "c1", {}, 15.0, now=200) == [7]
    msg = None
    for _ in range(20):
        msg = await sub.get_message(ignore_subscribe_messages=True, timeout=0.5)
        if msg:
            break
    await sub.aclose()
    assert msg is not None
    offer = Offer.decode(msg["data"])
    assert (offer.call_id, offer.queue, offer.agents, offer.at) == ("c1", "q", (7,), 200.0)
    assert offer.head.priority == 3 and offer.head.enqueued_at == pytest.approx(100.0)


DECIDER = """
import asyncio, json, sys
import redis.asyncio as aioredis
from acd.directory import Directory
from acd.distributor import Distributor
async def main(url, n):
    r = aioredis.from_url(url)
    d = Distributor(r, Directory(r))
    got = {}
    for i in range(n):
        agents = await d.decide("q", f"c{i}", {}, 30.0)
        if agents:
            got[f"c{i}"] = agents[0]
    print(json.dumps(got))
asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


async def test_two_processes_deciding_at_once_never_double_book(acd: Acd, stores: Stores) -> None:
    await acd.queue("q")
    for aid in range(1, 151):
        await acd.agent(aid, {"q": 0}, login_at=aid)
    for i in range(200):
        await acd.call("q", f"c{i}", at=1000 + i)
    procs = [subprocess.Popen([sys.executable, "-c", DECIDER, stores.redis_db(DB), "200"], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    a, b = (json.loads(p.communicate(timeout=60)[0]) for p in procs)
    assert not set(a) & set(b), "a call was offered twice"
    assert not set(a.values()) & set(b.values()), "an agent was reserved twice"
    assert len(a) + len(b) == 150  # every agent got exactly one call
    assert await acd.waiting.size("q") == 50
    states = [await acd.agents.get(aid) for aid in range(1, 151)]
    assert all(s.activity is Activity.RESERVED for s in states)
    assert {s.call_id for s in states} == set(a) | set(b)
