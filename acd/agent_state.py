"""Agent state: the status an agent chooses, apart from the activity the system drives, as an explicit
table of named transitions. Every system activity has a deadline (a timeout) or a reconciliation
path, so no agent can stay "reserved" or "on call" forever.

    status (agent's choice)   logged_out | available | not_ready(reason)
    activity (system's)       idle | reserved | on_call | wrap_up

The table is pure: ``apply`` returns the next state or raises InvalidTransition; storage and
atomicity live in acd/agent_store.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum


class Status(StrEnum):
    LOGGED_OUT = "logged_out"
    AVAILABLE = "available"
    NOT_READY = "not_ready"


class Activity(StrEnum):
    IDLE = "idle"
    RESERVED = "reserved"  # a call is offered: the agent's phone rings
    ON_CALL = "on_call"
    WRAP_UP = "wrap_up"


class InvalidTransition(Exception):
    def __init__(self, event: str, state: "AgentState", why: str):
        super().__init__(f"{event} not allowed for agent {state.agent_id} "
                         f"({state.status}/{state.activity}): {why}")
        self.event = event
        self.why = why


# Reason given to an agent set not ready by the system after an unanswered offer.
NO_ANSWER = "no_answer"
# How long a reconciliation may take before an on-call agent is checked against the live call.
ON_CALL_CHECK = 30.0


@dataclass(frozen=True)
class AgentState:
    agent_id: int
    status: Status = Status.LOGGED_OUT
    reason: str = ""  # not-ready reason code
    activity: Activity = Activity.IDLE
    call_id: str = ""  # the call reserved for / connected to the agent
    deadline: float = 0.0  # when the current activity times out (0: none, only idle)
    wrap_extended: float = 0.0  # seconds of wrap-up extension used
    since: float = 0.0  # when the activity began
    idle_since: float = 0.0  # when the agent last became free for calls (longest-idle order)
    calls: int = 0  # calls handled this shift (fewest-calls order)
    talk_time: float = 0.0  # seconds talked this shift (least-talk-time order)
    version: int = 0  # bumped by every transition (compare-and-set in storage)

    @property
    def routable(self) -> bool:
        return self.status is Status.AVAILABLE and self.activity is Activity.IDLE


@dataclass(frozen=True)
class Params:
    """Timers a transition needs (per queue for ring and wrap-up)."""

    ring_timeout: float = 15.0
    wrap_up: float = 10.0
    wrap_extend_max: float = 60.0
    extend_by: float = 30.0
    reason: str = ""
    call_id: str = ""


def _login(s: AgentState, now: float, p: Params) -> AgentState:
    # A shift starts: the per-shift counters the strategies compare start again from zero.
    return replace(s, status=Status.NOT_READY if p.reason else Status.AVAILABLE, reason=p.reason,
                   idle_since=now, calls=0, talk_time=0.0)


def _logout(s: AgentState, now: float, p: Params) -> AgentState:
    return replace(s, status=Status.LOGGED_OUT, reason="")


def _set_available(s: AgentState, now: float, p: Params) -> AgentState:
    if s.status is Status.AVAILABLE:
        return replace(s, reason="")
    # Back from a pause: idle time counts from now, not from before the break.
    return replace(s, status=Status.AVAILABLE, reason="", idle_since=now if s.activity is Activity.IDLE
                   else s.idle_since)


def _set_not_ready(s: AgentState, now: float, p: Params) -> AgentState:
    if not p.reason:
        raise InvalidTransition("not_ready", s, "a reason code is required")
    return replace(s, status=Status.NOT_READY, reason=p.reason)


def _reserve(s: AgentState, now: float, p: Params) -> AgentState:
    if s.status is not Status.AVAILABLE:
        raise InvalidTransition("reserve", s, "agent is not available")
    if not p.call_id:
        raise InvalidTransition("reserve", s, "no call")
    return replace(s, activity=Activity.RESERVED, call_id=p.call_id, deadline=now + p.ring_timeout, since=now)


def _ring_no_answer(s: AgentState, now: float, p: Params) -> AgentState:
    # The offer timed out: the call goes back to the queue and the agent is paused ("no answer").
    return replace(s, activity=Activity.IDLE, call_id="", deadline=0.0, since=now, status=Status.NOT_READY,
                   reason=NO_ANSWER)


def _release(s: AgentState, now: float, p: Params) -> AgentState:
    # The offer ended without the agent at fault (caller abandoned, agent phone refused, call rerouted).
    return replace(s, activity=Activity.IDLE, call_id="", deadline=0.0, since=now)


def _connect(s: AgentState, now: float, p: Params) -> AgentState:
    return replace(s, activity=Activity.ON_CALL, deadline=now + ON_CALL_CHECK, since=now)


def _still_on_call(s: AgentState, now: float, p: Params) -> AgentState:
    # Reconciliation confirmed the call is alive: look again later.
    return replace(s, deadline=now + ON_CALL_CHECK)


def _end_call(s: AgentState, now: float, p: Params) -> AgentState:
    talked = replace(s, calls=s.calls + 1, talk_time=s.talk_time + max(0.0, now - s.since), wrap_extended=0.0)
    if p.wrap_up <= 0:
        return replace(talked, activity=Activity.IDLE, call_id="", deadline=0.0, since=now, idle_since=now)
    return replace(talked, activity=Activity.WRAP_UP, deadline=now + p.wrap_up, since=now)


def _extend_wrap_up(s: AgentState, now: float, p: Params) -> AgentState:
    if s.wrap_extended + p.extend_by > p.wrap_extend_max:
        raise InvalidTransition("extend_wrap_up", s, f"wrap-up may be extended by {p.wrap_extend_max:g} s at most")
    return replace(s, deadline=s.deadline + p.extend_by, wrap_extended=s.wrap_extended + p.extend_by)


def _end_wrap_up(s: AgentState, now: float, p: Params) -> AgentState:
    return replace(s, activity=Activity.IDLE, call_id="", deadline=0.0, since=now, idle_since=now,
                   wrap_extended=0.0)


Step = Callable[[AgentState, float, Params], AgentState]
A = Activity
# (event, activity it may happen in) -> what it does. Anything not listed is refused.
TABLE: dict[tuple[str, Activity], Step] = {
    ("login", A.IDLE): _login,
    ("logout", A.IDLE): _logout,
    ("logout", A.WRAP_UP): _logout,  # ends the shift; wrap-up still runs out
    ("available", A.IDLE): _set_available,
    ("available", A.RESERVED): _set_available,
    ("available", A.ON_CALL): _set_available,
    ("available", A.WRAP_UP): _set_available,
    ("not_ready", A.IDLE): _set_not_ready,
    ("not_ready", A.RESERVED): _set_not_ready,  # takes effect for the next call
    ("not_ready", A.ON_CALL): _set_not_ready,
    ("not_ready", A.WRAP_UP): _set_not_ready,
    ("reserve", A.IDLE): _reserve,
    ("ring_no_answer", A.RESERVED): _ring_no_answer,
    ("release", A.RESERVED): _release,
    ("connect", A.RESERVED): _connect,
    ("still_on_call", A.ON_CALL): _still_on_call,
    ("end_call", A.ON_CALL): _end_call,
    ("extend_wrap_up", A.WRAP_UP): _extend_wrap_up,
    ("end_wrap_up", A.WRAP_UP): _end_wrap_up,
}

# What the reconciler does when an activity's deadline has passed.
ON_DEADLINE: dict[Activity, str] = {
    A.RESERVED: "ring_no_answer",
    A.ON_CALL: "still_on_call",  # only after checking the call is alive; otherwise "end_call"
    A.WRAP_UP: "end_wrap_up",
}


# Events an agent (or routing on the agent's behalf) asks for; system events (the call's fate, timers)
# must still apply to an agent who logged out meanwhile, or a logged-out agent could be stuck.
AGENT_EVENTS = {"logout", "available", "not_ready", "reserve", "extend_wrap_up"}


def apply(state: AgentState, event: str, now: float, params: Params | None = None) -> AgentState:
    """The state after ``event``, with the version bumped; InvalidTransition if the table refuses."""
    step = TABLE.get((event, state.activity))
    if step is None:
        raise InvalidTransition(event, state, f"not allowed while {state.activity}")
    logged_out = state.status is Status.LOGGED_OUT
    if logged_out and event in AGENT_EVENTS:
        raise InvalidTransition(event, state, "agent is logged out")
    if not logged_out and event == "login":
        raise InvalidTransition(event, state, "agent is already logged in")
    nxt = step(state, now, params or Params())
    return replace(nxt, version=state.version + 1)
