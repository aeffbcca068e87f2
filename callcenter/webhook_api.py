"""Webhook subscriptions over HTTP (callcenter/webhooks.py delivers them). A subscription belongs to
the API key that made it, which needs the ``read`` scope; a key sees and changes its own, a key with
``configure`` every one. The secret that signs the deliveries is shown once, in the answer that
creates the subscription."""

from __future__ import annotations

import fnmatch
import json
import re
import secrets
from typing import Annotated, Any

import asyncpg
import redis.asyncio as aioredis
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, field_validator

from bus import events as ev
from callcenter import webhooks
from callcenter.auth import Principal, requires
from callcenter.http_guard import PRINCIPAL, http_error, read_body
from callcenter.openapi import describe

POOL: web.AppKey[asyncpg.Pool] = web.AppKey("webhooks_pool", asyncpg.Pool)
REDIS: web.AppKey[aioredis.Redis] = web.AppKey("webhooks_redis", aioredis.Redis)

_FIELDS = "id, name, url, events, active, created_at"
ID = {"id": {"type": "string", "pattern": r"^[0-9]{1,18}$"}}


WILDCARD = re.compile(r"[A-Z_]*[*?][A-Z_*?]*")


def _event_filter_schema(schema: dict[str, Any]) -> None:
    """An event's name, or a pattern with a wildcard: what the validator below accepts."""
    schema.pop("type", None)
    schema["anyOf"] = [{"type": "string", "enum": ev.names()},
                       {"type": "string", "pattern": f"^{WILDCARD.pattern}$", "maxLength": 40}]


class NoBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(min_length=1, max_length=100)
    url: str = Field(pattern=r"^https?://[^\s]+$", max_length=2000)
    # Event names (docs/events.md), or fnmatch patterns of them (DIAL_*); none: every event.
    events: list[Annotated[str, Field(json_schema_extra=_event_filter_schema)]] = Field(default_factory=list,
                                                                                       max_length=50)

    @field_validator("events")
    @classmethod
    def _filters(cls, v: list[str]) -> list[str]:
        names = set(ev.names())
        for f in v:
            if f not in names and not WILDCARD.fullmatch(f):
                raise ValueError(f"{f!r} is neither an event's name nor a pattern (with * or ?)")
        return v


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda o: json.dumps(o, default=str))


def _principal(request: web.Request) -> Principal:
    principal = request.get(PRINCIPAL)
    if principal is None or not principal.key_id:
        raise http_error(403, "webhook subscriptions belong to API keys")
    return principal  # type: ignore[no-any-return]


def _owned(request: web.Request, param: int) -> tuple[str, list[Any]]:
    """A WHERE clause limiting rows to the caller's subscriptions (all of them for configure)."""
    principal = _principal(request)
    return ("true", []) if principal.allows("configure") else (f"api_key_id = ${param}", [principal.key_id])


def _id(request: web.Request) -> int:
    raw = request.match_info["id"]
    if not raw.isdigit() or len(raw) > 18:
        raise http_error(400, "id: a subscription's number", field="id")
    return int(raw)


async def _one(request: web.Request) -> asyncpg.Record:
    where, args = _owned(request, 2)
    row = await request.app[POOL].fetchrow(f"SELECT {_FIELDS} FROM webhooks WHERE id = $1 AND {where}",
                                           _id(request), *args)
    if row is None:
        raise http_error(404, f"no webhook subscription {request.match_info['id']}", field="id")
    return row


@describe("subscribe a URL to events; the answer holds the signing secret, once", body=WebhookIn, status=201)
@requires("read")
async def create(request: web.Request) -> web.Response:
    body = await read_body(request, WebhookIn)
    names = ev.names()
    for pattern in body.events:
        if not fnmatch.filter(names, pattern):
            raise http_error(404, f"events: no event's name matches {pattern!r} (docs/events.md)", field="events")
    principal = _principal(request)
    secret = secrets.token_urlsafe(32)
    async with request.app[POOL].acquire() as conn, conn.transaction():
        row = await conn.fetchrow(f"INSERT INTO webhooks (name, url, secret, events, api_key_id) "
                                  f"VALUES ($1, $2, $3, $4, $5) RETURNING {_FIELDS}",
                                  body.name, body.url, secret, body.events, principal.key_id)
        await webhooks.create_group(request.app[REDIS], row["id"])  # before the commit: no event is missed
    return _json({**dict(row), "secret": secret}, 201)


@describe("the webhook subscriptions (a key's own; all with configure)")
@requires("read")
async def list_all(request: web.Request) -> web.Response:
    where, args = _owned(request, 1)
    rows = await request.app[POOL].fetch(f"SELECT {_FIELDS} FROM webhooks WHERE {where} ORDER BY id", *args)
    return _json({"items": [dict(r) for r in rows]})


@describe("one subscription", path=ID)
@requires("read")
async def get_one(request: web.Request) -> web.Response:
    return _json(dict(await _one(request)))


@describe("delete a subscription", path=ID)
@requires("read")
async def delete(request: web.Request) -> web.Response:
    row = await _one(request)
    await request.app[POOL].execute("DELETE FROM webhooks WHERE id = $1", row["id"])
    await webhooks.drop_group(request.app[REDIS], row["id"])
    return _json({"deleted": row["id"]})


@describe("events the receiver never took", path=ID)
@requires("read")
async def dead_letters(request: web.Request) -> web.Response:
    row = await _one(request)
    rows = await request.app[POOL].fetch(
        "SELECT id, event_id, event, attempts, error, failed_at, redeliver FROM webhook_dead_letters "
        "WHERE webhook_id = $1 ORDER BY id LIMIT 1000", row["id"])
    return _json({"items": [{**dict(r), "event": json.loads(r["event"])} for r in rows]})


@describe("send the dead letters again", path=ID, body=NoBody)
@requires("read")
async def redeliver(request: web.Request) -> web.Response:
    await read_body(request, NoBody)
    row = await _one(request)
    status = await request.app[POOL].execute(
        "UPDATE webhook_dead_letters SET redeliver = true WHERE webhook_id = $1 AND NOT redeliver", row["id"])
    return _json({"marked": int(status.split()[-1])})


def add_routes(app: web.Application, pool: asyncpg.Pool, redis: aioredis.Redis) -> None:
    app[POOL] = pool
    app[REDIS] = redis
    r = app.router
    r.add_post("/api/webhooks", create)
    r.add_get("/api/webhooks", list_all)
    r.add_get("/api/webhooks/{id}", get_one)
    r.add_delete("/api/webhooks/{id}", delete)
    r.add_get("/api/webhooks/{id}/dead-letters", dead_letters)
    r.add_post("/api/webhooks/{id}/redeliver", redeliver)
