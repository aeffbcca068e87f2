"""CTI routes over HTTP: live calls, their sessions (bus/call_session.py) and call control
(bus/commands.py). Thin handlers over callcenter/cti_service.py (the commands' bodies), sessions.py
and commands.py, which the socket.io side shares. A refused command answers with the error envelope plus ``state`` (the
call's state that refused it): 409 not possible in this state, 404 the call is gone, 503 its node
does not answer, 504 its flow did not act in time."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from aiohttp import web

from bus import commands as cmd
from callcenter import cti_service, sessions
from callcenter.auth import requires
from callcenter.commands import CallControl
from callcenter.cti_service import ACTIONS, Action, Done
from callcenter.http_guard import PRINCIPAL, http_error, read_body
from callcenter.openapi import UUID, describe

REDIS: web.AppKey[aioredis.Redis] = web.AppKey("cti_redis", aioredis.Redis)
CONTROL: web.AppKey[CallControl] = web.AppKey("cti_control", CallControl)
POOL: web.AppKey[asyncpg.Pool] = web.AppKey("cti_pool", asyncpg.Pool)

def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda o: json.dumps(o, default=str))


def _interaction(request: web.Request) -> str:
    iid = request.match_info["id"]
    try:
        uuid.UUID(iid)
    except ValueError:
        raise http_error(400, "id: not an interaction id (a UUID)", field="id") from None
    return iid


@describe("every live call's session, oldest first")
@requires("read")
async def list_calls(request: web.Request) -> web.Response:
    """Every live call's session, from whichever node owns it, oldest first."""
    return _json({"items": await sessions.live(request.app[REDIS])})


@describe("one call's session (live, or ended in the last 5 minutes)", path={"id": UUID})
@requires("read")
async def get_call(request: web.Request) -> web.Response:
    iid = _interaction(request)
    session = await sessions.read(request.app[REDIS], iid)
    if session is None:
        raise http_error(404, f"no live or recently ended call {iid}", field="id")
    return _json(session)


async def _command(request: web.Request, command: cmd.Command) -> web.Response:
    if CONTROL not in request.app:
        raise http_error(503, "call control runs only in the platform's nodes")
    principal = request.get(PRINCIPAL)
    result = await request.app[CONTROL].submit(command, principal.name if principal else "")
    if result.ok:
        return _json({"ok": True, "command": command.NAME})
    raise http_error(cti_service.STATUS.get(result.error, 409), result.message, reason=result.error,
                     **({"state": result.state} if result.state else {}),
                     **({"field": result.field} if result.field else {}))


async def _body(request: web.Request, action: Action) -> Any:
    try:
        return await cti_service.resolved(request.app[POOL], await read_body(request, action.body))
    except cti_service.Refused as exc:
        raise http_error(exc.status, exc.message, field=exc.field) from None


def _call_action(name: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    action = ACTIONS[name]

    @describe(action.summary, body=action.body, returns=Done, path={"id": UUID})
    @requires("control")
    async def handler(request: web.Request) -> web.Response:
        iid = _interaction(request)
        return await _command(request, action.make(iid, await _body(request, action), None))

    handler.__name__ = f"call_{name}"
    return handler


async def _agent_call(request: web.Request) -> tuple[int, dict[str, Any]]:
    """The agent named in the path and the session of the call they are offered or on."""
    login = request.match_info["login"]
    principal = request.get(PRINCIPAL)
    if principal is not None and principal.agent is not None and principal.agent != login:
        raise http_error(403, "an agent acts on their own calls only", field="login")
    aid = await request.app[POOL].fetchval("SELECT id FROM agents WHERE login = $1", login)
    if aid is None:
        raise http_error(404, f"no agent {login!r}", field="login")
    for session in await sessions.live(request.app[REDIS]):
        if session.get("agent_id") == aid and session["state"] != "ended":
            return aid, session
    raise http_error(404, f"agent {login!r} has no call", field="login", reason="gone")


@describe("the session of the call the agent is offered or on")
@requires("read")
async def get_agent_call(request: web.Request) -> web.Response:
    return _json((await _agent_call(request))[1])


def _agent_action(name: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    action = ACTIONS[name]

    @describe(f"the agent's call: {action.summary}", body=action.body, returns=Done)
    @requires("control")
    async def handler(request: web.Request) -> web.Response:
        aid, session = await _agent_call(request)
        body = await _body(request, action)
        return await _command(request, action.make(session["interaction"], body, aid))

    handler.__name__ = f"agent_{name}"
    return handler


def add_routes(app: web.Application, redis: aioredis.Redis, control: CallControl | None, pool: asyncpg.Pool) -> None:
    app[REDIS] = redis
    app[POOL] = pool
    if control is not None:
        app[CONTROL] = control
    r = app.router
    r.add_get("/api/calls", list_calls)
    r.add_get("/api/calls/{id}", get_call)
    r.add_get("/api/agents/{login}/call", get_agent_call)
    for name in ACTIONS:
        r.add_post(f"/api/calls/{{id}}/{name}", _call_action(name))
        r.add_post(f"/api/agents/{{login}}/call/{name}", _agent_action(name))
