"""The media protocol: typed messages between the control plane and media workers.

Transport (Redis; the keys are in bus/keys.py), documented in docs/media-protocol.md:
- commands to one worker: list ``cc:media:cmd:<worker_id>`` (RPUSH by the control plane, BLPOP by the
  worker), so a command waits for a worker that is briefly busy instead of being lost;
- events from every worker: stream ``cc:media:events`` (XADD by workers, consumer group by the
  control plane), so events survive a control-plane restart;
- registry: hash ``cc:media:workers`` (worker id -> JSON WorkerInfo) and a heartbeat key
  ``cc:media:alive:<worker_id>`` with a TTL.

This module must not import pjsua2: the control plane, ivr/ and acd/ use it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

ALL_DIGITS = "0123456789*#ABCD"


class ProtocolError(ValueError):
    """A message that does not decode into a known, well-formed message."""


@dataclass(frozen=True)
class Message:
    type: ClassVar[str] = ""

    def encode(self) -> str:
        # A shallow dict: dataclasses.asdict deep-copies every value, and every message is encoded.
        body = {name: getattr(self, name) for name in _ORDER[type(self)]}
        body["type"] = self.type
        return json.dumps(body, separators=(",", ":"))


_REGISTRY: dict[str, type[Message]] = {}
# Each message's field names, computed once: every message is encoded or decoded.
_ORDER: dict[type[Message], tuple[str, ...]] = {}
_FIELDS: dict[type[Message], frozenset[str]] = {}


def message(cls: type[Message]) -> type[Message]:
    _REGISTRY[cls.type] = cls
    _ORDER[cls] = tuple(f.name for f in fields(cls))
    _FIELDS[cls] = frozenset(_ORDER[cls])
    return cls


def encode_commands(cmds: Sequence[Message]) -> str:
    """One list entry: a single command as its object, several as an array of them, so that a
    worker takes commands sent together (answer, then play) in one read."""
    if len(cmds) == 1:
        return cmds[0].encode()
    return "[" + ",".join(c.encode() for c in cmds) + "]"


def decode_commands(raw: str | bytes) -> list[Message]:
    """The messages of one list entry (see encode_commands)."""
    if raw[:1] not in ("[", b"["):
        return [decode(raw)]
    try:
        bodies = json.loads(raw)
    except ValueError as exc:
        raise ProtocolError(f"undecodable media message: {raw[:200]!r}") from exc
    return [_from_body(body, raw) for body in bodies]


def decode(raw: str | bytes) -> Message:
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise ProtocolError(f"undecodable media message: {raw[:200]!r}") from exc
    return _from_body(body, raw)


def _from_body(body: Any, raw: str | bytes) -> Message:
    try:
        kind = body.pop("type")
        cls = _REGISTRY[kind]
    except (KeyError, TypeError, AttributeError) as exc:
        raise ProtocolError(f"undecodable media message: {raw[:200]!r}") from exc
    unknown = body.keys() - _FIELDS[cls]
    if unknown:
        raise ProtocolError(f"{kind}: unknown fields {sorted(unknown)}")
    try:
        return cls(**body)
    except TypeError as exc:
        raise ProtocolError(f"{kind}: {exc}") from exc


# ---------------------------------------------------------------- commands (control -> worker)


@dataclass(frozen=True)
class Command(Message):
    call_id: str


@message
@dataclass(frozen=True)
class Answer(Command):
    type: ClassVar[str] = "answer"
    code: int = 200


@message
@dataclass(frozen=True)
class Play(Command):
    """Play a WAV file (path on the worker's machine); ``interrupt_digits`` stop it."""

    type: ClassVar[str] = "play"
    path: str = ""
    loop: bool = False
    interrupt_digits: str = ALL_DIGITS


@message
@dataclass(frozen=True)
class StopPlay(Command):
    type: ClassVar[str] = "stop_play"


@message
@dataclass(frozen=True)
class CollectDigits(Command):
    """Collect up to ``max_digits``; ends early on a terminator or the timeouts (seconds)."""

    type: ClassVar[str] = "collect"
    max_digits: int = 1
    first_timeout: float = 5.0
    inter_timeout: float = 3.0
    terminators: str = "#"


@message
@dataclass(frozen=True)
class StartCapture(Command):
    """Write the caller's audio (8 kHz 16-bit mono WAV) to ``path`` for speech recognition."""

    type: ClassVar[str] = "start_capture"
    path: str = ""


@message
@dataclass(frozen=True)
class StopCapture(Command):
    type: ClassVar[str] = "stop_capture"


@message
@dataclass(frozen=True)
class Record(Command):
    """Record both directions of the call to ``path`` until hang-up or StopRecord."""

    type: ClassVar[str] = "record"
    path: str = ""


@message
@dataclass(frozen=True)
class StopRecord(Command):
    type: ClassVar[str] = "stop_record"


@message
@dataclass(frozen=True)
class Bridge(Command):
    type: ClassVar[str] = "bridge"
    other_call_id: str = ""


@message
@dataclass(frozen=True)
class Unbridge(Command):
    type: ClassVar[str] = "unbridge"
    other_call_id: str = ""


@message
@dataclass(frozen=True)
class Mute(Command):
    """Stop (``muted``) or restart sending this call's audio to the calls it is bridged with; its
    recorder still hears it."""

    type: ClassVar[str] = "mute"
    muted: bool = True


@message
@dataclass(frozen=True)
class SendDtmf(Command):
    """Send keys to the far end of the call (RFC 4733 telephone events)."""

    type: ClassVar[str] = "send_dtmf"
    digits: str = ""


@message
@dataclass(frozen=True)
class StopCollect(Command):
    """End a digit collection now (a spoken answer came first): DigitsCollected, reason stopped."""

    type: ClassVar[str] = "stop_collect"


@message
@dataclass(frozen=True)
class Listen(Command):
    """Stream the caller's audio to the speech service, recognizing ``grammar`` (words), until the
    utterance ends, ``max_seconds`` pass or StopListen. ``barge_in``: speech stops the prompt."""

    type: ClassVar[str] = "listen"
    grammar: list[str] = field(default_factory=list)
    max_seconds: float = 15.0
    barge_in: bool = True


@message
@dataclass(frozen=True)
class StopListen(Command):
    type: ClassVar[str] = "stop_listen"


@message
@dataclass(frozen=True)
class Originate(Command):
    """Call ``uri`` from this worker; ``call_id`` is chosen by the control plane."""

    type: ClassVar[str] = "originate"
    uri: str = ""
    caller_id: str = ""
    timeout: float = 30.0


@message
@dataclass(frozen=True)
class Transfer(Command):
    """Blind transfer (REFER) of the remote party to ``uri``."""

    type: ClassVar[str] = "transfer"
    uri: str = ""


@message
@dataclass(frozen=True)
class Hangup(Command):
    type: ClassVar[str] = "hangup"
    code: int = 0  # 0: BYE an answered call, 603/486/503... for an unanswered one


@message
@dataclass(frozen=True)
class Shutdown(Command):
    """Stop the worker cleanly (call_id unused)."""

    type: ClassVar[str] = "shutdown"


# ---------------------------------------------------------------- events (worker -> control)


@dataclass(frozen=True)
class Event(Message):
    worker_id: str
    call_id: str
    at: float  # unix time at the worker


@message
@dataclass(frozen=True)
class WorkerUp(Event):
    type: ClassVar[str] = "worker_up"
    sip_uri: str = ""
    max_calls: int = 0
    capacity: int = 0
    pid: int = 0


@message
@dataclass(frozen=True)
class WorkerDown(Event):
    type: ClassVar[str] = "worker_down"
    reason: str = ""


@message
@dataclass(frozen=True)
class CallArrived(Event):
    type: ClassVar[str] = "call_arrived"
    caller_uri: str = ""
    caller_number: str = ""
    caller_name: str = ""
    dialed_uri: str = ""
    dialed_number: str = ""
    sip_call_id: str = ""


@message
@dataclass(frozen=True)
class Ringing(Event):
    type: ClassVar[str] = "ringing"


@message
@dataclass(frozen=True)
class Answered(Event):
    type: ClassVar[str] = "answered"


@message
@dataclass(frozen=True)
class Digit(Event):
    type: ClassVar[str] = "digit"
    digit: str = ""
    method: str = "rfc4733"  # or "info"


@message
@dataclass(frozen=True)
class DigitsCollected(Event):
    type: ClassVar[str] = "digits"
    digits: str = ""
    reason: str = ""  # max | terminator | timeout


@message
@dataclass(frozen=True)
class PromptFinished(Event):
    type: ClassVar[str] = "prompt_finished"
    path: str = ""
    reason: str = ""  # eof | interrupted | stopped | error
    digit: str = ""
    started: float = 0.0  # unix time the prompt began to play (0: it never did)


@message
@dataclass(frozen=True)
class SpeechStarted(Event):
    """The caller began to speak while listening (the prompt was stopped if barge-in was asked)."""

    type: ClassVar[str] = "speech_started"


@message
@dataclass(frozen=True)
class SpeechResult(Event):
    """What the speech service recognized: [word, confidence] pairs. ``reason``: final (the
    utterance ended), timeout (max_seconds), stopped (StopListen), unavailable (no speech service)."""

    type: ClassVar[str] = "speech_result"
    words: list[list[Any]] = field(default_factory=list)
    reason: str = "final"
    ended: float = 0.0  # unix time the caller's last word ended (0: no words)


@message
@dataclass(frozen=True)
class Bridged(Event):
    type: ClassVar[str] = "bridged"
    other_call_id: str = ""


@message
@dataclass(frozen=True)
class Unbridged(Event):
    type: ClassVar[str] = "unbridged"
    other_call_id: str = ""


@message
@dataclass(frozen=True)
class Muted(Event):
    type: ClassVar[str] = "muted"
    muted: bool = True


@message
@dataclass(frozen=True)
class DtmfSent(Event):
    type: ClassVar[str] = "dtmf_sent"
    digits: str = ""


@message
@dataclass(frozen=True)
class TransferResult(Event):
    type: ClassVar[str] = "transfer_result"
    code: int = 0
    final: bool = False


@message
@dataclass(frozen=True)
class CommandFailed(Event):
    type: ClassVar[str] = "command_failed"
    command: str = ""
    error: str = ""


@message
@dataclass(frozen=True)
class HungUp(Event):
    """The call is gone. ``side``: remote (the far end hung up), platform (a Hangup command),
    worker (the worker refused or timed the call out) or lost (the worker died)."""

    type: ClassVar[str] = "hung_up"
    cause: str = ""
    code: int = 0
    side: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
