"""The CTI socket against a real Redis and PostgreSQL, with python-socketio's own client: a key with
the read scope gets the events of the rooms it subscribed to, in order, each once; others are
refused at the door."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
import socketio
from aiohttp.test_utils import TestServer

from bus import events as ev
from callcenter import api
from callcenter.auth import ApiKeys, create_key
from callcenter.commands import CallControl
from callcenter.cti_socket import NAMESPACE, CtiSocket
from callcenter.event_bus import EventBus
from callcenter.tasks import Loops
from tests.conftest import Stores, fresh_redis

DB = 11


@pytest_asyncio.fixture(loop_scope="session")
async def r(stores: Stores) -> AsyncIterator[aioredis.Redis]:
    async with fresh_redis(stores, DB) as client:
        yield client


async def client(url: str, token: str, events: list[dict[str, Any]]) -> socketio.AsyncClient:
    sio = socketio.AsyncClient(reconnection=False)
    sio.on("event", lambda data: events.append(data), namespace=NAMESPACE)
    await sio.connect(url, auth={"token": token}, namespaces=[NAMESPACE], transports=["websocket"],
                      wait_timeout=5)
    return sio


@contextlib.asynccontextmanager
async def _node(r: aioredis.Redis, pool: asyncpg.Pool, stores: Stores, tmp: Path, name: str,
                control: bool = False) -> AsyncIterator[tuple[EventBus, CtiSocket, str]]:
    """One node serving the CTI socket (and, with ``control``, call control): its bus, its socket
    and its URL."""
    bus = EventBus(name, r, pool, tmp / "spool", pause=0.0)
    keys = ApiKeys(pool)
    calls = CallControl(r, bus.sessions, None, bus.notifier, timeout=1.0) if control else None
    socket = CtiSocket(stores.redis_db(DB), r, keys, name, control=calls, pool=pool if control else None)
    loops = Loops()
    bus.start(loops)
    loops.start("socketio", socket.read)
    server = TestServer(api.make_app(api.Services(pool, r, None, None, notifier=bus.notifier, socket=socket), [keys]))
    await server.start_server()
    try:
        yield bus, socket, str(server.make_url("/"))
    finally:
        await loops.stop()
        await bus.close()
        await server.close()


async def test_clients_get_their_rooms_events_in_order_once(r: aioredis.Redis, pool: asyncpg.Pool, stores: Stores,
                                                            tmp_path: Path) -> None:
    async with _node(r, pool, stores, tmp_path, "sock-node") as (bus, socket, url):
        async with pool.acquire() as conn:
            control_only = await create_key(conn, "cti-control-only", ["control"])
        mine, other = str(uuid.uuid4()), str(uuid.uuid4())
        everything: list[dict[str, Any]] = []
        got: list[dict[str, Any]] = []
        clients: list[socketio.AsyncClient] = []
        try:
            before = ev.CallArrived(interaction=str(uuid.uuid4()), caller_number="+15550040")
            bus.notifier.emit(before)
            await asyncio.sleep(0.3)
            # Nobody follows this node: it reads nothing, and what came meanwhile is for nobody.
            assert not socket.reader.reading and socket.reader.handled == 0 and socket.emitted == 0
            watcher = await client(url, stores.api_key, got)
            clients.append(watcher)
            assert await watcher.call("subscribe", {"call": mine}, namespace=NAMESPACE) == {"ok": True,
                                                                                          "room": f"call:{mine}"}
            assert await watcher.call("subscribe", {"queue": "support"}, namespace=NAMESPACE)  # also a room of mine
            refused = await watcher.call("subscribe", {"call": "not-a-uuid"}, namespace=NAMESPACE)
            assert refused["ok"] is False
            supervisor = await client(url, stores.api_key, everything)
            clients.append(supervisor)
            await supervisor.call("subscribe", {"all": True}, namespace=NAMESPACE)

            sent = [ev.CallArrived(interaction=mine, caller_number="+15550041"), ev.CallAnswered(interaction=mine),
                    ev.EnterQueue(interaction=mine, queue="support", position=1),
                    ev.Offer(interaction=mine, queue="support", agents=[4]),
                    ev.CallArrived(interaction=other, caller_number="+15550042"),
                    ev.Hangup(interaction=mine, cause="normal_clearing")]
            for e in sent:
                bus.notifier.emit(e)
            for _ in range(300):
                if any(g["name"] == "CALLSTATE" and g["state"] == "ended" for g in got):  # the last one
                    break
                await asyncio.sleep(0.01)
            mine_ids = [e.id for e in sent if e.interaction == mine]  # type: ignore[attr-defined]
            assert [g["id"] for g in got if g["name"] != "CALLSTATE"] == mine_ids  # in order, once, not the other call
            assert [g["state"] for g in got if g["name"] == "CALLSTATE"] == ["ivr", "queued", "offering", "ended"]
            assert (got[0]["v"], got[0]["name"], got[0]["caller_number"], got[0]["node"]) == (1, "DID", "+15550041",
                                                                                             "sock-node")
            for _ in range(100):
                if len([e for e in everything if e["name"] != "CALLSTATE"]) >= len(sent):
                    break
                await asyncio.sleep(0.01)
            assert [e["id"] for e in everything if e["name"] != "CALLSTATE"] == [e.id for e in sent]

            for token in ("cc_nope_nope", "", control_only):  # wrong key, no key, a key without the read scope
                with pytest.raises(socketio.exceptions.ConnectionError):
                    await client(url, token, [])
        finally:
            for c in clients:
                await c.disconnect()



async def test_a_node_reads_only_while_followed_and_its_next_follower_gets_no_old_events(
        r: aioredis.Redis, pool: asyncpg.Pool, stores: Stores, tmp_path: Path) -> None:
    async with _node(r, pool, stores, tmp_path, "idle-node") as (bus, socket, url):

        async def follow(got: list[dict[str, Any]]) -> socketio.AsyncClient:
            sio = await client(url, stores.api_key, got)
            assert (await sio.call("subscribe", {"all": True}, namespace=NAMESPACE))["ok"]
            return sio

        async def arrived(got: list[dict[str, Any]], n: int) -> None:
            for _ in range(300):
                if len(got) >= n:
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)

        first: list[dict[str, Any]] = []
        second: list[dict[str, Any]] = []
        bus.notifier.emit(ev.AgentLogin(agent_id=901))
        sio = await follow(first)
        followed = ev.AgentLogin(agent_id=902)
        bus.notifier.emit(followed)
        await arrived(first, 1)
        assert [g["id"] for g in first] == [followed.id]
        await sio.disconnect()
        for _ in range(300):
            if not socket.reader.reading:
                break
            await asyncio.sleep(0.01)
        handled = socket.reader.handled
        bus.notifier.emit(ev.AgentLogin(agent_id=903))  # for nobody
        await asyncio.sleep(0.3)
        assert not socket.reader.reading and socket.reader.handled == handled
        sio = await follow(second)
        again = ev.AgentLogin(agent_id=904)
        bus.notifier.emit(again)
        await arrived(second, 1)
        assert [g["id"] for g in second] == [again.id]
        await sio.disconnect()

async def test_another_node_s_clients_get_every_event_even_after_redis_dropped_its_connections(
        r: aioredis.Redis, pool: asyncpg.Pool, stores: Stores, tmp_path: Path) -> None:
    """The events are emitted on node A; the client is on node B, which reads the stream for its own
    clients. Then Redis drops every connection, as when it restarts (pub/sub would have lost what
    was published until python-socketio's listener came back, a second later): B's reader resumes
    where its group was, and B's client gets every event, in order, once."""
    bus = EventBus("node-a", r, pool, tmp_path / "spool", pause=0.0)
    keys = ApiKeys(pool)
    reader = CtiSocket(stores.redis_db(DB), r, keys, "node-a")
    other = CtiSocket(stores.redis_db(DB), r, keys, "node-b")
    loops = Loops()
    bus.start(loops)
    loops.start("socketio-a", reader.read)
    loops.start("socketio-b", other.read)
    servers = [TestServer(api.make_app(api.Services(pool, r, None, None, notifier=bus.notifier, socket=reader),
                                       [keys])),
               TestServer(api.make_app(api.Services(pool, r, None, None, notifier=bus.notifier, socket=other),
                                       [keys]))]
    for server in servers:
        await server.start_server()
    got: list[dict[str, Any]] = []
    watcher = await client(str(servers[1].make_url("/")), stores.api_key, got)  # on node B
    call = str(uuid.uuid4())
    try:
        await watcher.call("subscribe", {"call": call}, namespace=NAMESPACE)
        first = ev.Dtmf(interaction=call, digit="1")
        for _ in range(300):
            if other.reader.reading:
                break
            await asyncio.sleep(0.01)
        bus.notifier.emit(first)
        for _ in range(300):
            if got:
                break
            await asyncio.sleep(0.01)
        assert [g["id"] for g in got] == [first.id]
        got.clear()
        await r.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        await r.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        after = [ev.Dtmf(interaction=call, digit=str(n)) for n in range(5)]
        for e in after:
            bus.notifier.emit(e)
        for _ in range(1000):
            if len(got) >= 5:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        assert [g["id"] for g in got] == [e.id for e in after]
        assert reader.emitted == 0  # node A has no client: it emitted nothing
    finally:
        await watcher.disconnect()
        await loops.stop()
        await bus.close()
        for server in servers:
            await server.close()


async def test_commands_over_the_socket_are_the_rest_commands(r: aioredis.Redis, pool: asyncpg.Pool, stores: Stores,
                                                              tmp_path: Path) -> None:
    """``command`` takes the commands and bodies of POST /api/calls/<id>/<command>, through the same
    service and call control; a key without the control scope is refused."""
    async with _node(r, pool, stores, tmp_path, "cmd-node", control=True) as (bus, socket, url):
        async with pool.acquire() as conn:
            read_only = await create_key(conn, "cti-read-only", ["read"])
        got: list[dict[str, Any]] = []
        crm = await client(url, stores.api_key, got)
        watcher = await client(url, read_only, [])
        iid = str(uuid.uuid4())
        try:
            bus.notifier.emit(ev.CallArrived(interaction=iid, caller_number="+15550077", media_call="w1-9"))
            await crm.call("subscribe", {"call": iid}, namespace=NAMESPACE)
            done = await crm.call("command", {"call": iid, "command": "data", "body": {"data": {"order": "A-17"}}},
                                  namespace=NAMESPACE)
            assert done == {"ok": True, "command": "attach"}
            for _ in range(300):
                if any(g["name"] == "COMMAND" for g in got):
                    break
                await asyncio.sleep(0.01)
            applied = next(g for g in got if g["name"] == "COMMAND")
            assert (applied["command"], applied["args"], applied["by"]) == (
                "attach", {"data": {"order": "A-17"}}, "tests")
            refused = await crm.call("command", {"call": iid, "command": "hold", "body": {}},
                                     namespace=NAMESPACE)
            assert (refused["ok"], refused["reason"], refused["state"]) == (False, "state", "arriving")
            bad = await crm.call("command", {"call": iid, "command": "transfer", "body": {"kind": "queue"}},
                                 namespace=NAMESPACE)
            assert bad["ok"] is False and bad["problems"]
            assert (await crm.call("command", {"call": "x", "command": "hold"}, namespace=NAMESPACE))["field"] == "call"
            assert (await crm.call("command", {"call": iid, "command": "teleport"}, namespace=NAMESPACE))["field"] == \
                "command"
            denied = await watcher.call("command", {"call": iid, "command": "data", "body": {"data": {"x": "y"}}},
                                        namespace=NAMESPACE)
            assert denied == {"ok": False, "error": "not allowed: this needs the 'control' scope", "needs": "control"}
        finally:
            for c in (crm, watcher):
                await c.disconnect()

