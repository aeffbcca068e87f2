"""The event catalogue: every call, queue and agent event the platform emits, as frozen dataclasses.

Any layer may import this module (no pjsua2, no aiohttp, no Redis). Names follow Asterisk's
queue_log where one fits. ``docs/events.md`` is generated from this module (``python -m
bus.events_doc``) and a test keeps the two equal, so a class's docstring says when it is emitted.

On the wire an event is one JSON object: ``v`` (SCHEMA), ``name``, then its fields. Reading is
strict for this schema and tolerant of a newer one: fields a newer node added are dropped, so
nodes of two versions can share a stream during an upgrade.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

SCHEMA = 1


class EventError(ValueError):
    """Bytes that are not an event of the catalogue."""


@dataclass(frozen=True, kw_only=True)
class Event:
    NAME: ClassVar[str] = ""
    at: float = field(default_factory=time.time)  # Unix seconds, when it happened
    node: str = ""  # the control-plane node that emitted it
    id: str = field(default_factory=lambda: uuid.uuid4().hex)  # unique: a redelivered event is recognised by it

    @property
    def key(self) -> str:
        """What the event is ordered by: events with one key are delivered in emission order."""
        return ""

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return _ORDER[cls]

    def body(self) -> dict[str, Any]:
        """The event as the JSON object docs/events.md shows (for a socket.io emit, which encodes it)."""
        body: dict[str, Any] = {"v": SCHEMA, "name": self.NAME}
        body.update((n, getattr(self, n)) for n in _ORDER[type(self)])
        return body

    def encode(self) -> str:
        return json.dumps(self.body(), separators=(",", ":"), default=str)


@dataclass(frozen=True, kw_only=True)
class CallEvent(Event):
    interaction: str  # the interaction (contact record) id
    call: str = ""  # the media call id of an originated leg ("" for the caller's own leg)

    @property
    def key(self) -> str:
        return self.interaction


@dataclass(frozen=True, kw_only=True)
class QueueEvent(CallEvent):
    queue: str
    agent_id: int | None = None


@dataclass(frozen=True, kw_only=True)
class AgentEvent(Event):
    agent_id: int

    @property
    def key(self) -> str:
        return f"agent:{self.agent_id}"


_REGISTRY: dict[str, type[Event]] = {}
_ORDER: dict[type[Event], tuple[str, ...]] = {}


def event(cls: type[Event]) -> type[Event]:
    if not cls.NAME or cls.NAME in _REGISTRY:
        raise TypeError(f"{cls.__name__}: missing or duplicate NAME {cls.NAME!r}")
    _REGISTRY[cls.NAME] = cls
    _ORDER[cls] = tuple(f.name for f in fields(cls))
    return cls


def catalogue() -> list[type[Event]]:
    """Every event class, in the order they are defined."""
    return list(_REGISTRY.values())


def names() -> list[str]:
    """Every event's name, sorted."""
    return sorted(_REGISTRY)


def decode(raw: str | bytes) -> Event:
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise EventError(f"not an event: {raw[:200]!r}") from exc
    return from_body(body)


def decode_all(raw: str | bytes) -> tuple[list[Event], list[str]]:
    """One event, or a JSON array of them (a stream entry holds a batch): the events, and the
    problems of the elements that are not events."""
    try:
        body = json.loads(raw)
    except ValueError:
        return [], [f"not JSON: {raw[:200]!r}"]
    events: list[Event] = []
    problems: list[str] = []
    for item in body if isinstance(body, list) else [body]:
        try:
            events.append(from_body(item))
        except EventError as exc:
            problems.append(str(exc))
    return events, problems


def from_body(body: Any) -> Event:
    """The event a decoded JSON object describes."""
    try:
        body = dict(body)
        version, name = body.pop("v"), body.pop("name")
        cls = _REGISTRY[name]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise EventError(f"not an event: {str(body)[:200]!r}") from exc
    known = _ORDER[cls]
    unknown = body.keys() - set(known)
    if unknown:
        if not isinstance(version, int) or version <= SCHEMA:
            raise EventError(f"{name}: unknown fields {sorted(unknown)}")
        body = {k: v for k, v in body.items() if k in known}  # a newer node's additions
    try:
        return cls(**body)
    except TypeError as exc:
        raise EventError(f"{name}: {exc}") from exc


# ---------------------------------------------------------------- calls


@event
@dataclass(frozen=True, kw_only=True)
class CallArrived(CallEvent):
    """A call reached a media worker and the control plane took it (the record opens)."""

    NAME = "DID"
    caller_number: str = ""  # cleaned at the worker, as every text from SIP headers
    caller_name: str = ""
    caller_uri: str = ""
    dialed_number: str = ""
    dialed_uri: str = ""
    sip_call_id: str = ""
    worker: str = ""  # the media worker holding the call
    media_call: str = ""  # the caller's media call id
    route: str | None = None  # the dial-plan route, none if the number matched none


@event
@dataclass(frozen=True, kw_only=True)
class CallAnswered(CallEvent):
    """The platform answered the caller (the caller's ACK arrived)."""

    NAME = "ANSWER"


@event
@dataclass(frozen=True, kw_only=True)
class CustomerIdentified(CallEvent):
    """The caller was matched to a customer of the CRM."""

    NAME = "IDENTIFY"
    customer_id: int
    how: str = "caller_id"  # how the customer was found


@event
@dataclass(frozen=True, kw_only=True)
class Dtmf(CallEvent):
    """A key pressed on a leg (RFC 2833 or SIP INFO)."""

    NAME = "DTMF"
    digit: str
    method: str = ""  # rfc2833 or info


@event
@dataclass(frozen=True, kw_only=True)
class DigitsCollected(CallEvent):
    """A digit collection ended."""

    NAME = "DIGITS"
    digits: str
    reason: str  # max, terminator, timeout


@event
@dataclass(frozen=True, kw_only=True)
class PromptPlayed(CallEvent):
    """A prompt stopped playing."""

    NAME = "PROMPT"
    prompt: str
    reason: str  # eof, interrupted, stopped, error
    digit: str = ""
    started: float = 0.0  # when it began to play (Unix seconds, at the worker; 0: it never did)


@event
@dataclass(frozen=True, kw_only=True)
class Dial(CallEvent):
    """The platform called out from the caller's worker (an agent's phone, a callback)."""

    NAME = "DIAL"
    uri: str


@event
@dataclass(frozen=True, kw_only=True)
class DialRinging(CallEvent):
    """The called party is ringing."""

    NAME = "DIAL_RINGING"


@event
@dataclass(frozen=True, kw_only=True)
class DialAnswered(CallEvent):
    """The called party answered."""

    NAME = "DIAL_ANSWER"


@event
@dataclass(frozen=True, kw_only=True)
class DialEnded(CallEvent):
    """An originated leg ended (unanswered: the cause says why)."""

    NAME = "DIAL_HANGUP"
    cause: str  # normal_clearing, no_answer, busy, ...
    code: int = 0  # the last SIP status
    side: str = ""  # remote, platform, worker, lost


@event
@dataclass(frozen=True, kw_only=True)
class Bridged(CallEvent):
    """Two legs hear each other."""

    NAME = "BRIDGE"
    other: str


@event
@dataclass(frozen=True, kw_only=True)
class Unbridged(CallEvent):
    """Two legs no longer hear each other."""

    NAME = "UNBRIDGE"
    other: str


@event
@dataclass(frozen=True, kw_only=True)
class SipTransfer(CallEvent):
    """Progress of a SIP REFER sent for a leg (``final`` with the last status)."""

    NAME = "TRANSFER"
    code: int
    final: bool


@event
@dataclass(frozen=True, kw_only=True)
class MediaError(CallEvent):
    """A media worker refused or failed a command for the call."""

    NAME = "MEDIA_ERROR"
    command: str
    error: str


@event
@dataclass(frozen=True, kw_only=True)
class Hangup(CallEvent):
    """The caller's leg ended (the record closes)."""

    NAME = "HANGUP"
    cause: str  # normal_clearing, control_unavailable, media_worker_lost, ...
    code: int = 0  # the last SIP status
    side: str = ""  # remote (the caller), platform, worker, lost


@event
@dataclass(frozen=True, kw_only=True)
class CallStateChanged(CallEvent):
    """The call's session changed state (the table in bus/call_session.py), by the event just before
    it: what the call is doing now, and with whom."""

    NAME = "CALLSTATE"
    transition: str  # the named transition of bus/call_session.TABLE: answer, enqueue, connect, hold …
    state: str  # arriving, ivr, queued, offering, connected, held, consulting, conferenced, transferring, ended
    queue: str = ""  # the queue it waits in or was connected from
    agent_id: int | None = None  # the agent offered or connected
    party: str = ""  # the outside party the caller talks to (a transfer to an extension or a number)
    muted: bool = False  # the agent's leg is muted
    recording: str = ""  # the file the call is being recorded to ("" when not)
    holds: int = 0  # so far: times on hold (a consultation included), seconds on hold, the longest hold
    held_total: float = 0.0
    held_longest: float = 0.0
    conference_seconds: float = 0.0  # seconds in three-way conferences, ended ones
    transfers: list[dict[str, Any]] = field(default_factory=list)  # each: mode, kind, target, from_agent, to_agent, at
    data: dict[str, str] = field(default_factory=dict)  # the call data attached so far


@event
@dataclass(frozen=True, kw_only=True)
class CommandApplied(CallEvent):
    """A third-party call-control command (bus/commands.py) was applied to the call by the node
    that owns it."""

    NAME = "COMMAND"
    command: str  # a name of bus/commands.COMMANDS: hold, resume, transfer, consult, mute, record …
    by: str = ""  # who sent it: the API key's name
    args: dict[str, Any] = field(default_factory=dict)  # the command's own fields (leg, data …)


# ---------------------------------------------------------------- queues


@event
@dataclass(frozen=True, kw_only=True)
class EnterQueue(QueueEvent):
    """The caller joined a queue."""

    NAME = "ENTERQUEUE"
    position: int  # 1 = next to be served
    priority: int = 0  # higher is served first (value tier + route)
    skills: dict[str, int] = field(default_factory=dict)  # skill -> minimum level, attached by the IVR


@event
@dataclass(frozen=True, kw_only=True)
class Abandon(QueueEvent):
    """The caller hung up while waiting."""

    NAME = "ABANDON"
    position: int | None = None  # the place they left
    wait: float = 0.0  # seconds in the queue


@event
@dataclass(frozen=True, kw_only=True)
class ExitWithKey(QueueEvent):
    """The caller left the queue with a key."""

    NAME = "EXITWITHKEY"
    cause: str = "key"
    position: int | None = None
    wait: float = 0.0
    key: str = ""


@event
@dataclass(frozen=True, kw_only=True)
class ExitWithTimeout(QueueEvent):
    """The caller waited the queue's longest wait (``to``: where they go next)."""

    NAME = "EXITWITHTIMEOUT"
    cause: str = "timeout"
    position: int | None = None
    wait: float = 0.0
    to: str = ""


@event
@dataclass(frozen=True, kw_only=True)
class ExitEmpty(QueueEvent):
    """Nobody is logged in to the queue (at entry, or while waiting)."""

    NAME = "EXITEMPTY"
    cause: str = "no_agents"
    position: int | None = None
    wait: float = 0.0


@event
@dataclass(frozen=True, kw_only=True)
class QueueFull(QueueEvent):
    """The queue already had its ``max_callers`` waiting."""

    NAME = "FULL"
    cause: str = "full"
    max_callers: int = 0  # the queue's limit


@event
@dataclass(frozen=True, kw_only=True)
class Overflow(QueueEvent):
    """The call leaves the queue for its overflow target."""

    NAME = "OVERFLOW"
    kind: str  # queue, voicemail, callback, hangup
    target: str = ""  # the queue overflowed to
    cause: str = ""  # why the call left: timeout, no_agents, full, key


@event
@dataclass(frozen=True, kw_only=True)
class Announce(QueueEvent):
    """The caller heard their position and estimated wait."""

    NAME = "ANNOUNCE"
    position: int | None = None
    ewt_minutes: int | None = None  # estimated wait announced (docs/metrics.md), none if unknown


@event
@dataclass(frozen=True, kw_only=True)
class Offer(QueueEvent):
    """The call is offered: the reserved agents' phones ring."""

    NAME = "OFFER"
    agents: list[int] = field(default_factory=list)  # the agents reserved (several: ring-all)


@event
@dataclass(frozen=True, kw_only=True)
class RingNoAnswer(QueueEvent):
    """An offered agent did not take the call."""

    NAME = "RINGNOANSWER"
    ring: float = 0.0  # seconds the agent's phone rang
    cause: str = ""  # no_answer, busy, no_device, ...
    code: int = 0  # the SIP status of the agent's leg


@event
@dataclass(frozen=True, kw_only=True)
class Connect(QueueEvent):
    """Caller and agent are connected."""

    NAME = "CONNECT"
    wait: float = 0.0  # seconds in the queue
    ring: float = 0.0  # seconds the agent's phone rang
    agent_call: str = ""  # the media call id of the agent's leg
    callback: bool = False  # a callback: the agent was called first, then the customer
    attempt: int = 0  # which callback attempt


@event
@dataclass(frozen=True, kw_only=True)
class CompleteAgent(QueueEvent):
    """The agent hung up first."""

    NAME = "COMPLETEAGENT"
    wait: float = 0.0  # seconds in the queue
    talk: float = 0.0  # seconds connected


@event
@dataclass(frozen=True, kw_only=True)
class CompleteCaller(QueueEvent):
    """The caller hung up first."""

    NAME = "COMPLETECALLER"
    wait: float = 0.0  # seconds in the queue
    talk: float = 0.0  # seconds connected


@event
@dataclass(frozen=True, kw_only=True)
class Voicemail(QueueEvent):
    """The caller left a message."""

    NAME = "VOICEMAIL"
    path: str  # the WAV file, under the voicemail directory
    seconds: float = 0.0  # length of the message


@event
@dataclass(frozen=True, kw_only=True)
class CallbackRequested(QueueEvent):
    """The caller asked to be called back and keeps their place."""

    NAME = "CALLBACK_REQUESTED"
    position: int | None = None
    wait: float = 0.0
    uri: str = ""  # where the customer will be called
    cause: str = ""  # key (the caller asked), timeout (the queue's overflow) or ivr (chosen before queueing)


@event
@dataclass(frozen=True, kw_only=True)
class CallbackAttempt(QueueEvent):
    """An agent is reserved for a callback: the agent's phone is called first."""

    NAME = "CALLBACK_ATTEMPT"
    attempt: int = 1


@event
@dataclass(frozen=True, kw_only=True)
class CallbackNoAnswer(QueueEvent):
    """The customer did not answer a callback; it is tried again later."""

    NAME = "CALLBACK_NOANSWER"
    attempt: int = 1
    cause: str = ""
    code: int = 0
    retry_in: float = 0.0  # seconds until the next attempt


@event
@dataclass(frozen=True, kw_only=True)
class CallbackFailed(QueueEvent):
    """The last callback attempt failed: the callback is dropped."""

    NAME = "CALLBACK_FAILED"
    attempt: int = 1
    cause: str = ""
    code: int = 0


# ---------------------------------------------------------------- transfers and conferences


@event
@dataclass(frozen=True, kw_only=True)
class BlindTransfer(QueueEvent):
    """The agent (``agent_id``) handed the caller on without talking to the target first: to a queue
    (the same interaction, its priority kept), an agent (OFFER and CONNECT follow), an extension or
    an outside number (PARTYCONNECT follows). A target that does not answer sends the caller back to
    the queue they came from."""

    NAME = "BLINDTRANSFER"
    kind: str  # queue, agent, extension, number
    target: str  # the queue's name, the agent's id, the extension, the number
    to_agent_id: int | None = None  # the agent transferred to
    talk: float = 0.0  # seconds the transferring agent talked to the caller


@event
@dataclass(frozen=True, kw_only=True)
class Consult(QueueEvent):
    """The agent put the caller on hold and calls a target to talk first (an attended transfer or a
    conference may follow)."""

    NAME = "CONSULT"
    kind: str  # agent, extension, number
    target: str
    to_agent_id: int | None = None
    leg: str = ""  # the media call id of the consultation leg


@event
@dataclass(frozen=True, kw_only=True)
class ConsultEnd(QueueEvent):
    """The consultation ended without a transfer: ``failed`` (the target did not answer) or ``ended``
    (the target hung up): the caller stays on hold; ``cancelled``: the agent is back with the caller."""

    NAME = "CONSULTEND"
    result: str  # failed, ended, cancelled
    cause: str = ""  # why the target's leg ended: no_answer, busy, normal_clearing …


@event
@dataclass(frozen=True, kw_only=True)
class Conference(QueueEvent):
    """Caller, agent and consulted target now all hear each other."""

    NAME = "CONFERENCE"
    to_agent_id: int | None = None
    target: str = ""


@event
@dataclass(frozen=True, kw_only=True)
class ConferenceEnd(QueueEvent):
    """The consulted target left the conference (``left`` = target): caller and agent talk on. When
    the agent leaves, ATTENDEDTRANSFER says so instead."""

    NAME = "CONFERENCEEND"
    left: str  # target
    seconds: float = 0.0  # how long the conference lasted


@event
@dataclass(frozen=True, kw_only=True)
class AttendedTransfer(QueueEvent):
    """The agent left the caller with the consulted target: by completing the transfer, by leaving
    a conference, or by hanging up during the consultation."""

    NAME = "ATTENDEDTRANSFER"
    kind: str  # agent, extension, number
    target: str
    to_agent_id: int | None = None
    talk: float = 0.0  # seconds the transferring agent was connected
    conference: float = 0.0  # seconds of conference before it (0: none)


@event
@dataclass(frozen=True, kw_only=True)
class PartyConnect(QueueEvent):
    """A caller transferred to an extension or an outside number is connected to it."""

    NAME = "PARTYCONNECT"
    kind: str  # extension, number
    target: str
    party_call: str = ""  # the media call id of the party's leg


@event
@dataclass(frozen=True, kw_only=True)
class Recording(CallEvent):
    """Recording of the call started or stopped (caller and every leg bridged with them)."""

    NAME = "RECORDING"
    action: str  # start, stop
    path: str = ""  # the WAV file, under the recordings directory


# ---------------------------------------------------------------- the IVR (ivr/)


@event
@dataclass(frozen=True, kw_only=True)
class IvrNode(CallEvent):
    """The call entered a node of an IVR flow."""

    NAME = "IVR_NODE"
    flow: str
    ivr_node: str  # the flow's node (``node`` is the control-plane node, as in every event)
    node_type: str
    version: int = 0  # the flow set's version the call runs on


@event
@dataclass(frozen=True, kw_only=True)
class IvrInput(CallEvent):
    """The caller answered a menu, a collection or a survey question: a key, digits or a phrase.
    A PIN is never in it (``value`` is masked)."""

    NAME = "IVR_INPUT"
    flow: str
    ivr_node: str
    kind: str  # key, digits, speech
    value: str
    confidence: float | None = None  # speech: the recognizer's lowest word confidence
    latency_ms: float | None = None  # speech: from the end of the caller's last word to this answer


@event
@dataclass(frozen=True, kw_only=True)
class IvrNoInput(CallEvent):
    """A menu or collection heard nothing in time."""

    NAME = "IVR_NOINPUT"
    flow: str
    ivr_node: str
    attempt: int


@event
@dataclass(frozen=True, kw_only=True)
class IvrNoMatch(CallEvent):
    """An answer that is not one of the menu's, or digits that fail the validation."""

    NAME = "IVR_NOMATCH"
    flow: str
    ivr_node: str
    attempt: int
    kind: str  # key, digits, speech
    value: str = ""


@event
@dataclass(frozen=True, kw_only=True)
class IvrLookup(CallEvent):
    """A CRM lookup of the IVR, with its result and how long it took."""

    NAME = "IVR_LOOKUP"
    flow: str
    ivr_node: str
    query: str
    result: str  # found, empty, failed, timeout
    ms: float


@event
@dataclass(frozen=True, kw_only=True)
class IdentifyFailed(CallEvent):
    """The caller could not be identified: wrong PINs, unknown account, a locked account, no input."""

    NAME = "IDENTIFY_FAILED"
    reason: str  # wrong_pin, unknown_account, locked, no_input
    attempts: int = 0
    account: str = ""  # the account number given, if any
    locked_until: float | None = None  # set when this failure locked the account's phone access


@event
@dataclass(frozen=True, kw_only=True)
class TicketCreated(CallEvent):
    """The IVR opened a ticket for the caller (a fault report)."""

    NAME = "TICKET"
    number: str
    kind: str
    customer_id: int


@event
@dataclass(frozen=True, kw_only=True)
class SurveyAnswer(CallEvent):
    """One answer of a post-call survey, stored as soon as it is given."""

    NAME = "SURVEY"
    survey: str
    question: str
    answer: int
    how: str = "key"  # key, speech
    queue: str = ""  # the queue and agent of the call the survey is about
    agent_id: int | None = None
    customer_id: int | None = None


@event
@dataclass(frozen=True, kw_only=True)
class IvrExit(CallEvent):
    """The call left the IVR: how, and from which node (containment and drop-out reporting)."""

    NAME = "IVR_EXIT"
    flow: str
    ivr_node: str
    reason: str  # served, agent, abandoned, voicemail, callback, transfer, closed, refused, error, loop


# ---------------------------------------------------------------- agents


@event
@dataclass(frozen=True, kw_only=True)
class AgentLogin(AgentEvent):
    """An agent logged in."""

    NAME = "LOGIN"


@event
@dataclass(frozen=True, kw_only=True)
class AgentLogoff(AgentEvent):
    """An agent logged out."""

    NAME = "LOGOFF"


@event
@dataclass(frozen=True, kw_only=True)
class AgentPause(AgentEvent):
    """An agent set themselves not ready (``reason``: the reason code)."""

    NAME = "PAUSE"
    reason: str = ""
    by: str = "agent"  # agent, or system (a missed offer)
    call: str = ""  # the call whose offer was missed


@event
@dataclass(frozen=True, kw_only=True)
class AgentUnpause(AgentEvent):
    """An agent set themselves available again."""

    NAME = "UNPAUSE"


@event
@dataclass(frozen=True, kw_only=True)
class AddMember(AgentEvent):
    """An agent was made a member of a queue."""

    NAME = "ADDMEMBER"
    queue: str


@event
@dataclass(frozen=True, kw_only=True)
class RemoveMember(AgentEvent):
    """An agent stopped being a member of a queue."""

    NAME = "REMOVEMEMBER"
    queue: str


@event
@dataclass(frozen=True, kw_only=True)
class AgentReleased(AgentEvent):
    """The system released an agent from a call that is gone (its node or worker died)."""

    NAME = "RELEASE"
    reason: str  # call_lost
    by: str = "system"
    call: str = ""  # the call the agent was released from


@event
@dataclass(frozen=True, kw_only=True)
class AgentStateChanged(AgentEvent):
    """An agent's state changed (the table in acd/agent_state.py): every transition, including the
    reservations the routing script makes and the releases of the reconciler, except the reconciler's
    periodic finding that the agent's call is still alive (``still_on_call`` moves only the time of
    the next check). The Redis script that makes the change writes this event to the stream itself,
    so none is missing and each agent's come in order."""

    NAME = "AGENTSTATE"
    transition: str  # the named transition: login, reserve, connect, ring_no_answer, end_call …
    status: str  # logged_out, available, not_ready
    activity: str  # idle, reserved, on_call, wrap_up
    reason: str = ""  # the not-ready reason
    call: str = ""  # the call reserved for or connected to the agent
    version: int  # the state's version after the change
