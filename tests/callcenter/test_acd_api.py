"""The ACD configuration API over HTTP, with the real PostgreSQL and Redis behind it: every bad
request gets a 4xx naming the problem and changes nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer

from acd.agent_state import Params
from acd.agent_store import AgentStore
from acd.directory import Directory
from bus import keys
from callcenter import api
from callcenter.auth import ApiKeys
from callcenter.event_bus import EventBus
from callcenter.prompts import load_prompts
from callcenter.tasks import Loops
from tests.conftest import ROOT, Stores, fresh_redis

PROMPTS = frozenset(load_prompts(ROOT / "sip_config" / "prompts.toml", ROOT / "var" / "prompts").texts)


@pytest_asyncio.fixture(loop_scope="session")
async def client(stores: Stores, pool: asyncpg.Pool, tmp_path_factory: pytest.TempPathFactory
                 ) -> AsyncIterator[TestClient]:
    async with pool.acquire() as conn:
        await conn.execute("TRUNCATE queue_members, agent_skills, agent_events")
        await conn.execute("DELETE FROM agents; DELETE FROM queues; DELETE FROM skills")
    async with fresh_redis(stores, 8) as r:
        bus = EventBus("acd-api-test", r, pool, tmp_path_factory.mktemp("spool"), pause=0.0)
        loops = Loops()
        bus.start(loops)  # agent events reach agent_events through the stream, as in production
        app = api.make_app(api.Services(pool, r, None, None, prompts=PROMPTS, notifier=bus.notifier), [ApiKeys(pool)])
        c = TestClient(TestServer(app), headers={"Authorization": f"Bearer {stores.api_key}"})
        await c.start_server()
        yield c
        await c.close()
        await loops.stop()
        await bus.close()


async def call(c: TestClient, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    resp = await c.request(method, path, json=body)
    return resp.status, (await resp.json() if resp.status != 204 else None)


async def test_queue_agent_skills_members_and_status(client: TestClient, pool: asyncpg.Pool) -> None:
    assert (await call(client, "POST", "/api/skills", {"name": "billing"}))[0] == 201
    assert (await call(client, "POST", "/api/skills", {"name": "es"}))[0] == 201
    st, q = await call(client, "POST", "/api/queues", {"name": "billing", "title": "Billing", "settings": {
        "strategy": "fewest_calls", "wrap_up": 15, "routing": [{"after": 0, "require": {"billing": 4}},
                                                               {"after": 30, "require": {}}]}})
    assert st == 201 and q["settings"]["ring_timeout"] == 15.0  # defaults filled in
    for login, ext in (("ann", "201"), ("bob", "202")):
        assert (await call(client, "POST", "/api/agents", {"login": login, "name": login.title(),
                                                           "extension": ext}))[0] == 201
    assert (await call(client, "PUT", "/api/agents/ann/skills", {"skills": {"billing": 5, "es": 2}}))[0] == 200
    st, _ = await call(client, "PUT", "/api/queues/billing/members",
                       {"members": [{"agent": "ann"}, {"agent": "bob", "penalty": 2}]})
    assert st == 200
    st, q = await call(client, "GET", "/api/queues/billing")
    assert q["members"] == [{"agent": "ann", "penalty": 0}, {"agent": "bob", "penalty": 2}]

    assert (await call(client, "POST", "/api/agents/ann/status", {"status": "available"}))[1]["status"] == "available"
    st, s = await call(client, "POST", "/api/agents/ann/status", {"status": "not_ready", "reason": "lunch"})
    assert (st, s["status"], s["reason"]) == (200, "not_ready", "lunch")
    assert (await call(client, "POST", "/api/agents/ann/status", {"status": "logged_out"}))[1]["status"] == \
        "logged_out"
    st, a = await call(client, "GET", "/api/agents/ann")
    assert a["skills"] == {"billing": 5, "es": 2} and a["queues"] == [{"queue": "billing", "penalty": 0}]
    rows: list[asyncpg.Record] = []
    for _ in range(100):
        rows = await pool.fetch("SELECT e.event, e.data FROM agent_events e JOIN agents a ON a.id = e.agent_id "
                                "WHERE a.login = 'ann' ORDER BY e.id")
        if len(rows) >= 7:
            break
        await asyncio.sleep(0.05)
    assert [r["event"] for r in rows if r["event"] != "AGENTSTATE"] == ["ADDMEMBER", "LOGIN", "PAUSE", "LOGOFF"]
    # Every state change too, written by the Redis script that made it (bus/events.py AGENTSTATE).
    assert [json.loads(r["data"])["transition"] for r in rows if r["event"] == "AGENTSTATE"] == [
        "login", "not_ready", "logout"]


async def test_bad_requests_are_refused_and_change_nothing(client: TestClient, pool: asyncpg.Pool) -> None:
    await call(client, "POST", "/api/queues", {"name": "support"})
    await call(client, "POST", "/api/agents", {"login": "cat", "name": "Cat"})
    await call(client, "POST", "/api/queues", {"name": "spill"})
    await call(client, "POST", "/api/queues", {"name": "spiller", "settings": {"overflow": {"kind": "queue",
                                                                                          "target": "spill"}}})
    before = await pool.fetchval("SELECT settings::text FROM queues WHERE name = 'support'")
    cases = [
        ("POST", "/api/queues", {"name": "Bad Name"}, 422, "name"),
        ("POST", "/api/queues", {"name": "support"}, 409, "exists"),
        ("POST", "/api/queues", {"name": "x", "colour": "red"}, 422, "colour"),
        ("PUT", "/api/queues/support", {"name": "support", "settings": {"strategy": "loudest"}}, 422, "strategy"),
        ("PUT", "/api/queues/support", {"name": "support", "settings": {"wrap_up": "10"}}, 422, "wrap_up"),
        ("PUT", "/api/queues/support", {"name": "support", "settings": {"routing": [{"after": 5}]}}, 422, "0 s"),
        ("PUT", "/api/queues/support", {"name": "support", "settings": {"overflow": {"kind": "queue"}}}, 422,
         "target"),
        # Settings that name something must name something that exists (404), and not the queue itself.
        ("PUT", "/api/queues/support", {"name": "support", "settings": {"overflow": {"kind": "queue",
                                                                                    "target": "support"}}}, 422,
         "itself"),
        ("PUT", "/api/queues/support", {"name": "support", "settings": {"overflow": {"kind": "queue",
                                                                                    "target": "ghostq"}}}, 404,
         "no queue 'ghostq'"),
        ("POST", "/api/queues", {"name": "newq", "settings": {"routing": [{"after": 0, "require": {"klingon": 2}}]}},
         404, "no skill 'klingon'"),
        ("PUT", "/api/queues/support", {"name": "support", "settings": {"hold_prompt": "../../etc/passwd"}}, 422,
         "hold_prompt"),
        ("PUT", "/api/queues/support", {"name": "support", "settings": {"hold_prompt": "jazz"}}, 404,
         "no prompt 'jazz'"),
        ("PUT", "/api/queues/support/members", {"members": [{"agent": "cat"}, {"agent": "ghost"}]}, 404, "ghost"),
        ("DELETE", "/api/queues/spill", None, 409, "overflow into 'spill'"),
        ("PUT", "/api/queues/nope/members", {"members": []}, 404, "nope"),
        ("PUT", "/api/agents/cat/skills", {"skills": {"billing": 9}}, 422, "less than or equal to 5"),
        ("PUT", "/api/agents/cat/skills", {"skills": {"klingon": 3}}, 404, "klingon"),
        ("POST", "/api/agents/cat/status", {"status": "not_ready", "reason": "no_answer"}, 404, "reason"),
        ("POST", "/api/agents/cat/status", {"status": "sleeping"}, 422, "status"),
        ("POST", "/api/agents/cat/status", {"status": "logged_out"}, 409, "logged out"),
        ("POST", "/api/agents/ghost/status", {"status": "available"}, 404, "ghost"),
    ]
    for method, path, body, status, word in cases:
        st, err = await call(client, method, path, body)
        assert st == status and word in str(err), (path, body, st, err)
    resp = await client.post("/api/agents", data=b"{not json", headers={"Content-Type": "application/json"})
    assert resp.status == 400
    # Nothing above changed anything.
    assert await pool.fetchval("SELECT settings::text FROM queues WHERE name = 'support'") == before
    assert not await pool.fetchval("SELECT EXISTS (SELECT 1 FROM queues WHERE name = 'newq')")
    assert await pool.fetchval("SELECT count(*) FROM queue_members m JOIN queues q ON q.id = m.queue_id "
                               "WHERE q.name = 'support'") == 0
    assert await pool.fetchval("SELECT count(*) FROM agent_skills x JOIN agents a ON a.id = x.agent_id "
                               "WHERE a.login = 'cat'") == 0
    st, a = await call(client, "GET", "/api/agents/cat")
    assert a["state"]["status"] == "logged_out"


async def test_wrap_up_can_be_ended_early_or_extended_within_the_queue_limit(client: TestClient,
                                                                            stores: Stores) -> None:
    await call(client, "POST", "/api/queues", {"name": "wrapq", "settings": {"wrap_up": 100,
                                                                              "wrap_up_extend_max": 40}})
    await call(client, "POST", "/api/agents", {"login": "wes", "name": "Wes"})
    await call(client, "PUT", "/api/queues/wrapq/members", {"members": [{"agent": "wes"}]})
    assert (await call(client, "POST", "/api/agents/wes/wrapup", {"action": "end"}))[0] == 409  # not in wrap-up
    # a queue with history (ADDMEMBER events) can still be deleted; the events keep its id
    await call(client, "POST", "/api/queues", {"name": "old"})
    await call(client, "PUT", "/api/queues/old/members", {"members": [{"agent": "wes"}]})
    assert (await call(client, "DELETE", "/api/queues/old", None))[0] == 204
    await call(client, "POST", "/api/agents/wes/status", {"status": "available"})
    r = aioredis.from_url(stores.redis_db(8))
    directory = Directory(r)
    agents = AgentStore(r)
    aid = int((await r.hkeys(keys.MEMBERS_KEY.format(queue="wrapq")))[0])
    assert await directory.idle("wrapq") == [aid]  # the API's changes reached the routing directory
    await agents.reserve(aid, "call-1", ring_timeout=15)
    await agents.transition(aid, "connect")
    after = await agents.transition(aid, "end_call", Params(wrap_up=100))
    assert await directory.idle("wrapq") == []
    st, out = await call(client, "POST", "/api/agents/wes/wrapup", {"action": "extend", "seconds": 30})
    assert st == 200 and out["wrap_up_ends"] == after.deadline + 30
    st, err = await call(client, "POST", "/api/agents/wes/wrapup", {"action": "extend", "seconds": 30})
    assert st == 409 and "40 s at most" in err["error"]
    assert (await call(client, "POST", "/api/agents/wes/wrapup", {"action": "pause"}))[0] == 422
    st, out = await call(client, "POST", "/api/agents/wes/wrapup", {"action": "end"})
    assert st == 200 and out["activity"] == "idle"
    assert await directory.idle("wrapq") == [aid]  # free for the next call at once
    await r.aclose()
