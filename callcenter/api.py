"""REST API (aiohttp): health and the interaction log. Every bad request gets a JSON 4xx."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from aiohttp import web

from acd.agent_store import AgentStore
from acd.directory import Directory
from bus.notifier import Notifier
from callcenter import acd_api, cti_api, ivr_api, openapi, webhook_api
from callcenter.auth import PUBLIC, Authenticator, requires
from callcenter.commands import CallControl
from callcenter.cti_socket import CtiSocket
from callcenter.embedded import EmbeddedRedis
from callcenter.flow_library import FlowLibrary
from callcenter.frontdoor import FrontDoor
from callcenter.http_guard import PRINCIPAL, access, check_routes, error, errors, http_error, time_limit
from callcenter.openapi import UUID, describe
from callcenter.speech_proc import SpeechProcess
from callcenter.supervisor import Supervisor
from callcenter.webhooks import WebhookSender

MAX_LIMIT = 1000


@dataclass
class Services:
    pool: asyncpg.Pool
    redis: aioredis.Redis
    supervisor: Supervisor | None
    frontdoor: FrontDoor | None
    agents: AgentStore | None = None  # the node's own (its hooks trigger routing); else a plain one
    directory: Directory | None = None
    realm: str = "callcenter"  # of the agents' SIP phones
    credentials_changed: Callable[[], None] | None = None  # tells the front door's credential sync
    prompts: frozenset[str] = frozenset()  # names settings may refer to (sip_config/prompts.toml)
    loops: Callable[[], list[dict[str, object]]] | None = None  # the node's supervised background loops
    redis_server: EmbeddedRedis | None = None  # the embedded one, when this node runs it
    notifier: Notifier = field(default_factory=Notifier)  # where the API's changes are announced (docs/events.md)
    events: Callable[[], dict[str, object]] | None = None  # the node's event bus status
    control: CallControl | None = None  # third-party call control (callcenter/commands.py)
    socket: CtiSocket | None = None  # live events over socket.io (callcenter/cti_socket.py)
    webhooks: WebhookSender | None = None  # webhook deliveries (callcenter/webhooks.py)
    flows: FlowLibrary | None = None  # the IVR's flows (callcenter/flow_library.py)
    speech: SpeechProcess | None = None  # the node's speech service, when it runs one


SERVICES: web.AppKey[Services] = web.AppKey("services", Services)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda o: json.dumps(o, default=_default))


def _default(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, uuid.UUID):
        return str(v)
    return str(v)


def _parse_time(value: str, name: str) -> datetime:
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise http_error(400, f"{name}: not an ISO 8601 time: {value!r}") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


@describe("health of every component (details need the read scope)")
@requires(PUBLIC)
async def healthz(request: web.Request) -> web.Response:
    """Anyone (a load balancer's probe) gets the verdict per component; details need the read scope."""
    s = request.app[SERVICES]
    checks: dict[str, Any] = {}

    async def pg() -> None:
        try:
            await asyncio.wait_for(s.pool.fetchval("SELECT 1"), 2)
            checks["postgresql"] = {"ok": True}
        except Exception as exc:  # noqa: BLE001 - health reports every failure
            checks["postgresql"] = {"ok": False, "error": str(exc) or type(exc).__name__}

    async def rd() -> None:
        rs = s.redis_server
        server = {"embedded": True, "restarts": rs.restarts, "last_fault": rs.last_fault or None} if rs else {}
        try:
            await asyncio.wait_for(s.redis.ping(), 2)
            checks["redis"] = {"ok": True, **server}
        except Exception as exc:  # noqa: BLE001
            checks["redis"] = {"ok": False, "error": str(exc) or type(exc).__name__, **server}
            return
        if s.directory is not None:  # routing needs the directory Redis holds, not just Redis
            try:
                loaded = await asyncio.wait_for(s.directory.loaded(), 2)
            except Exception as exc:  # noqa: BLE001
                loaded = False
                checks["routing"] = {"ok": False, "error": str(exc) or type(exc).__name__}
            else:
                checks["routing"] = {"ok": loaded, **({} if loaded else {"error": "routing directory not loaded"})}

    await asyncio.gather(pg(), rd())
    if s.directory is not None and "routing" not in checks:
        checks["routing"] = {"ok": False, "error": "Redis unreachable"}
    if s.loops is not None:
        items = s.loops()
        checks["tasks"] = {"ok": all(t["state"] == "running" for t in items), "items": items}
    if s.events is not None:
        checks["events"] = s.events()
    if s.webhooks is not None:
        checks["webhooks"] = {"ok": True, **s.webhooks.status()}
    if s.speech is not None:  # while it is down (or loading its model) IVR menus take keys only
        checks["speech"] = {"ok": s.speech.up, "address": s.speech.address, "model": s.speech.model}
    if s.supervisor is not None:
        workers = await s.supervisor.status()
        up = sum(1 for w in workers if w["up"])
        checks["workers"] = {"ok": up > 0, "up": up, "total": len(workers),
                             "capacity": sum(capacity for _, capacity in s.supervisor.live()),
                             "items": workers}
    if s.frontdoor is not None:
        checks["kamailio"] = await s.frontdoor.health()
    else:
        checks["kamailio"] = {"ok": True, "used": False}
    ok = all(c.get("ok") for c in checks.values())
    principal = request.get(PRINCIPAL)
    if principal is None or not principal.allows("read"):
        checks = {name: {"ok": bool(c.get("ok"))} for name, c in checks.items()}
    return _json({"ok": ok, **checks}, status=200 if ok else 503)


_INTERACTION_FIELDS = (
    "id, direction, caller_number, caller_name, dialed_number, customer_id, route, worker_id, "
    "sip_call_id, arrived_at, answered_at, queued_at, queue_id, agent_offered_at, agent_answered_at, "
    "agent_id, ended_at, disconnect_reason, disconnect_side, sip_code, digits"
)


@describe("interaction records, oldest first from ``since``, a page at a time", query={
    "since": {"type": "string", "format": "date-time"},
    "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}, "after": UUID})
@requires("read")
async def list_interactions(request: web.Request) -> web.Response:
    q = request.query
    unknown = set(q) - {"since", "limit", "after"}
    if unknown:
        return error(400, f"unknown query parameters: {sorted(unknown)}")
    since = _parse_time(q["since"], "since") if "since" in q else datetime(1970, 1, 1, tzinfo=UTC)
    try:
        limit = int(q.get("limit", "100"))
    except ValueError:
        return error(400, f"limit: not an integer: {q['limit']!r}")
    if not 1 <= limit <= MAX_LIMIT:
        return error(400, f"limit: must be between 1 and {MAX_LIMIT}")
    after: uuid.UUID | None = None
    if "after" in q:
        try:
            after = uuid.UUID(q["after"])
        except ValueError:
            return error(400, f"after: not an interaction id: {q['after']!r}")
    pool = request.app[SERVICES].pool
    if after is None:
        rows = await pool.fetch(
            f"SELECT {_INTERACTION_FIELDS} FROM interactions WHERE arrived_at >= $1 "
            "ORDER BY arrived_at, id LIMIT $2", since, limit + 1)
    else:
        rows = await pool.fetch(
            f"SELECT {_INTERACTION_FIELDS} FROM interactions WHERE (arrived_at, id) > ($1, $2) "
            "ORDER BY arrived_at, id LIMIT $3", since, after, limit + 1)
    items = [dict(r) for r in rows[:limit]]
    nxt = None
    if len(rows) > limit:
        last = items[-1]
        nxt = str(request.url.with_query(since=last["arrived_at"].isoformat(), after=str(last["id"]),
                                         limit=str(limit)).relative())
    return _json({"items": items, "next": nxt})


@describe("one interaction record with its events", path={"id": UUID})
@requires("read")
async def get_interaction(request: web.Request) -> web.Response:
    try:
        iid = uuid.UUID(request.match_info["id"])
    except ValueError:
        return error(400, "not an interaction id")
    pool = request.app[SERVICES].pool
    row = await pool.fetchrow(f"SELECT {_INTERACTION_FIELDS} FROM interactions WHERE id = $1", iid)
    if row is None:
        return error(404, "no such interaction")
    events = await pool.fetch(
        "SELECT at, event, queue_id, agent_id, data FROM interaction_events WHERE interaction_id = $1 "
        "ORDER BY at, id", iid)
    return _json({**dict(row), "events": [{**dict(e), "data": json.loads(e["data"])} for e in events]})


def make_app(services: Services, authenticators: list[Authenticator], request_timeout: float = 5.0,
             allowed_origins: tuple[str, ...] = ()) -> web.Application:
    app = web.Application(middlewares=[errors, time_limit(request_timeout), access(authenticators, allowed_origins)])
    app[SERVICES] = services
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/interactions", list_interactions)
    app.router.add_get("/api/interactions/{id}", get_interaction)
    acd_api.add_routes(app, services.pool, services.agents or AgentStore(services.redis),
                       services.directory or Directory(services.redis),
                       acd_api.Phones(services.realm, services.credentials_changed or (lambda: None)),
                       services.prompts, services.notifier)
    cti_api.add_routes(app, services.redis, services.control, services.pool)
    webhook_api.add_routes(app, services.pool, services.redis)
    ivr_api.add_routes(app, services.flows, services.pool)
    if services.socket is not None:
        services.socket.add_routes(app)
    openapi.add_route(app)
    check_routes(app)
    return app
