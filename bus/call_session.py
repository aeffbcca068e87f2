"""The call session: what one call is doing, with whom, since when, as an explicit table of named
transitions (in the style of acd/agent_state.py).

A session is driven by the call's own events (bus/events.py): the node that runs the call's flow
applies each event it emits to the session (callcenter/sessions.py), so the session can never
disagree with the record, and mirrors it in Redis for every other node to read. The table is pure:
``apply`` returns the next session or raises InvalidTransition.

Every state ends by a timeout or is reconciled:

    state        left by                                  timeout / reconciliation
    arriving     answer, hangup                           the worker's answer timeout (no ACK: BYE)
    ivr          enqueue, hangup                          the flow's prompt and input timeouts
    queued       offer, hangup (abandon), leave           the queue's max wait, its exits
    offering     connect, no_answer, hangup               the queue's ring timeout, the agent reconciler
    connected    hangup, complete, hold                   the agent reconciler checks the call is alive
    held         resume, hangup, complete                 as connected (the agent's call goes on)
    ended        (final)                                  the mirror expires (SESSION_TTL_ENDED)

and in any state: the owning node dies → another node closes the interaction (callcenter/orphans.py),
whose HANGUP ends the session and removes its mirror; a session whose media call is gone from its
node is ended by that node's sweep.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from bus import events as ev


class CallState(StrEnum):
    ARRIVING = "arriving"  # the control plane took the call; not answered yet
    IVR = "ivr"  # answered: the dial-plan flow plays and collects
    QUEUED = "queued"  # waiting in a queue for an agent
    OFFERING = "offering"  # an agent's phone rings for it
    CONNECTED = "connected"  # talking to an agent
    HELD = "held"  # connected, the caller on hold (hearing the queue's hold music)
    ENDED = "ended"


class InvalidTransition(Exception):
    def __init__(self, transition: str, session: CallSession):
        super().__init__(f"{transition} not allowed for call {session.interaction} in state {session.state}")
        self.transition = transition


@dataclass(frozen=True)
class CallSession:
    interaction: str
    state: CallState = CallState.ARRIVING
    since: float = 0.0  # when the current state began
    started_at: float = 0.0
    node: str = ""  # the control-plane node that runs the flow (owns the session)
    media_call: str = ""  # the caller's media call id
    worker: str = ""
    caller_number: str = ""
    dialed_number: str = ""
    route: str | None = None
    customer_id: int | None = None
    queue: str = ""  # the queue it waits in or was connected from
    agent_id: int | None = None  # the agent offered or connected
    queued_at: float = 0.0
    connected_at: float = 0.0
    holds: int = 0  # times the caller was put on hold
    held_total: float = 0.0  # seconds on hold, ended holds
    held_longest: float = 0.0
    data: dict[str, str] = field(default_factory=dict)  # call data attached (AttachData)
    version: int = 0  # bumped by every change

    def snapshot(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in _FIELDS}


_FIELDS = tuple(f for f in CallSession.__dataclass_fields__)

ANY = frozenset(CallState) - {CallState.ENDED}
# transition -> (the states it may leave, the state it enters)
TABLE: dict[str, tuple[frozenset[CallState], CallState]] = {
    "answer": (frozenset({CallState.ARRIVING}), CallState.IVR),
    "enqueue": (frozenset({CallState.ARRIVING, CallState.IVR}), CallState.QUEUED),
    "offer": (frozenset({CallState.QUEUED, CallState.OFFERING}), CallState.OFFERING),
    "no_answer": (frozenset({CallState.OFFERING}), CallState.QUEUED),
    "connect": (frozenset({CallState.QUEUED, CallState.OFFERING}), CallState.CONNECTED),
    "leave": (frozenset({CallState.QUEUED, CallState.OFFERING}), CallState.IVR),  # an exit: voicemail, callback …
    "complete": (frozenset({CallState.CONNECTED, CallState.HELD}), CallState.IVR),  # the agent left
    "hold": (frozenset({CallState.CONNECTED}), CallState.HELD),
    "resume": (frozenset({CallState.HELD}), CallState.CONNECTED),
    "hangup": (ANY, CallState.ENDED),
}


def transition_for(e: ev.CallEvent) -> str | None:
    """The named transition a call event makes, or None for events that do not change the state.
    Events of an originated leg (``call`` set) concern the leg, not the session."""
    if e.call:
        return None
    if isinstance(e, ev.CommandApplied):
        return e.command if e.command in ("hold", "resume") else None
    return _BY_EVENT.get(type(e))


_BY_EVENT: dict[type[ev.Event], str] = {
    ev.CallAnswered: "answer",
    ev.EnterQueue: "enqueue",
    ev.Offer: "offer",
    ev.RingNoAnswer: "no_answer",
    ev.Connect: "connect",
    ev.ExitWithKey: "leave",
    ev.ExitWithTimeout: "leave",
    ev.CallbackRequested: "leave",
    ev.CompleteAgent: "complete",
    ev.Hangup: "hangup",  # COMPLETECALLER and ABANDON follow the caller's HANGUP
}


def opened(e: ev.CallArrived) -> CallSession:
    return CallSession(interaction=e.interaction, since=e.at, started_at=e.at, node=e.node, media_call=e.media_call,
                       worker=e.worker, caller_number=e.caller_number, dialed_number=e.dialed_number, route=e.route)


def apply(s: CallSession, transition: str, e: ev.CallEvent) -> CallSession:
    """The session after ``transition``, made by event ``e``."""
    allowed, to = TABLE[transition]
    if s.state not in allowed:
        raise InvalidTransition(transition, s)
    changes: dict[str, Any] = {}
    if isinstance(e, ev.QueueEvent):
        changes["queue"] = e.queue
        if e.agent_id is not None:
            changes["agent_id"] = e.agent_id
    if transition == "enqueue":
        changes.update(queued_at=e.at, agent_id=None)
    elif transition == "offer" and isinstance(e, ev.Offer) and len(e.agents) == 1:
        changes["agent_id"] = e.agents[0]
    elif transition in ("no_answer", "leave"):
        changes["agent_id"] = None
    elif transition == "connect":
        changes["connected_at"] = e.at
    elif transition == "hold":
        changes["holds"] = s.holds + 1
    elif s.state is CallState.HELD and transition != "hold":  # a hold ends: resumed, hung up, completed
        held = e.at - s.since
        changes.update(held_total=round(s.held_total + held, 3), held_longest=round(max(s.held_longest, held), 3))
    return replace(s, state=to, since=e.at if to is not s.state else s.since, version=s.version + 1, **changes)


def identified(s: CallSession, e: ev.CustomerIdentified) -> CallSession:
    return replace(s, customer_id=e.customer_id, version=s.version + 1)


def attached(s: CallSession, data: dict[str, str]) -> CallSession:
    return replace(s, data={**s.data, **data}, version=s.version + 1)


# The commands a flow acts on, by the states in which it listens for them (others are the owning
# node's to apply in any state: hangup of the caller, attach).
FLOW_COMMANDS: dict[str, frozenset[CallState]] = {
    "hold": frozenset({CallState.CONNECTED}),
    "resume": frozenset({CallState.HELD}),
    "hangup_agent": frozenset({CallState.CONNECTED, CallState.HELD}),
    "reject": frozenset({CallState.OFFERING}),
}

