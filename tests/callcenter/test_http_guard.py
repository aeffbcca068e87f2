"""The HTTP gate on the real API (real PostgreSQL and Redis behind it): no credentials, wrong ones or
too few scopes are refused with a JSON 401/403 that changes nothing; so are foreign origins and
bodies that are not JSON; a database that does not answer gives a 503 within the time limit."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from callcenter import api
from callcenter.auth import ApiKeys, create_key, requires, revoke_key
from callcenter.http_guard import access, check_routes
from tests.conftest import Stores, fresh_redis


@pytest_asyncio.fixture(loop_scope="session")
async def client(stores: Stores, pool: asyncpg.Pool) -> AsyncIterator[TestClient]:
    async with fresh_redis(stores, 9) as r:
        app = api.make_app(api.Services(pool, r, None, None), [ApiKeys(pool, cache_ttl=0)], request_timeout=1.5)
        c = TestClient(TestServer(app))
        await c.start_server()
        yield c
        await c.close()


async def call(c: TestClient, method: str, path: str, key: str | None, body: Any = None,
               **headers: str) -> tuple[int, Any, Any]:
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    resp = await c.request(method, path, json=body, headers=headers)
    assert resp.content_type == "application/json", (resp.status, await resp.text())
    return resp.status, await resp.json(), resp.headers


async def _queues(pool: asyncpg.Pool) -> set[str]:
    return {r["name"] for r in await pool.fetch("SELECT name FROM queues")}


async def test_every_refusal_is_json_and_changes_nothing(client: TestClient, pool: asyncpg.Pool,
                                                         stores: Stores) -> None:
    async with pool.acquire() as conn:
        reader = await create_key(conn, "reader", ["read"])
        controller = await create_key(conn, "controller", ["control"])
    before = await _queues(pool)
    body = {"name": "intruders"}

    st, out, headers = await call(client, "POST", "/api/queues", None, body)
    assert st == 401 and "Bearer" in headers["WWW-Authenticate"] and "error" in out
    for bad in ("nonsense", "cc_000000000000_" + "A" * 43, stores.api_key[:-1] + "x"):
        assert (await call(client, "POST", "/api/queues", bad, body))[0] == 401
    st, out, _ = await call(client, "POST", "/api/queues", None, body, Authorization="Basic YWRtaW46YWRtaW4=")
    assert st == 401
    st, out, _ = await call(client, "POST", "/api/queues", reader, body)
    assert (st, out["needs"]) == (403, "configure")
    assert (await call(client, "POST", "/api/queues", controller, body))[0] == 403
    assert (await call(client, "DELETE", "/api/queues/support", reader))[0] == 403
    assert (await call(client, "GET", "/api/interactions", None))[0] == 401
    assert (await call(client, "GET", "/api/queues", controller))[0] == 403  # control does not imply read
    assert (await call(client, "GET", "/api/queues", reader))[0] == 200
    assert await _queues(pool) == before


async def test_revoked_key_stops_working(client: TestClient, pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        token = await create_key(conn, "short-lived", ["read"])
        assert (await call(client, "GET", "/api/queues", token))[0] == 200
        assert await revoke_key(conn, token.split("_")[1])
    assert (await call(client, "GET", "/api/queues", token))[0] == 401
    used = await pool.fetchval("SELECT last_used_at FROM api_keys WHERE name = 'short-lived'")
    assert used is not None


async def test_cross_origin_and_non_json_bodies_are_refused(client: TestClient, pool: asyncpg.Pool,
                                                            stores: Stores) -> None:
    before = await _queues(pool)
    key = stores.api_key
    st, out, _ = await call(client, "POST", "/api/queues", key, {"name": "csrf"}, Origin="http://evil.example")
    assert st == 403 and "cross-origin" in out["error"]
    # What an HTML form or a "simple" cross-site fetch can send: text/plain, no preflight.
    resp = await client.post("/api/queues", data='{"name": "csrf"}',
                             headers={"Content-Type": "text/plain", "Authorization": f"Bearer {key}"})
    assert resp.status == 415 and "JSON" in (await resp.json())["error"]
    own = f"http://{client.server.host}:{client.server.port}"
    st, _, _ = await call(client, "POST", "/api/skills", key, {"name": "same-origin-ok"}, Origin=own)
    assert st == 201
    assert await _queues(pool) == before


async def test_health_summary_is_public_details_need_read(client: TestClient, pool: asyncpg.Pool,
                                                          stores: Stores) -> None:
    st, out, _ = await call(client, "GET", "/healthz", None)
    assert st == 200 and out == {"ok": True, "postgresql": {"ok": True}, "redis": {"ok": True},
                                 "kamailio": {"ok": True}}
    st, out, _ = await call(client, "GET", "/healthz", stores.api_key)
    assert out["kamailio"] == {"ok": True, "used": False}


async def test_a_database_that_does_not_answer_gives_503_in_time(client: TestClient, pool: asyncpg.Pool,
                                                                stores: Stores) -> None:
    # A real stuck database for the API: another session holds an exclusive lock on the table.
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("LOCK TABLE queues IN ACCESS EXCLUSIVE MODE")
        t0 = time.monotonic()
        st, out, headers = await call(client, "GET", "/api/queues", stores.api_key)
        took = time.monotonic() - t0
    assert st == 503 and headers["Retry-After"] == "5" and "retry" in out["error"]
    assert 1.4 < took < 4.0, took
    await asyncio.sleep(0)
    assert (await call(client, "GET", "/api/queues", stores.api_key))[0] == 200


def test_a_route_without_a_scope_is_refused_at_start() -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({})

    app = web.Application(middlewares=[access([])])
    app.router.add_get("/open", handler)
    with pytest.raises(RuntimeError, match="without a declared scope"):
        check_routes(app)
    app2 = web.Application()
    app2.router.add_get("/fine", requires("read")(handler))
    check_routes(app2)
