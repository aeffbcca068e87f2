"""Live events over socket.io (python-socketio): namespace ``/cti``, the same JSON as
docs/events.md, for the agent console, the wallboard and outside systems.

A client connects with an API key that has the ``read`` scope (``auth={"token": "cc_…"}``, or an
``Authorization: Bearer`` header) and asks for what it wants to see with ``subscribe``:
``{"all": true}``, ``{"call": "<interaction>"}``, ``{"queue": "<name>"}`` or ``{"agent": <id>}``.
Each is a room; an event goes to the rooms of its call, queue and agent, and to ``all``, and a
client in several of them gets it once.

The events come from the stream through the subscriber group ``socketio`` (bus/consumer.py): one
node at a time reads it and emits through python-socketio's ``AsyncRedisManager``, which delivers
to the clients connected to every node. An emit costs about 0.2 ms of CPU (a Redis PUBLISH, then
every node's listener), so the reader emits only to rooms that some node has a client in: each node
keeps its rooms' client counts in Redis (SOCKET_ROOMS_KEY, expiring unless renewed), and the reader
reads them once a second.

Pub/sub keeps nothing for a listener that is not subscribed: after Redis was away, a node's listener
comes back on its own schedule (python-socketio retries after 1, 2, 4 … s). So whenever the reader
(re)takes its lease, it first waits until every node with clients has its listener subscribed again
(its pub/sub connection is named after the node), then emits: nothing is published into the void.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections import Counter
from typing import Any, cast

import redis.asyncio as aioredis
import socketio
from aiohttp import web

from bus import events as ev
from bus.consumer import StreamConsumer
from bus.keys import SOCKET_NODES, SOCKET_ROOMS_KEY, SOCKETIO_CHANNEL
from bus.redis import REDIS_DOWN
from callcenter.auth import PUBLIC, ApiKeys, BadCredentials, requires
from callcenter.http_guard import long_lived

log = logging.getLogger("callcenter.cti_socket")

NAMESPACE = "/cti"
GROUP = "socketio"  # its subscriber group on the event stream
PATH = "/socket.io/"
ROOMS_TTL = 30  # seconds a node's room counts live in Redis unless renewed
ROOMS_RENEW = 2.0  # seconds between renewals (a Redis that lost its data has them back this soon)
LISTENERS_WAIT = 30.0  # seconds the reader waits for the nodes' listeners after Redis was away
LISTENER_NAME = "cc-sio:{node}"  # the client name of each node's socket.io pub/sub connection


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
        manager = socketio.AsyncRedisManager(redis_url, channel=SOCKETIO_CHANNEL,
                                             redis_options={"client_name": LISTENER_NAME.format(node=node)})
        # WebSocket only: the polling transport's POSTs are not JSON, which the API refuses.
        self.sio = socketio.AsyncServer(async_mode="aiohttp", client_manager=manager, transports=["websocket"],
                                        cors_allowed_origins=[])
        self.sio.on("connect", self._connect, namespace=NAMESPACE)
        self.sio.on("subscribe", self._subscribe, namespace=NAMESPACE)
        self.sio.on("disconnect", self._disconnect, namespace=NAMESPACE)
        self.redis = redis
        self.node = node
        self.reader = StreamConsumer(redis, GROUP, node, self._deliver, start="$", hold_for=LISTENERS_WAIT + 5,
                                     on_lease=self._leased)
        self._listeners_unsure = True  # until the nodes' listeners are known to be subscribed
        self.emitted = 0
        self._rooms: dict[str, set[str]] = {}  # this node's clients' rooms, by client
        self._wanted: set[str] = set()  # rooms some node has a client in (read once a second)
        self._wanted_at = 0.0
        self._watching: set[str] = set()  # the nodes that have clients

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
        self._rooms.setdefault(sid, set()).add(room)
        await self._publish_rooms()
        self._wanted.add(room)
        return {"ok": True, "room": room}

    async def _disconnect(self, sid: str, *_: Any) -> None:
        if self._rooms.pop(sid, None):
            with contextlib.suppress(*REDIS_DOWN):
                await self._publish_rooms()

    async def _publish_rooms(self) -> None:
        """This node's rooms and their client counts, for the reader on whichever node it runs."""
        counts = Counter(room for rooms in self._rooms.values() for room in rooms)
        key = SOCKET_ROOMS_KEY.format(node=self.node)
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(key)
        if counts:
            pipe.hset(key, mapping=dict(counts))  # type: ignore[arg-type]  # redis-py's Mapping is invariant
            pipe.expire(key, ROOMS_TTL)
            pipe.zadd(SOCKET_NODES, {self.node: time.time()})
        await pipe.execute()

    async def keep_rooms(self, stop: asyncio.Event) -> None:
        """Renew this node's rooms before they expire (a dead node's go by themselves)."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), ROOMS_RENEW)
            if self._rooms and not stop.is_set():
                with contextlib.suppress(*REDIS_DOWN):
                    await self._publish_rooms()

    def _leased(self) -> None:
        self._listeners_unsure = True
        self._wanted_at = 0.0

    async def _wanted_rooms(self) -> set[str]:
        now = time.monotonic()
        if now - self._wanted_at >= 1.0:
            live = cast(list[bytes], await self.redis.zrangebyscore(SOCKET_NODES, time.time() - ROOMS_TTL, "+inf"))
            nodes = [n.decode() for n in live]
            pipe = self.redis.pipeline(transaction=False)
            for n in nodes:
                pipe.hkeys(SOCKET_ROOMS_KEY.format(node=n))
            rooms = await pipe.execute()
            self._wanted = {r.decode() for keys in rooms for r in keys}
            self._watching = {n for n, keys in zip(nodes, rooms, strict=True) if keys}
            self._wanted_at = now
        return self._wanted

    async def _listeners_back(self) -> None:
        """Wait (LISTENERS_WAIT at most) until every node with clients listens again."""
        deadline = time.monotonic() + LISTENERS_WAIT
        while True:
            listing = cast(str | bytes, await self.redis.execute_command("CLIENT", "LIST", "TYPE", "pubsub"))
            text = listing.decode() if isinstance(listing, bytes) else listing
            names = {part[5:] for line in text.splitlines() for part in line.split() if part.startswith("name=")}
            missing = {n for n in self._watching if LISTENER_NAME.format(node=n) not in names}
            if not missing:
                self._listeners_unsure = False
                return
            if time.monotonic() > deadline:
                log.error("socket.io: the listeners of %s are not back after %.0f s; their clients miss events",
                          sorted(missing), LISTENERS_WAIT)
                self._listeners_unsure = False
                return
            await asyncio.sleep(0.2)

    async def _deliver(self, events: list[ev.Event]) -> None:
        wanted = await self._wanted_rooms()
        if wanted and self._listeners_unsure:
            await self._listeners_back()
        for e in events:
            rooms = [r for r in rooms_of(e) if r in wanted]
            if rooms:
                await self.sio.emit("event", json.loads(e.encode()), to=rooms, namespace=NAMESPACE)
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
