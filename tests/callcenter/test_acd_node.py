"""The ACD node's answers to the reconciler and the offer flow, against the real Redis: is the call an
agent is on still alive (here, on another node, or a callback this node runs), and where to ring an
agent (static URI, or the extension registered at the front door)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from acd.agent_state import Params
from acd.directory import AgentEntry
from acd.distributor import CallInfo
from bus.keys import NODE_ALIVE_KEY
from callcenter.acd_node import AcdNode
from callcenter.event_bus import EventBus
from callcenter.prompts import load_prompts
from callcenter.tasks import Loops
from tests.conftest import ROOT, Stores, fresh_redis

DB = 13


@pytest_asyncio.fixture(loop_scope="session")
async def node(stores: Stores, pool: asyncpg.Pool,
               tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[AcdNode, set[str]]]:
    local: set[str] = set()
    prompts = load_prompts(ROOT / "sip_config" / "prompts.toml", Path("/nonexistent"))
    async with fresh_redis(stores, DB) as r:
        bus = EventBus("acd-node-test", r, pool, tmp_path_factory.mktemp("spool"), pause=0.0)
        loops = Loops()
        bus.start(loops)
        n = AcdNode(r, stores.redis_db(DB), pool, prompts, is_local_call=lambda cid: cid in local,
                    registrar="127.0.0.1:5060", notifier=bus.notifier)
        yield n, local
        await n.offers.aclose()
        await loops.stop()
        await bus.close()


async def test_call_alive_asks_the_node_that_holds_the_call(node: tuple[AcdNode, set[str]]) -> None:
    n, local = node
    assert not await n.call_alive("unknown")
    await n.distributor.put_call("mine", CallInfo("q", 1.0, 0, {}, n.node))
    assert not await n.call_alive("mine")  # its flow is gone from this node
    local.add("mine")
    assert await n.call_alive("mine")
    local.discard("mine")
    n.callbacks.running.add("mine")  # a callback this node runs: the agent talks to the customer
    assert await n.call_alive("mine")
    await n.distributor.put_call("theirs", CallInfo("q", 1.0, 0, {}, "other-node"))
    assert not await n.call_alive("theirs")  # no heartbeat: that node is gone
    await n.redis.set(NODE_ALIVE_KEY.format(node="other-node"), "1", ex=10)
    assert await n.call_alive("theirs")


async def test_devices_are_static_uris_or_registered_extensions(node: tuple[AcdNode, set[str]]) -> None:
    n, _ = node
    await n.directory.put_agent(AgentEntry(1, {}, {}, "sip:desk1@10.0.0.5:5060"))
    await n.directory.put_agent(AgentEntry(2, {}, {}, "ext:201"))
    await n.directory.put_agent(AgentEntry(3, {}, {}, ""))
    assert await n.device_uri(1) == "sip:desk1@10.0.0.5:5060"
    assert await n.device_uri(2) == "sip:201@127.0.0.1:5060"
    assert await n.device_uri(3) is None
    n.registrar = ""  # no front door: nowhere to ring an extension
    assert await n.device_uri(2) is None


async def test_an_agent_released_from_a_lost_call_has_it_in_their_log(node: tuple[AcdNode, set[str]],
                                                                      pool: asyncpg.Pool) -> None:
    n, _ = node
    aid = await pool.fetchval("INSERT INTO agents (login, name) VALUES ('lostcall', 'Lost Call') "
                              "ON CONFLICT (login) DO UPDATE SET name = EXCLUDED.name RETURNING id")
    for event, params in (("login", Params()), ("available", Params()), ("reserve", Params(call_id="gone-1")),
                          ("connect", Params())):
        await n.agents.transition(aid, event, params, now=100.0)
    # The call's node died with it: the reconciler finds no live call at the check time.
    assert (aid, "end_call") in await n.reconciler.run_once(now=100.0 + 3600)
    for _ in range(50):
        row = await pool.fetchrow("SELECT event, data FROM agent_events WHERE agent_id = $1 AND event = 'RELEASE'", aid)
        if row:
            break
        await asyncio.sleep(0.05)
    assert row is not None and json.loads(row["data"]) == {"reason": "call_lost", "by": "system", "call": "gone-1"}
