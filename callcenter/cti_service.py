"""The CTI's call-control service, shared by REST (cti_api.py) and socket.io (cti_socket.py): for
each command, the pydantic model of its body and the typed command it makes (bus/commands.py), and
what a body needs beyond its schema (an agent named by login becomes the agent's id)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import asyncpg
from pydantic import BaseModel, ConfigDict, Field, RootModel

from acd.models import WHOLE
from bus import commands as cmd


class Refused(Exception):
    """A body that passed its schema but names what does not exist."""

    def __init__(self, status: int, message: str, field: str):
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


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
    data: dict[Annotated[str, Field(min_length=1, max_length=64)], Annotated[str, Field(max_length=1000)]] = Field(
        min_length=1, max_length=50)


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


async def resolved(pool: asyncpg.Pool, body: Any) -> Any:
    """The body as the command needs it: commands name agents by id, the API by login."""
    if isinstance(body, TransferIn | ConsultIn) and body.root.kind == "agent":
        aid = await pool.fetchval("SELECT id FROM agents WHERE login = $1", body.root.target)
        if aid is None:
            raise Refused(404, f"no agent {body.root.target!r}", "target")
        return type(body)(body.root.model_copy(update={"target": str(aid)}))
    return body
