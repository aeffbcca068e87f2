"""The call session: what one call is doing, with whom, since when, as an explicit table of named
transitions (in the style of acd/agent_state.py).

A session is driven by the call's own events (bus/events.py): the node that runs the call's flow
applies each event it emits to the session (callcenter/sessions.py), so the session can never
disagree with the record, and mirrors it in Redis for every other node to read. The table is pure:
``apply`` returns the next session or raises InvalidTransition.

Every state ends by a timeout or is reconciled:

    state         left by                                        timeout / reconciliation
    arriving      answer, hangup                                 the worker's answer timeout (no ACK: BYE)
    ivr           enqueue, hangup                                the flow's prompt and input timeouts
    queued        offer, hangup (abandon), leave                 the queue's max wait, its exits
    offering      connect, no_answer, hangup                     the queue's ring timeout, the agent reconciler
    connected     hold, consult, transfer_blind, complete, hangup  the agent reconciler checks the call is alive
    held          resume, consult, transfer_blind, complete …    as connected (the agent's call goes on)
    consulting    conference, cancel, consult_end, transfer_attended, complete, hangup
                                                                 the target's ring timeout; its leg's end
    conferenced   conference_end, transfer_attended, hangup     as connected; either leg's end
    transferring  enqueue, offer, connect_party, hangup          the target's ring timeout, then back to the queue
    ended         (final)                                        the mirror expires (SESSION_TTL_ENDED)

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
    CONSULTING = "consulting"  # the caller on hold while the agent calls (or talks to) a target
    CONFERENCED = "conferenced"  # caller, agent and target hear each other
    TRANSFERRING = "transferring"  # blind-transferred: on its way to the target
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
    party: str = ""  # the outside party the caller talks to (no agent): the extension or number
    consult: dict[str, Any] | None = None  # while consulting or conferenced: kind, target, to_agent_id
    muted: bool = False  # the agent's leg is muted
    recording: str = ""  # the file the call is being recorded to ("" when not recording)
    queued_at: float = 0.0
    connected_at: float = 0.0
    holds: int = 0  # times the caller was put on hold (a consultation holds them too)
    held_since: float = 0.0  # when the current hold began (0: not on hold)
    held_total: float = 0.0  # seconds on hold, ended holds
    held_longest: float = 0.0
    conference_seconds: float = 0.0  # ended conferences
    transfers: tuple[dict[str, Any], ...] = ()  # mode, kind, target, from_agent, to_agent, at
    data: dict[str, str] = field(default_factory=dict)  # call data attached (AttachData)
    version: int = 0  # bumped by every change

    def snapshot(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in _FIELDS}


_FIELDS = tuple(f for f in CallSession.__dataclass_fields__)

S = CallState
ANY = frozenset(CallState) - {S.ENDED}
TALKING = frozenset({S.CONNECTED, S.HELD})
# transition -> (the states it may leave, the state it enters)
TABLE: dict[str, tuple[frozenset[CallState], CallState]] = {
    "answer": (frozenset({S.ARRIVING}), S.IVR),
    # a caller transferred to a queue, or back to theirs when a transfer's target did not answer
    "enqueue": (frozenset({S.ARRIVING, S.IVR, S.QUEUED, S.TRANSFERRING}), S.QUEUED),
    "offer": (frozenset({S.QUEUED, S.OFFERING, S.TRANSFERRING}), S.OFFERING),
    "no_answer": (frozenset({S.OFFERING}), S.QUEUED),
    "connect": (frozenset({S.QUEUED, S.OFFERING}), S.CONNECTED),
    "leave": (frozenset({S.QUEUED, S.OFFERING}), S.IVR),  # an exit: voicemail, callback …
    "complete": (TALKING | {S.CONSULTING}, S.IVR),  # the agent left
    "hold": (frozenset({S.CONNECTED}), S.HELD),
    "resume": (frozenset({S.HELD}), S.CONNECTED),
    "consult": (TALKING, S.CONSULTING),
    "consult_end": (frozenset({S.CONSULTING}), S.HELD),  # the target failed or hung up: still on hold
    "cancel": (frozenset({S.CONSULTING}), S.CONNECTED),
    "conference": (frozenset({S.CONSULTING}), S.CONFERENCED),
    "conference_end": (frozenset({S.CONFERENCED}), S.CONNECTED),
    "transfer_attended": (frozenset({S.CONSULTING, S.CONFERENCED}), S.CONNECTED),
    "transfer_blind": (TALKING, S.TRANSFERRING),
    "connect_party": (frozenset({S.TRANSFERRING}), S.CONNECTED),
    "hangup": (ANY, S.ENDED),
}
ON_HOLD = frozenset({S.HELD, S.CONSULTING})  # the caller hears the hold music


def transition_for(e: ev.CallEvent) -> str | None:
    """The named transition a call event makes, or None for events that do not change the state.
    Events of an originated leg (``call`` set) concern the leg, not the session."""
    if e.call:
        return None
    if isinstance(e, ev.CommandApplied):
        return e.command if e.command in ("hold", "resume") else None
    if isinstance(e, ev.ConsultEnd):
        return "cancel" if e.result == "cancelled" else "consult_end"
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
    ev.Consult: "consult",
    ev.Conference: "conference",
    ev.ConferenceEnd: "conference_end",
    ev.AttendedTransfer: "transfer_attended",
    ev.BlindTransfer: "transfer_blind",
    ev.PartyConnect: "connect_party",
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
        changes.update(queued_at=e.at, agent_id=None, party="")
    elif transition == "offer" and isinstance(e, ev.Offer) and len(e.agents) == 1:
        changes["agent_id"] = e.agents[0]
    elif transition in ("no_answer", "leave"):
        changes["agent_id"] = None
    elif transition == "connect":
        changes.update(connected_at=e.at, party="", muted=False)
    elif isinstance(e, ev.Consult):
        changes["consult"] = {"kind": e.kind, "target": e.target, "to_agent_id": e.to_agent_id}
    elif isinstance(e, ev.BlindTransfer | ev.AttendedTransfer):
        mode = "blind" if isinstance(e, ev.BlindTransfer) else "attended"
        changes["transfers"] = (*s.transfers, {"mode": mode, "kind": e.kind, "target": e.target,
                                               "from_agent": e.agent_id, "to_agent": e.to_agent_id, "at": e.at})
        changes.update(agent_id=e.to_agent_id, muted=False, party="" if e.to_agent_id else e.target)
        if mode == "attended":
            changes["connected_at"] = e.at
    elif isinstance(e, ev.PartyConnect):
        changes.update(agent_id=None, party=e.target, connected_at=e.at)
    if to not in (S.CONSULTING, S.CONFERENCED):
        changes["consult"] = None
    if to in ON_HOLD and s.state not in ON_HOLD:
        changes.update(holds=s.holds + 1, held_since=e.at)
    elif s.state in ON_HOLD and to not in ON_HOLD:  # a hold ends: resumed, conferenced, hung up …
        held = e.at - s.held_since
        changes.update(held_since=0.0, held_total=round(s.held_total + held, 3),
                       held_longest=round(max(s.held_longest, held), 3))
    if s.state is S.CONFERENCED and to is not S.CONFERENCED:
        changes["conference_seconds"] = round(s.conference_seconds + e.at - s.since, 3)
    return replace(s, state=to, since=e.at if to is not s.state else s.since, version=s.version + 1, **changes)


def identified(s: CallSession, e: ev.CustomerIdentified) -> CallSession:
    return replace(s, customer_id=e.customer_id, version=s.version + 1)


def attached(s: CallSession, data: dict[str, str]) -> CallSession:
    return replace(s, data={**s.data, **data}, version=s.version + 1)


def muted(s: CallSession, on: bool) -> CallSession:
    return replace(s, muted=on, version=s.version + 1)


def recording(s: CallSession, e: ev.Recording) -> CallSession:
    return replace(s, recording=e.path if e.action == "start" else "", version=s.version + 1)


# The commands a flow acts on, by the states in which it listens for them (others are the owning
# node's to apply in any state: hangup of the caller, attach, recording).
IN_CALL = TALKING | {S.CONSULTING, S.CONFERENCED}
FLOW_COMMANDS: dict[str, frozenset[CallState]] = {
    "hold": frozenset({S.CONNECTED}),
    "resume": frozenset({S.HELD}),
    "hangup_agent": IN_CALL,
    "reject": frozenset({S.OFFERING}),
    "mute": IN_CALL,
    "unmute": IN_CALL,
    "transfer": TALKING,
    "consult": TALKING,
    "complete": frozenset({S.CONSULTING, S.CONFERENCED}),
    "cancel": frozenset({S.CONSULTING}),
    "conference": frozenset({S.CONSULTING}),
    "leave": frozenset({S.CONFERENCED}),
    "dtmf": IN_CALL,
}
# States with the caller's media up, in which the node records the call.
RECORDABLE = ANY - {S.ARRIVING}
