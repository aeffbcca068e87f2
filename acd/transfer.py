"""Where a transfer or a consultation goes: the target named by a command (bus/commands.py) resolved
to a phone to ring, and what becomes of a target agent. An agent target is reserved for the call
before their phone rings, exactly as an offer reserves them, so routing cannot give them another
call meanwhile; one who is not free is refused at once (``busy``)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from acd.agent_state import InvalidTransition, Params
from acd.agent_store import Conflict
from acd.services import QueueServices
from bus import commands as cmd


class Refused(Exception):
    """The target cannot be called; ``result`` says why, for the command's answer."""

    def __init__(self, result: cmd.Result):
        super().__init__(result.message)
        self.result = result


@dataclass(frozen=True)
class Target:
    kind: str  # queue | agent | extension | number
    name: str  # as the command named it: a queue's name, an agent's id, an extension, a number
    uri: str = ""  # where to ring it ("" for a queue)
    agent_id: int | None = None


async def resolve(svc: QueueServices, kind: str, name: str, *, call_id: str, ring_timeout: float,
                  current_agent: int | None, queues: bool = True) -> Target:
    """The target, an agent reserved for ``call_id``; Refused if it cannot be called now."""
    if kind == "queue" and queues:
        if await svc.directory.settings(name) is None:
            raise Refused(cmd.refused("invalid", f"there is no queue {name!r}", field="target"))
        return Target(kind, name)
    if kind == "agent":
        try:
            agent_id = int(name)
        except ValueError:
            raise Refused(cmd.refused("invalid", "target: an agent's id", field="target")) from None
        if agent_id == current_agent:
            raise Refused(cmd.refused("invalid", f"agent {agent_id} is already on this call", field="target"))
        uri = await svc.device_uri(agent_id)
        if uri is None:
            raise Refused(cmd.refused("unreachable", f"agent {agent_id} has no phone to ring", field="target"))
        if await svc.agents.reserve(agent_id, call_id, ring_timeout) is None:
            raise Refused(cmd.refused("busy", f"agent {agent_id} is not available", field="target"))
        return Target(kind, name, uri, agent_id)
    if kind in ("extension", "number"):
        uri = svc.dial_uri(kind, name)
        if uri is None:
            raise Refused(cmd.refused("unreachable", f"no route to {kind} {name!r}", field="target"))
        return Target(kind, name, uri)
    allowed = "agent, extension or number" if not queues else "queue, agent, extension or number"
    raise Refused(cmd.refused("invalid", f"kind: {allowed}", field="kind"))


async def agent_step(svc: QueueServices, agent_id: int | None, event: str, call_id: str,
                     wrap_up: float = 0.0) -> None:
    """Move a target agent on (connect, release, ring_no_answer, end_call); an agent whose state has
    moved on meanwhile (the reconciler, a logout) is left as they are."""
    if agent_id is None:
        return
    with contextlib.suppress(InvalidTransition, Conflict):
        await svc.agents.transition(agent_id, event, Params(wrap_up=wrap_up), expect_call=call_id)
