"""The served OpenAPI document (callcenter/openapi.py) against the real app, PostgreSQL and Redis:
Schemathesis over every operation (no 5xx, every response as the spec says, invalid data refused,
valid data accepted), and every operation refused without a key or with a key lacking its scope,
changing nothing."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from callcenter import api
from callcenter.auth import SCOPES, ApiKeys, create_key
from callcenter.commands import CallControl
from callcenter.embedded import free_port
from callcenter.event_bus import EventBus
from callcenter.prompts import load_prompts
from tests.conftest import ROOT, Stores, fresh_redis, shipped_flows

TABLES = ("queues", "agents", "skills", "webhooks", "api_keys", "queue_members", "agent_skills")


@pytest_asyncio.fixture(loop_scope="session")
async def client(stores: Stores, pool: asyncpg.Pool, tmp_path_factory: pytest.TempPathFactory
                 ) -> AsyncIterator[TestClient]:
    async with fresh_redis(stores, 8) as r:
        bus = EventBus("openapi-node", r, pool, tmp_path_factory.mktemp("spool"), pause=0.0)
        control = CallControl(r, bus.sessions, None, bus.notifier, timeout=1.0)
        prompts = load_prompts(ROOT / "sip_config" / "prompts.toml", tmp_path_factory.mktemp("prompts"))
        app = api.make_app(api.Services(pool, r, None, None, notifier=bus.notifier, control=control,
                                        prompts=frozenset(prompts.texts),
                                        flows=shipped_flows(tmp_path_factory.mktemp("flows"))),
                           [ApiKeys(pool)], request_timeout=5)
        c = TestClient(TestServer(app, host="127.0.0.1", port=free_port()))
        await c.start_server()
        yield c
        await c.close()


async def _counts(pool: asyncpg.Pool) -> dict[str, int]:
    return {t: await pool.fetchval(f"SELECT count(*) FROM {t}") for t in TABLES}


async def _spec(client: TestClient) -> dict[str, Any]:
    resp = await client.get("/api/openapi.json")  # public: tools read it before they have a key
    assert resp.status == 200
    return await resp.json()  # type: ignore[no-any-return]


async def test_schemathesis_finds_nothing(client: TestClient, stores: Stores, pool: asyncpg.Pool,
                                          tmp_path: Path) -> None:
    spec = await _spec(client)
    assert {"/api/calls/{id}/transfer", "/api/agents/{login}/call/consult", "/api/webhooks"} <= set(spec["paths"])
    url = str(client.make_url("/api/openapi.json"))
    st = Path(sys.executable).with_name("st")
    proc = await asyncio.create_subprocess_exec(
        str(st), "--config-file", str(Path(__file__).with_name("schemathesis.toml")), "run", url,
        "--header", f"Authorization: Bearer {stores.api_key}", "--checks", "all",
        "--phases", "examples,coverage,fuzzing", "--max-examples", "25", "--workers", "1", "--seed", "7",
        "--generation-database", "none", "--request-timeout", "10", "--no-color",
        "--report", "json", "--report-json-path", str(tmp_path / "report.json"),
        cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""})
    out, _ = await asyncio.wait_for(proc.communicate(), 900)
    text = out.decode(errors="replace")
    print(text[-3000:])
    assert proc.returncode == 0, text[-8000:]
    report = json.loads((tmp_path / "report.json").read_text())
    operations = sum(len(ops) for ops in spec["paths"].values()) - 1  # all but the document itself
    assert report["operations"]["tested"] == operations and not report["failures"], report["operations"]
    assert report["test_cases"]["generated"] > 20 * operations
    await pool.execute("DELETE FROM webhooks")


async def test_without_a_key_or_its_scope_nothing_is_done(client: TestClient, pool: asyncpg.Pool) -> None:
    spec = await _spec(client)
    async with pool.acquire() as conn:
        keys = {scope: await create_key(conn, f"only-{scope}", [scope]) for scope in SCOPES}
    before = await _counts(pool)
    tried = 0
    for template, ops in spec["paths"].items():
        path = template.replace("{id}", "00000000-0000-0000-0000-000000000001").replace("{login}", "ann") \
            .replace("{name}", "support")
        for method, op in ops.items():
            scope = op.get("x-scope")
            if scope is None:
                continue
            for token in (None, *[k for s, k in keys.items() if s != scope]):
                headers = {"Content-Type": "application/json",
                           **({"Authorization": f"Bearer {token}"} if token else {})}
                resp = await client.request(method.upper(), path, data=b"{}", headers=headers)
                body = await resp.json()
                assert resp.status == (401 if token is None else 403), (method, path, scope, resp.status, body)
                assert body["error"]
                tried += 1
    assert tried > 100
    after = await _counts(pool)
    assert after == before
