"""Live events over socket.io (python-socketio): namespace ``/cti``, the same JSON as
docs/events.md, for the agent console, the wallboard and outside systems.

A client connects with an API key that has the ``read`` scope (``auth={"token": "cc_…"}``, or an
``Authorization: Bearer`` header) and asks for what it wants to see with ``subscribe``:
``{"all": true}``, ``{"call": "<interaction>"}``, ``{"queue": "<name>"}`` or ``{"agent": <id>}``.
Each is a room; an event goes to the rooms of its call, queue and agent, and to ``all``, and a
client in several of them gets it once.

Each node reads the event stream itself, through a subscriber group of its own (``socketio:<node>``,
bus/consumer.py), and emits each event to its own clients whose rooms it concerns, in stream order.
python-socketio's ``AsyncRedisManager`` still joins the nodes (an emit from any node reaches a
client on any other), but the event feed does not go through its pub/sub: pub/sub keeps nothing for
a listener that is away, and after a Redis restart each node's listener comes back on its own
schedule (python-socketio retries after 1, 2, 4 … s), so events published meanwhile reached nobody.
A group keeps its place in the stream across a restart: a node's clients miss nothing. A node only
decodes and emits what its own clients asked for, and reads nothing while it has none (a call node
whose CTI clients are on the API nodes); its first client's subscription starts its group afresh at
the stream's end. Nodes that have gone for GROUP_TTL have their groups removed by the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from typing import Any, cast

import asyncpg
import redis.asyncio as aioredis
import socketio
from aiohttp import web
from pydantic import ValidationError

from bus import events as ev
from bus.consumer import StreamConsumer
from bus.keys import EVENTS, SOCKET_NODES, SOCKETIO_CHANNEL
from bus.redis import REDIS_DOWN
from callcenter import cti_service
from callcenter.auth import PUBLIC, ApiKeys, BadCredentials, requires
from callcenter.commands import CallControl
from callcenter.cti_service import ACTIONS
from callcenter.http_guard import long_lived, problems

log = logging.getLogger("callcenter.cti_socket")

NAMESPACE = "/cti"
GROUP = "socketio:{node}"  # each node's subscriber group on the event stream
PATH = "/socket.io/"
KEEP_EVERY = 60.0  # seconds between two "this node reads" marks
READY_WAIT = 2.0  # seconds a first subscription waits for the reader (Redis away: it answers anyway)
GROUP_TTL = 600.0  # a node not seen for this long has its group removed


def rooms_of(e: ev.Event) -> list[str]:
    rooms = ["all"]
    if isinstance(e, ev.CallEvent):
        rooms.append(f"call:{e.interaction}")
    queue = getattr(e, "queue", "")
    if queue:
        rooms.append(f"queue:{queue}")
    agent = getattr(e, "agent_id", None)
    if isinstance(agent, int):
        rooms.append(f"agent:{agent}")
    elif isinstance(e, ev.Offer):
        rooms += [f"agent:{a}" for a in e.agents]
    return rooms


class CtiSocket:
    def __init__(self, redis_url: str, redis: aioredis.Redis, keys: ApiKeys, node: str,
                 control: CallControl | None = None, pool: asyncpg.Pool | None = None):
        """``control``, ``pool``: call control (the ``command`` event), as the REST routes have it."""
        self.keys = keys
        self.control = control
        self.pool = pool
        manager = socketio.AsyncRedisManager(redis_url, channel=SOCKETIO_CHANNEL)
        # WebSocket only: the polling transport's POSTs are not JSON, which the API refuses.
        self.sio = socketio.AsyncServer(async_mode="aiohttp", client_manager=manager, transports=["websocket"],
                                        cors_allowed_origins=[])
        self.sio.on("connect", self._connect, namespace=NAMESPACE)
        self.sio.on("subscribe", self._subscribe, namespace=NAMESPACE)
        self.sio.on("command", self._command, namespace=NAMESPACE)
        self.sio.on("disconnect", self._disconnect, namespace=NAMESPACE)
        self.redis = redis
        self.node = node
        self.reader = StreamConsumer(redis, GROUP.format(node=node), node, self._deliver, start="$")
        self.emitted = 0
        self._rooms: dict[str, set[str]] = {}  # this node's clients' rooms, by client
        self._followed = asyncio.Event()  # some client of this node is in a room
        self._ready = asyncio.Event()  # the reader reads from where the current followers began
        self._unfollowed: asyncio.Event | None = None  # ends the reader's run

    def add_routes(self, app: web.Application) -> None:
        """The socket.io endpoint: open at the HTTP level (the key is checked on connecting to the
        namespace), and exempt from the API's time limit (a socket lives for hours)."""

        @long_lived
        @requires(PUBLIC)
        async def socket_io(request: web.Request) -> web.StreamResponse:
            return await self.sio.handle_request(request)  # type: ignore[no-any-return]

        app.router.add_get(PATH, socket_io)

    async def _connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        token = auth.get("token", "") if isinstance(auth, dict) else ""
        request = environ.get("aiohttp.request")
        if not token and request is not None:
            kind, _, token = request.headers.get("Authorization", "").partition(" ")
            token = token.strip() if kind.lower() == "bearer" else ""
        try:
            principal = await self.keys.verify(str(token))
        except BadCredentials:
            raise socketio.exceptions.ConnectionRefusedError({"error": "invalid or missing API key"}) from None
        if not principal.allows("read"):
            raise socketio.exceptions.ConnectionRefusedError({"error": "not allowed: this needs the 'read' scope",
                                                              "needs": "read"})
        await self.sio.save_session(sid, {"principal": principal.name, "scopes": sorted(principal.scopes)},
                                    namespace=NAMESPACE)

    async def _subscribe(self, sid: str, data: Any) -> dict[str, Any]:
        room = _room(data)
        if room is None:
            return {"ok": False, "error": 'subscribe to {"all": true}, {"call": "<interaction id>"}, '
                                          '{"queue": "<name>"} or {"agent": <id>}'}
        await self.sio.enter_room(sid, room, namespace=NAMESPACE)
        self._rooms.setdefault(sid, set()).add(room)
        self._followed.set()
        if not self._ready.is_set():  # the first follower: answer once the reader reads from now on
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), READY_WAIT)
        return {"ok": True, "room": room}

    async def _command(self, sid: str, data: Any) -> dict[str, Any]:
        """``{"call": "<interaction id>", "command": "hold", "body": {…}}``: the commands and bodies of
        ``POST /api/calls/<id>/<command>``, through the same service; the answer is REST's JSON."""
        session = await self.sio.get_session(sid, namespace=NAMESPACE)
        if "control" not in session.get("scopes", ()):
            return {"ok": False, "error": "not allowed: this needs the 'control' scope", "needs": "control"}
        if self.control is None or self.pool is None:
            return {"ok": False, "error": "call control runs only in the platform's nodes"}
        if not isinstance(data, dict) or not {"call", "command"} <= set(data) <= {"call", "command", "body"}:
            return {"ok": False, "error": 'send {"call": "<interaction id>", "command": "<name>", "body": {…}}'}
        action = ACTIONS.get(data["command"]) if isinstance(data["command"], str) else None
        if action is None:
            return {"ok": False, "error": f"command: one of {sorted(ACTIONS)}", "field": "command"}
        try:
            iid = str(uuid.UUID(str(data["call"])))
        except ValueError:
            return {"ok": False, "error": "call: not an interaction id (a UUID)", "field": "call"}
        try:
            raw = json.dumps(data.get("body", {}))
            body = await cti_service.resolved(self.pool, action.body.model_validate_json(raw))
        except ValidationError as exc:
            return {"ok": False, "error": "invalid request", "problems": problems(exc)}
        except cti_service.Refused as exc:
            return {"ok": False, "error": exc.message, "field": exc.field}
        command = action.make(iid, body, None)
        result = await self.control.submit(command, str(session.get("principal", "")))
        if result.ok:
            return {"ok": True, "command": command.NAME}
        return {"ok": False, "error": result.message, "reason": result.error,
                **({"state": result.state} if result.state else {}),
                **({"field": result.field} if result.field else {})}

    async def _disconnect(self, sid: str, *_: Any) -> None:
        self._rooms.pop(sid, None)
        if not any(self._rooms.values()):
            self._followed.clear()
            self._ready.clear()  # a follower that comes now waits for the reader to start afresh
            if self._unfollowed is not None:
                self._unfollowed.set()

    async def read(self, stop: asyncio.Event) -> None:
        """Read the stream for this node's clients while it has any. Each time it gets its first,
        the group starts afresh at the stream's end: what came while nobody here followed is for
        nobody, and must not come as a burst of old events."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._followed.wait(), 0.5)  # looking at ``stop`` twice a second
            if not self._followed.is_set():
                continue
            try:
                with contextlib.suppress(aioredis.ResponseError):  # no group (or stream) yet
                    await self.redis.xgroup_destroy(EVENTS, self.reader.group)
                await self.redis.xgroup_create(EVENTS, self.reader.group, id="$", mkstream=True)
            except REDIS_DOWN as exc:
                log.warning("socket.io: cannot start reading the event stream: %s", exc)
                await asyncio.sleep(0.5)
                continue
            until = self._unfollowed = asyncio.Event()
            ended = asyncio.create_task(_relay(stop, until))
            self._ready.set()
            try:
                if self._followed.is_set():
                    await self.reader.run(until)
            finally:
                self._ready.clear()
                ended.cancel()

    async def keep_groups(self, stop: asyncio.Event) -> None:
        """Say this node reads (SOCKET_NODES); remove the groups of nodes gone for GROUP_TTL."""
        while not stop.is_set():
            with contextlib.suppress(*REDIS_DOWN):
                now = time.time()
                await self.redis.zadd(SOCKET_NODES, {self.node: now})
                for raw in cast(list[bytes], await self.redis.zrangebyscore(SOCKET_NODES, "-inf", now - GROUP_TTL)):
                    gone = raw.decode()
                    with contextlib.suppress(aioredis.ResponseError):  # no such group (or stream) any more
                        await self.redis.xgroup_destroy(EVENTS, GROUP.format(node=gone))
                    await self.redis.zrem(SOCKET_NODES, gone)
                    log.info("socket.io: the event group of node %s (gone) removed", gone)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), KEEP_EVERY)

    async def _deliver(self, events: list[ev.Event]) -> None:
        """This node's clients get each event of their rooms, in stream order, once."""
        local = {room for rooms in self._rooms.values() for room in rooms}
        if not local:
            return
        # All at once: each emit waits for a turn of the event loop, and a loop turn on a busy node
        # is milliseconds, so emitting one event after another fell behind at 150 events a second
        # (bench/cti: 2 s late). Each client still gets them in order: the emits' tasks run in the
        # order they are made, and queue each client's packets without waiting.
        emits = [self.sio.emit("event", e.body(), to=rooms, namespace=NAMESPACE, ignore_queue=True)
                 for e in events if (rooms := [r for r in rooms_of(e) if r in local])]
        await asyncio.gather(*emits)
        self.emitted += len(emits)


async def _relay(stop: asyncio.Event, until: asyncio.Event) -> None:
    await stop.wait()
    until.set()


def _room(data: Any) -> str | None:
    if not isinstance(data, dict) or len(data) != 1:
        return None
    (kind, value), = data.items()
    if kind == "all" and value is True:
        return "all"
    if kind == "call" and isinstance(value, str):
        try:
            return f"call:{uuid.UUID(value)}"
        except ValueError:
            return None
    if kind == "queue" and isinstance(value, str) and 0 < len(value) <= 64:
        return f"queue:{value}"
    if kind == "agent" and isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return f"agent:{value}"
    return None
