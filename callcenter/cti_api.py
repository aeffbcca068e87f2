"""CTI routes over HTTP: live calls, their sessions (bus/call_session.py) and call control
(bus/commands.py). Thin handlers over callcenter/sessions.py and callcenter/commands.py, which the
socket.io side shares. A refused command answers with the error envelope plus ``state`` (the
call's state that refused it): 409 not possible in this state, 404 the call is gone, 503 its node
does not answer, 504 its flow did not act in time."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import asyncpg
import redis.asyncio as aioredis
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, RootModel

from acd.models import WHOLE
from bus import commands as cmd
from callcenter import sessions
from callcenter.auth import requires
from callcenter.commands import CallControl
from callcenter.http_guard import PRINCIPAL, http_error, read_body
from callcenter.openapi import UUID, describe

REDIS: web.AppKey[aioredis.Redis] = web.AppKey("cti_redis", aioredis.Redis)
CONTROL: web.AppKey[CallControl] = web.AppKey("cti_control", CallControl)
POOL: web.AppKey[asyncpg.Pool] = web.AppKey("cti_pool", asyncpg.Pool)

# A refusal's HTTP status, by its error (bus.commands.Result.error).
STATUS = {"state": 409, "gone": 404, "unreachable": 503, "timeout": 504, "busy": 409, "invalid": 422}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class NoBody(_Strict):
    pass


class HangupIn(_Strict):
    leg: Literal["caller", "agent"] = "caller"


class RejectIn(_Strict):
    agent_id: Annotated[int, Field(ge=1), WHOLE] | None = None  # who declines; none: every agent offered


class AttachIn(_Strict):
    data: dict[str, str] = Field(min_length=1, max_length=50)


# A target's name by its kind: a queue's name, an agent's login, an extension, an outside number.
TARGET_PATTERN = {"queue": r"^[a-z][a-z0-9_.-]{0,63}$", "agent": r"^[a-z][a-z0-9_.-]{0,63}$",
                  "extension": r"^[0-9]{1,15}$", "number": r"^\+?[0-9]{3,20}$"}


class _ToQueue(_Strict):
    kind: Literal["queue"]
    target: str = Field(pattern=TARGET_PATTERN["queue"], description="the queue's name")


class _ToAgent(_Strict):
    kind: Literal["agent"]
    target: str = Field(pattern=TARGET_PATTERN["agent"], description="the agent's login")


class _ToExtension(_Strict):
    kind: Literal["extension"]
    target: str = Field(pattern=TARGET_PATTERN["extension"], description="a phone registered at the front door")


class _ToNumber(_Strict):
    kind: Literal["number"]
    target: str = Field(pattern=TARGET_PATTERN["number"], description="an outside number, through the trunk")


class TransferIn(RootModel[Annotated[_ToQueue | _ToAgent | _ToExtension | _ToNumber, Field(discriminator="kind")]]):
    """Where a blind transfer goes."""


class ConsultIn(RootModel[Annotated[_ToAgent | _ToExtension | _ToNumber, Field(discriminator="kind")]]):
    """Whom the agent consults (a queue cannot be consulted: transfer to it)."""


class LeaveIn(_Strict):
    leg: Literal["agent", "target"] = "agent"


class DtmfIn(_Strict):
    digits: str = Field(pattern=r"^[0-9*#A-D]{1,32}$")
    leg: Literal["target", "caller"] = "target"


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
    raise http_error(STATUS.get(result.error, 409), result.message, reason=result.error,
                     **({"state": result.state} if result.state else {}),
                     **({"field": result.field} if result.field else {}))


@dataclass(frozen=True)
class Action:
    """One call-control route: its body's model, the command it makes (interaction, body, the
    agent it acts for when sent through /api/agents/<login>/call), and what it does."""

    body: type[BaseModel]
    make: Callable[[str, Any, int | None], cmd.Command]
    summary: str = ""


ACTIONS: dict[str, Action] = {
    "hold": Action(NoBody, lambda i, b, a: cmd.Hold(interaction=i), "put the caller on hold (hold music)"),
    "resume": Action(NoBody, lambda i, b, a: cmd.Resume(interaction=i), "take the caller off hold"),
    "hangup": Action(HangupIn, lambda i, b, a: cmd.Hangup(interaction=i, leg=b.leg),
                     "hang up the call, or only the agent's leg"),
    "reject": Action(RejectIn, lambda i, b, a: cmd.RejectOffer(interaction=i, agent_id=a or b.agent_id),
                     "decline an offer: it goes to the next agent at once"),
    "data": Action(AttachIn, lambda i, b, a: cmd.AttachData(interaction=i, data=b.data),
                   "attach call data (key-values) to the call and its record"),
    "mute": Action(NoBody, lambda i, b, a: cmd.Mute(interaction=i), "the caller stops hearing the agent"),
    "unmute": Action(NoBody, lambda i, b, a: cmd.Unmute(interaction=i), "the caller hears the agent again"),
    "transfer": Action(TransferIn, lambda i, b, a: cmd.Transfer(interaction=i, kind=b.root.kind, target=b.root.target),
                       "blind transfer to a queue, an agent, an extension or a number"),
    "consult": Action(ConsultIn, lambda i, b, a: cmd.Consult(interaction=i, kind=b.root.kind, target=b.root.target),
                      "hold the caller and call a target (attended transfer, conference)"),
    "complete": Action(NoBody, lambda i, b, a: cmd.CompleteTransfer(interaction=i),
                       "leave the caller with the consulted target"),
    "cancel": Action(NoBody, lambda i, b, a: cmd.CancelConsult(interaction=i),
                     "hang up the consulted target, back to the caller"),
    "conference": Action(NoBody, lambda i, b, a: cmd.Conference(interaction=i),
                         "caller, agent and target all hear each other"),
    "leave": Action(LeaveIn, lambda i, b, a: cmd.LeaveConference(interaction=i, leg=b.leg),
                    "the agent (or the target) leaves the conference"),
    "dtmf": Action(DtmfIn, lambda i, b, a: cmd.SendDtmf(interaction=i, digits=b.digits, leg=b.leg),
                   "send keys to the outside party"),
    "record": Action(NoBody, lambda i, b, a: cmd.StartRecording(interaction=i), "start recording the call"),
    "stop_record": Action(NoBody, lambda i, b, a: cmd.StopRecording(interaction=i), "stop recording the call"),
}


class Done(BaseModel):
    ok: bool
    command: str


async def _body(request: web.Request, action: Action) -> Any:
    body = await read_body(request, action.body)
    if isinstance(body, AttachIn) and any(len(k) > 64 or len(v) > 1000 for k, v in body.data.items()):
        raise http_error(422, "call data: keys are at most 64 characters, values 1000", field="data")
    if isinstance(body, TransferIn | ConsultIn) and body.root.kind == "agent":
        # commands name agents by id: the login is the API's
        aid = await request.app[POOL].fetchval("SELECT id FROM agents WHERE login = $1", body.root.target)
        if aid is None:
            raise http_error(404, f"no agent {body.root.target!r}", field="target")
        body = type(body)(body.root.model_copy(update={"target": str(aid)}))
    return body


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
