"""The API fuzzed (hypothesis) over the real app, PostgreSQL and Redis: every route with path
parameters and bodies drawn from the request models' field names and arbitrary JSON (and bytes that
are not JSON). Whatever comes in, the answer is JSON, never a 5xx, and every refusal names its
problem in the error envelope."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callcenter import api
from callcenter.auth import ApiKeys
from callcenter.commands import CallControl
from callcenter.event_bus import EventBus
from tests.conftest import Stores, fresh_redis, shipped_flows

# Field names of the request models, so that many bodies get past the first check.
FIELDS = ["name", "settings", "members", "agent", "penalty", "login", "extension", "sip_uri", "status", "reason",
          "skills", "skill", "proficiency", "wrap_up", "strategy", "routing", "overflow", "hold_prompt",
          "after", "target", "queue", "ring_timeout", "max_wait", "seconds", "password", "active", "leg", "data",
          "agent_id", "kind", "digits", "url", "events"]

scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats()
           | st.text(max_size=40) | st.sampled_from(["support", "sipx", "available", "not_ready", "100", "", "\x00"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), inner, max_size=5),
                      max_leaves=25)
bodies = st.dictionaries(st.sampled_from(FIELDS), values, max_size=6) | values
params = (st.sampled_from(["support", "fuzzq", "fuzza", "1", "0", "-1", "00000000-0000-0000-0000-000000000000"])
          | st.text(min_size=1, max_size=30))
queries = st.dictionaries(st.sampled_from(["limit", "before", "queue", "agent", "since", "x"]),
                          st.text(max_size=12), max_size=3)


@pytest_asyncio.fixture(loop_scope="session")
async def client(stores: Stores, pool: asyncpg.Pool, tmp_path_factory: pytest.TempPathFactory
                 ) -> AsyncIterator[TestClient]:
    async with fresh_redis(stores, 8) as r:
        bus = EventBus("fuzz-node", r, pool, tmp_path_factory.mktemp("spool"), pause=0.0)
        control = CallControl(r, bus.sessions, None, bus.notifier, timeout=1.0)
        app = api.make_app(api.Services(pool, r, None, None, notifier=bus.notifier, control=control,
                                        flows=shipped_flows(tmp_path_factory.mktemp("flows"))),
                           [ApiKeys(pool)], request_timeout=5)
        c = TestClient(TestServer(app))
        await c.start_server()
        yield c
        await c.close()


def _routes(app: web.Application) -> list[tuple[str, str]]:
    """Every API route, its path parameters as ``{}`` (the socket.io route is not JSON)."""
    out = []
    for r in app.router.routes():
        info = r.resource.get_info() if r.resource is not None else {}
        path = info.get("path") or info.get("formatter") or ""
        if r.method not in ("HEAD", "OPTIONS") and path.startswith(("/api", "/healthz")):
            out.append((r.method, re.sub(r"\{[^}]+\}", "{}", path)))
    return sorted(set(out))


async def _ids(pool: asyncpg.Pool) -> dict[str, int]:
    return {t: await pool.fetchval(f"SELECT coalesce(max(id), 0) FROM {t}")
            for t in ("queues", "agents", "skills", "webhooks")}


async def test_no_input_gets_a_5xx_or_plain_text(client: TestClient, pool: asyncpg.Pool, stores: Stores) -> None:
    loop = asyncio.get_running_loop()
    auth = {"Authorization": f"Bearer {stores.api_key}"}
    seen: dict[int, int] = {}
    before = await _ids(pool)

    async def send(method: str, path: str, query: dict[str, str], raw: bytes | None, body: Any) -> None:
        data = raw if raw is not None else json.dumps(body).encode()  # NaN and Infinity included: not JSON
        resp = await client.request(method, path, params=query, data=data if method in ("POST", "PUT") else None,
                                    headers={**auth, "Content-Type": "application/json"})
        text = await resp.text()
        seen[resp.status] = seen.get(resp.status, 0) + 1
        assert resp.status < 500, (method, path, query, data[:300], resp.status, text[:500])
        assert resp.content_type == "application/json", (method, path, resp.status, text[:300])
        if resp.status >= 400:
            assert json.loads(text).get("error"), (method, path, data[:300], text[:300])

    @settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(route=st.sampled_from(_routes(client.app)), param=params, query=queries, body=bodies,
           raw=st.none() | st.none() | st.binary(max_size=60))
    def fuzz(route: tuple[str, str], param: str, query: dict[str, str], body: Any, raw: bytes | None) -> None:
        method, template = route
        path = template.format(urllib.parse.quote(param, safe=""))
        asyncio.run_coroutine_threadsafe(send(method, path, query, raw, body), loop).result(30)

    try:
        await asyncio.to_thread(fuzz)  # hypothesis drives from a thread; the requests run on this loop
    finally:
        for table, top in before.items():  # whatever the fuzz managed to create goes again
            await pool.execute(f"DELETE FROM {table} WHERE id > $1", top)
    print("fuzz: answers by status", dict(sorted(seen.items())))
    assert sum(seen.values()) >= 400 and any(400 <= s < 500 for s in seen), seen
