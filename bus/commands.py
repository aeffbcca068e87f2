"""Third-party call control: the commands any node accepts for a live call, addressed by its
interaction id, and the answer each one gets.

A command reaches the node that owns the call (callcenter/commands.py routes it through Redis when
that is another node) and goes into the call's inbox; the flow that runs the call takes it from
there when it can act on it, applies it, and answers. Every command gets an answer within its
timeout: ``done``, or a refusal naming why (``state``: not allowed now; ``gone``: the call ended;
``busy``/``unreachable``: the target). An applied command is an event on the stream.

On the wire (between nodes) a command is JSON: ``name`` plus its fields, like an event.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar


class CommandError(ValueError):
    """Bytes or a request body that are not a command of this module."""


@dataclass(frozen=True, kw_only=True)
class Command:
    NAME: ClassVar[str] = ""
    interaction: str

    def encode(self) -> str:
        return json.dumps({"name": self.NAME, **{f.name: getattr(self, f.name) for f in fields(self)}})


@dataclass(frozen=True, kw_only=True)
class Hangup(Command):
    """End the call (``leg`` caller: the whole call) or only the agent's leg (the caller stays in
    the queue's flow)."""

    NAME = "hangup"
    leg: str = "caller"  # caller | agent


@dataclass(frozen=True, kw_only=True)
class Hold(Command):
    """Put the caller on hold: the caller hears the queue's hold music, the agent silence."""

    NAME = "hold"


@dataclass(frozen=True, kw_only=True)
class Resume(Command):
    """Take the caller off hold: caller and agent talk again."""

    NAME = "resume"


@dataclass(frozen=True, kw_only=True)
class RejectOffer(Command):
    """The offered agent declines: the call is offered again at once, without the ring timeout."""

    NAME = "reject"
    agent_id: int | None = None  # the agent who declines (ring-all: the others still ring); None: all


@dataclass(frozen=True, kw_only=True)
class AttachData(Command):
    """Attach key-values to the call (shown to the agent, stored on the record)."""

    NAME = "attach"
    data: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Mute(Command):
    """The caller (and a conference's target) stop hearing the agent; the agent still hears them."""

    NAME = "mute"


@dataclass(frozen=True, kw_only=True)
class Unmute(Command):
    NAME = "unmute"


TARGET_KINDS = ("queue", "agent", "extension", "number")


@dataclass(frozen=True, kw_only=True)
class Transfer(Command):
    """Blind transfer: the agent leaves, the caller goes to ``target`` (a queue's name, an agent's
    id, an extension, an outside number). A queue keeps the interaction, its customer, its call data
    and the caller's priority; a target that does not answer sends the caller back to their queue."""

    NAME = "transfer"
    kind: str  # queue | agent | extension | number
    target: str


@dataclass(frozen=True, kw_only=True)
class Consult(Command):
    """Attended transfer, first step: the caller is held, the agent calls ``target`` (an agent, an
    extension or a number) and talks to it. Then ``complete``, ``conference`` or ``cancel``."""

    NAME = "consult"
    kind: str  # agent | extension | number
    target: str


@dataclass(frozen=True, kw_only=True)
class CompleteTransfer(Command):
    """The agent leaves; the caller talks to the consulted target (from a conference too)."""

    NAME = "complete"


@dataclass(frozen=True, kw_only=True)
class CancelConsult(Command):
    """Hang up the consulted target; the agent is back with the caller."""

    NAME = "cancel"


@dataclass(frozen=True, kw_only=True)
class Conference(Command):
    """Caller, agent and the consulted target all hear each other."""

    NAME = "conference"


@dataclass(frozen=True, kw_only=True)
class LeaveConference(Command):
    """``leg`` agent: the agent leaves (the caller stays with the target, an attended transfer);
    ``target``: the target is hung up, the agent and caller talk on."""

    NAME = "leave"
    leg: str = "agent"  # agent | target


@dataclass(frozen=True, kw_only=True)
class SendDtmf(Command):
    """Send keys to an outside party: the consulted target, or the caller's far end (``leg``)."""

    NAME = "dtmf"
    digits: str
    leg: str = "target"  # target | caller


@dataclass(frozen=True, kw_only=True)
class StartRecording(Command):
    """Record the call: the caller and every leg bridged with them, to one WAV file."""

    NAME = "record"


@dataclass(frozen=True, kw_only=True)
class StopRecording(Command):
    NAME = "stop_record"


COMMANDS: dict[str, type[Command]] = {c.NAME: c for c in (
    Hangup, Hold, Resume, RejectOffer, AttachData, Mute, Unmute, Transfer, Consult, CompleteTransfer, CancelConsult,
    Conference, LeaveConference, SendDtmf, StartRecording, StopRecording)}


def decode(raw: str | bytes | dict[str, Any]) -> Command:
    try:
        body = dict(raw) if isinstance(raw, dict) else json.loads(raw)
        cls = COMMANDS[body.pop("name")]
        return cls(**body)
    except (ValueError, KeyError, TypeError) as exc:
        raise CommandError(f"not a command: {str(raw)[:200]}") from exc


@dataclass(frozen=True)
class Result:
    """The answer to one command: ``ok``, or ``error`` (state | gone | busy | unreachable | invalid
    | timeout) with a message that says why; ``field``: the command's field at fault."""

    ok: bool
    error: str = ""
    message: str = ""
    state: str = ""  # the call's state when it was refused
    field: str = ""

    def encode(self) -> str:
        return json.dumps({"ok": self.ok, "error": self.error, "message": self.message, "state": self.state,
                           "field": self.field})

    @classmethod
    def decode(cls, raw: str | bytes) -> Result:
        return cls(**json.loads(raw))


DONE = Result(True)


def refused(error: str, message: str, state: str = "", field: str = "") -> Result:
    return Result(False, error, message, state, field)


class Inbox:
    """One call's commands, waiting for the flow that runs it. ``submit`` waits for the answer."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[tuple[Command, asyncio.Future[Result]]] = asyncio.Queue()

    async def submit(self, command: Command, timeout: float) -> Result:
        fut: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        await self._queue.put((command, fut))
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            fut.cancel()  # the flow will not answer it any more
            return refused("timeout", f"the call's flow did not act on {command.NAME} in {timeout:g} s")

    async def next(self) -> tuple[Command, asyncio.Future[Result]]:
        """The next command still awaited by its sender."""
        while True:
            command, fut = await self._queue.get()
            if not fut.done():
                return command, fut

    def refuse_all(self, result: Result) -> None:
        """Answer every waiting command (the call ended, or its flow moved on)."""
        while not self._queue.empty():
            _command, fut = self._queue.get_nowait()
            if not fut.done():
                fut.set_result(result)
