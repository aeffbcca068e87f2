"""CTI routes over HTTP: live calls, their sessions (bus/call_session.py) and call control
(bus/commands.py). Thin handlers over callcenter/sessions.py and callcenter/commands.py, which the
socket.io side shares. A refused command answers with the error envelope plus ``state`` (the
call's state that refused it): 409 not possible in this state, 404 the call is gone, 503 its node
does not answer, 504 its flow did not act in time."""

from __future__ import annotations

import json
import uuid
from typing import Any, Literal

import redis.asyncio as aioredis
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from bus import commands as cmd
from callcenter import sessions
from callcenter.auth import requires
from callcenter.commands import CallControl
from callcenter.http_guard import PRINCIPAL, http_error, read_body

REDIS: web.AppKey[aioredis.Redis] = web.AppKey("cti_redis", aioredis.Redis)
CONTROL: web.AppKey[CallControl] = web.AppKey("cti_control", CallControl)

# A refusal's HTTP status, by its error (bus.commands.Result.error).
STATUS = {"state": 409, "gone": 404, "unreachable": 503, "timeout": 504, "busy": 409, "invalid": 422}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class NoBody(_Strict):
    pass


class HangupIn(_Strict):
    leg: Literal["caller", "agent"] = "caller"


class RejectIn(_Strict):
    agent_id: int | None = Field(None, ge=1)  # the agent who declines; none: every agent offered


class AttachIn(_Strict):
    data: dict[str, str] = Field(min_length=1, max_length=50)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda o: json.dumps(o, default=str))


def _interaction(request: web.Request) -> str:
    iid = request.match_info["id"]
    try:
        uuid.UUID(iid)
    except ValueError:
        raise http_error(400, "id: not an interaction id (a UUID)", field="id") from None
    return iid


@requires("read")
async def list_calls(request: web.Request) -> web.Response:
    """Every live call's session, from whichever node owns it, oldest first."""
    return _json({"items": await sessions.live(request.app[REDIS])})


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
    raise http_error(STATUS.get(result.error, 409), result.message, reason=result.error,
                     **({"state": result.state} if result.state else {}))


@requires("control")
async def hold(request: web.Request) -> web.Response:
    iid = _interaction(request)
    await read_body(request, NoBody)
    return await _command(request, cmd.Hold(interaction=iid))


@requires("control")
async def resume(request: web.Request) -> web.Response:
    iid = _interaction(request)
    await read_body(request, NoBody)
    return await _command(request, cmd.Resume(interaction=iid))


@requires("control")
async def hangup(request: web.Request) -> web.Response:
    iid = _interaction(request)
    body = await read_body(request, HangupIn)
    return await _command(request, cmd.Hangup(interaction=iid, leg=body.leg))


@requires("control")
async def reject(request: web.Request) -> web.Response:
    iid = _interaction(request)
    body = await read_body(request, RejectIn)
    return await _command(request, cmd.RejectOffer(interaction=iid, agent_id=body.agent_id))


@requires("control")
async def attach(request: web.Request) -> web.Response:
    iid = _interaction(request)
    body = await read_body(request, AttachIn)
    if any(len(k) > 64 or len(v) > 1000 for k, v in body.data.items()):
        raise http_error(422, "call data: keys are at most 64 characters, values 1000", field="data")
    return await _command(request, cmd.AttachData(interaction=iid, data=body.data))


def add_routes(app: web.Application, redis: aioredis.Redis, control: CallControl | None) -> None:
    app[REDIS] = redis
    if control is not None:
        app[CONTROL] = control
    r = app.router
    r.add_get("/api/calls", list_calls)
    r.add_get("/api/calls/{id}", get_call)
    r.add_post("/api/calls/{id}/hold", hold)
    r.add_post("/api/calls/{id}/resume", resume)
    r.add_post("/api/calls/{id}/hangup", hangup)
    r.add_post("/api/calls/{id}/reject", reject)
    r.add_post("/api/calls/{id}/data", attach)
