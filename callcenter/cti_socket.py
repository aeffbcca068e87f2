"""Live events over socket.io (python-socketio): namespace ``/cti``, the same JSON as
docs/events.md, for the agent console, the wallboard and outside systems.

A client connects with an API key that has the ``read`` scope (``auth={"token": "cc_…"}``, or an
``Authorization: Bearer`` header) and asks for what it wants to see with ``subscribe``:
``{"all": true}``, ``{"call": "<interaction>"}``, ``{"queue": "<name>"}`` or ``{"agent": <id>}``.
Each is a room; an event goes to the rooms of its call, queue and agent, and to ``all``, and a
client in several of them gets it once.

The events come from the stream through the subscriber group ``socketio`` (bus/consumer.py): one
node at a time reads it and emits through python-socketio's ``AsyncRedisManager``, which delivers
to the clients connected to every node.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import redis.asyncio as aioredis
import socketio
from aiohttp import web

from bus import events as ev
from bus.consumer import StreamConsumer
from bus.keys import SOCKETIO_CHANNEL
from callcenter.auth import PUBLIC, ApiKeys, BadCredentials, requires
from callcenter.http_guard import long_lived

log = logging.getLogger("callcenter.cti_socket")

NAMESPACE = "/cti"
GROUP = "socketio"  # its subscriber group on the event stream
PATH = "/socket.io/"


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
    def __init__(self, redis_url: str, redis: aioredis.Redis, keys: ApiKeys, node: str):
        self.keys = keys
        manager = socketio.AsyncRedisManager(redis_url, channel=SOCKETIO_CHANNEL)
        # WebSocket only: the polling transport's POSTs are not JSON, which the API refuses.
        self.sio = socketio.AsyncServer(async_mode="aiohttp", client_manager=manager, transports=["websocket"],
                                        cors_allowed_origins=[])
        self.sio.on("connect", self._connect, namespace=NAMESPACE)
        self.sio.on("subscribe", self._subscribe, namespace=NAMESPACE)
        self.reader = StreamConsumer(redis, GROUP, node, self._deliver, start="$")
        self.emitted = 0

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
        await self.sio.save_session(sid, {"principal": principal.name}, namespace=NAMESPACE)

    async def _subscribe(self, sid: str, data: Any) -> dict[str, Any]:
        room = _room(data)
        if room is None:
            return {"ok": False, "error": 'subscribe to {"all": true}, {"call": "<interaction id>"}, '
                                          '{"queue": "<name>"} or {"agent": <id>}'}
        await self.sio.enter_room(sid, room, namespace=NAMESPACE)
        return {"ok": True, "room": room}

    async def _deliver(self, events: list[ev.Event]) -> None:
        for e in events:
            await self.sio.emit("event", json.loads(e.encode()), to=rooms_of(e), namespace=NAMESPACE)
            self.emitted += 1


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
