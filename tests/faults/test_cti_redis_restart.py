"""The CTI feeds through a Redis restart: a socket.io client and a webhook receiver follow a real
queue call (SIPp caller, pjsua2 agent phone behind Kamailio) while the platform's Redis is killed
and started again mid-call, and commands are sent as soon as it is back. Each gets every event of
the call, in the order of the stream, once, the same ones the interaction log wrote; the call is not
dropped."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import socketio
from aiohttp import web

from callcenter.embedded import free_port
from tests.conftest import Platform, Stores
from tests.faults.helpers import (
    agent_with_phone,
    answered,
    figure,
    hang_up,
    redis_pid,
    two_worker_platform,
    wait_healthy,
    waiting_callers,
)
from tests.sip.phones import result

PLAN = """
[[route]]
number = "570"
name = "redisq"
action = "queue"
prompt = "connecting"
queue = "redisq"
"""


@pytest.fixture
def platform(stores: Stores, tmp_path: Path) -> Iterator[Platform]:
    p = two_worker_platform(stores, tmp_path, PLAN, redis_db=None)
    yield p
    if p.proc.poll() is None:
        assert p.stop() == 0


async def _receiver(got: list[dict[str, Any]], secret: list[str]) -> tuple[web.AppRunner, str]:
    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        t, v1 = (part.split("=", 1)[1] for part in request.headers["X-Callcenter-Signature"].split(","))
        if not hmac.compare_digest(hmac.new(secret[0].encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest(),
                                   v1):
            return web.Response(status=401)
        got.extend(json.loads(body)["events"])
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}/hook"


def _of(events: list[dict[str, Any]], iid: str) -> list[dict[str, Any]]:
    return [e for e in events if e.get("interaction") == iid]


async def _until(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def test_socketio_and_webhooks_get_every_event_of_a_call_across_a_redis_restart(
        platform: Platform, pool: asyncpg.Pool) -> None:
    p = platform
    agent = agent_with_phone(p, 45)
    hooked: list[dict[str, Any]] = []
    secret: list[str] = []
    runner, url = await _receiver(hooked, secret)
    st, sub = p.send("POST", "/api/webhooks", {"name": "crm", "url": url})
    assert st == 201, sub
    secret.append(sub["secret"])  # type: ignore[index]
    pushed: list[dict[str, Any]] = []
    sio = socketio.AsyncClient(reconnection=False)
    sio.on("event", pushed.append, namespace="/cti")
    await sio.connect(p.http, auth={"token": p.api_key}, namespaces=["/cti"], transports=["websocket"])
    assert (await sio.call("subscribe", {"all": True}, namespace="/cti"))["ok"]
    callers = waiting_callers(p, 1, service="570")
    try:
        await answered(pool, callers)
        iid = str(callers[0].interaction["id"])  # type: ignore[index]
        await _until(lambda: any(e["name"] == "CONNECT" for e in _of(pushed, iid)), 15, "the agent to answer")
        await asyncio.sleep(1.0)
        killed_at = time.time()
        os.kill(redis_pid(p), signal.SIGKILL)
        recovered = await asyncio.to_thread(wait_healthy, p, killed_at)
        for command in ("hold", "resume"):  # at once: the nodes' listeners may not be back yet
            st, out = p.send("POST", f"/api/calls/{iid}/{command}", {})
            assert st == 200, out
            await asyncio.sleep(1.0)
        assert callers[0].proc.poll() is None, "the call was dropped"
        st, out = p.send("POST", f"/api/calls/{iid}/hangup", {"leg": "caller"})
        assert st == 200, out
        await asyncio.to_thread(callers[0].proc.wait, 10)
        assert callers[0].got_bye
    finally:
        hang_up(callers)
    try:
        for feed in (pushed, hooked):
            await _until(lambda feed=feed: any(e["name"] == "COMPLETECALLER" for e in _of(feed, iid)), 30,
                         "the end of the call in both feeds")
        await asyncio.sleep(1.0)
        rows = await pool.fetch("SELECT event_id FROM interaction_events WHERE interaction_id = $1 ORDER BY id",
                                callers[0].interaction["id"])  # type: ignore[index]
    finally:
        await sio.disconnect()
        await runner.cleanup()
        # the database is shared with the modules that follow: they must not inherit a subscriber
        await pool.execute("DELETE FROM webhooks WHERE id = $1", sub["id"])  # type: ignore[index]
    socket_ids = [e["id"] for e in _of(pushed, iid)]
    hook_ids = [e["id"] for e in _of(hooked, iid)]
    assert socket_ids == hook_ids, "the two feeds differ"
    assert len(set(socket_ids)) == len(socket_ids), "an event came twice"
    logged = [r["event_id"] for r in rows]
    assert [e["id"] for e in _of(pushed, iid) if e["name"] != "CALLSTATE"] == logged, "not what the log wrote"
    names = [e["name"] for e in _of(pushed, iid)]
    for name in ("ENTERQUEUE", "CONNECT", "COMMAND", "HANGUP", "COMPLETECALLER"):
        assert name in names, names
    assert [e["command"] for e in _of(pushed, iid) if e["name"] == "COMMAND"] == ["hold", "resume", "hangup"]
    assert p.health()["redis"]["restarts"] == 1
    result(agent)
    figure("Redis killed mid-call, CTI feeds", events=len(socket_ids), socketio_missing=0, webhook_missing=0,
           duplicates=0, healthy_again_s=round(recovered, 2), call_dropped=False)
