"""The agent's consultation of a third party while the caller waits on hold (acd/conversation.py
runs the call): ringing the target, then completing the transfer, cancelling back to the caller, or
joining all three in a conference and leaving it. The session's states: consulting, conferenced."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from acd import transfer
from acd.transfer import Refused, Target, agent_step
from bus import commands as cmd
from bus import events as ev
from media.client import CallEnded, CallHandle, MediaError, OriginateFailed

if TYPE_CHECKING:
    from acd.conversation import Talk

TRANSFER_RING = 30.0  # seconds an extension or outside number may ring


@dataclass
class Consultation:
    target: Target
    ringing: asyncio.Task[CallHandle] | None  # until the target answers
    leg: CallHandle | None = None
    started: float = 0.0
    conference_at: float = 0.0  # when the three began to talk (0: not yet)


async def start(talk: Talk, c: cmd.Consult) -> cmd.Result:
    """Hold the caller and ring the target."""
    try:
        target = await transfer.resolve(talk.svc, c.kind, c.target, call_id=talk.expect_call,
                                        ring_timeout=TRANSFER_RING + 5, current_agent=talk.party.agent_id,
                                        queues=False)
    except Refused as exc:
        return exc.result
    if not talk.held:
        await talk.customer.unbridge(talk.party.leg, music=talk.hold_music)
        talk.held = True
    timeout = talk.settings.ring_timeout if target.agent_id else TRANSFER_RING
    ringing = asyncio.create_task(talk.customer.originate(target.uri, timeout=timeout, caller_id=talk.caller_id))
    talk.consult = Consultation(target, ringing, started=time.time())
    talk.emit(ev.Consult(interaction=talk.record.interaction, queue=talk.queue, agent_id=talk.party.agent_id,
                         kind=c.kind, target=c.target, to_agent_id=target.agent_id))
    return cmd.DONE


async def target_rang(talk: Talk) -> None:
    """The target answered (the agent talks to them) or did not (back to the caller on hold)."""
    c = talk.consult
    assert c is not None and c.ringing is not None
    try:
        c.leg = c.ringing.result()
    except OriginateFailed as exc:
        talk.consult = None
        await agent_step(talk.svc, c.target.agent_id, "release", talk.expect_call)
        talk.emit(ev.ConsultEnd(interaction=talk.record.interaction, queue=talk.queue,
                                agent_id=talk.party.agent_id, result="failed", cause=exc.cause))
        return
    finally:
        c.ringing = None
    await agent_step(talk.svc, c.target.agent_id, "connect", talk.expect_call)
    with contextlib.suppress(CallEnded, MediaError):
        await talk.party.leg.bridge(c.leg)


async def target_left(talk: Talk) -> None:
    """The consulted target hung up: back to the caller on hold, or, from a conference, to the
    caller and the agent."""
    c = talk.consult
    assert c is not None and c.leg is not None
    talk.consult = None
    await agent_step(talk.svc, c.target.agent_id, "end_call", talk.expect_call, talk.settings.wrap_up)
    cause = c.leg.hangup_event.cause if c.leg.hangup_event else ""
    if c.conference_at:
        talk.emit(ev.ConferenceEnd(interaction=talk.record.interaction, queue=talk.queue,
                                   agent_id=talk.party.agent_id, left="target",
                                   seconds=round(time.time() - c.conference_at, 3)))
    else:
        talk.emit(ev.ConsultEnd(interaction=talk.record.interaction, queue=talk.queue,
                                agent_id=talk.party.agent_id, result="ended", cause=cause))


async def cancel(talk: Talk) -> None:
    """Hang up the target; the agent talks to the caller again."""
    await drop(talk)
    talk.emit(ev.ConsultEnd(interaction=talk.record.interaction, queue=talk.queue, agent_id=talk.party.agent_id,
                            result="cancelled"))
    await talk.customer.bridge(talk.party.leg)  # stops the hold music
    talk.held = False


async def conference(talk: Talk) -> None:
    c = talk.consult
    assert c is not None and c.leg is not None
    await talk.customer.bridge(talk.party.leg)  # stops the hold music
    await talk.customer.bridge(c.leg)
    talk.held = False
    c.conference_at = time.time()
    talk.emit(ev.Conference(interaction=talk.record.interaction, queue=talk.queue, agent_id=talk.party.agent_id,
                            to_agent_id=c.target.agent_id, target=c.target.name))


async def drop_target(talk: Talk) -> None:
    """The target leaves the conference."""
    c = talk.consult
    assert c is not None and c.leg is not None
    await c.leg.hangup()
    await target_left(talk)


async def complete(talk: Talk) -> None:
    """The agent leaves the caller with the consulted target (an attended transfer)."""
    c = talk.consult
    assert c is not None and c.leg is not None
    now = time.time()
    talked = now - talk.party.connected_at
    talk.emit(ev.AttendedTransfer(interaction=talk.record.interaction, queue=talk.queue,
                                  agent_id=talk.party.agent_id, kind=c.target.kind, target=c.target.name,
                                  to_agent_id=c.target.agent_id, talk=round(talked, 3),
                                  conference=round(now - c.conference_at, 3) if c.conference_at else 0.0))
    old = talk.hand_over(c.leg, c.target, now)
    talk.consult = None
    talk.muted = False
    await talk.end_party(old, talked)
    if not c.conference_at:
        await talk.customer.bridge(c.leg)  # stops the hold music
    talk.held = False


async def drop(talk: Talk) -> None:
    """End a consultation still going (a cancel, or the call's end)."""
    c, talk.consult = talk.consult, None
    if c is None:
        return
    if c.ringing is not None:
        c.ringing.cancel()  # the originate hangs its leg up
        with contextlib.suppress(asyncio.CancelledError, OriginateFailed):
            c.leg = await c.ringing
    if c.leg is not None:
        await c.leg.hangup()
        await agent_step(talk.svc, c.target.agent_id, "end_call", talk.expect_call, talk.settings.wrap_up)
    else:
        await agent_step(talk.svc, c.target.agent_id, "release", talk.expect_call)
