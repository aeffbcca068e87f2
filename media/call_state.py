"""What a media worker knows of one of its calls (the pjsua2 Call holds only callbacks)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pjsua2 as pj

from media import protocol as mp
from media.pj_callbacks import Call, Player


@dataclass
class Collect:
    """A digit collection in progress (CollectDigits)."""

    max_digits: int
    terminators: str
    inter_timeout: float
    digits: str = ""
    timer: asyncio.TimerHandle | None = None


@dataclass
class CallState:
    call: Call
    outbound: bool
    answered: bool = False
    ringing: bool = False  # a 180 was sent
    media_ready: bool = False
    hangup_side: str = ""
    hangup_cause: str = ""
    player: Player | None = None
    player_seq: int = 0
    player_path: str = ""
    player_started: float = 0.0
    interrupt_digits: str = ""
    pending_play: mp.Play | None = None
    typeahead: str = ""
    collect: Collect | None = None
    capture: pj.AudioMediaRecorder | None = None
    recorder: pj.AudioMediaRecorder | None = None
    bridged_to: set[str] = field(default_factory=set)
    muted: bool = False  # its audio is not sent to the calls it is bridged with
    timer: asyncio.TimerHandle | None = None
    reported: bool = True  # False for an INVITE refused at once: the control plane never heard of it


def cause_for(code: int) -> str:
    """The hangup cause of a call that ended unanswered with this SIP status."""
    return {
        408: "no_answer",
        480: "unavailable",
        486: "busy",
        487: "cancelled",
        503: "congestion",
        603: "declined",
    }.get(code, f"sip_{code}" if code else "unknown")
