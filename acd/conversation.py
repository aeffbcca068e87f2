"""A caller connected to an agent (or, after a transfer, to an outside party) until the call is over
for the queue: the bridge, the call-control commands that come meanwhile (bus/commands.py: hold,
mute, blind and attended transfers, three-way conference, DTMF), and the end — who ended it, each
agent's wrap-up, the queue's handle time for the EWT average (docs/metrics.md).

``converse`` returns None when the call is over, or a Handoff: the caller goes into a queue (a blind
transfer to a queue, or back to their own when a transfer's target did not answer). The caller's
state while talking is the session's (bus/call_session.py): connected, held, consulting (the caller
on hold, the agent with the target), conferenced, transferring. The consultation of a third party
(attended transfer, conference) is consultation.py's.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any, Protocol

import redis.asyncio as aioredis

from acd import consultation, transfer
from acd.consultation import TRANSFER_RING, Consultation
from acd.ewt import update_aht
from acd.models import QueueSettings
from acd.services import QueueServices
from acd.transfer import Refused, Target, agent_step
from bus import commands as cmd
from bus import events as ev
from bus.keys import AHT_KEY
from media.client import CallEnded, CallHandle, MediaError, OriginateFailed


class Record(Protocol):
    """The interaction a call belongs to: its events go to the notifier (callcenter/ keeps the
    record, derived from them), and its commands wait in its inbox (None: it takes none)."""

    interaction: str
    inbox: cmd.Inbox | None

    def emit(self, event: ev.Event) -> None: ...


@dataclass(frozen=True)
class Handoff:
    queue: str  # the caller goes (back) into this queue


@dataclass
class Party:
    """Whom the caller talks to: an agent's leg, or an outside party's (``agent_id`` None)."""

    leg: CallHandle
    agent_id: int | None
    connected_at: float
    kind: str = "agent"
    target: str = ""

    @classmethod
    def reached(cls, leg: CallHandle, target: Target, at: float) -> Party:
        """The target of a transfer, answered at ``at``."""
        return cls(leg, target.agent_id, at, target.kind, target.name)


async def converse(svc: QueueServices, record: Record, queue: str, settings: QueueSettings, customer: CallHandle,
                   party: Party, wait: float, expect_call: str, caller_id: str = "",
                   keep_caller: bool = False) -> Handoff | None:
    """Bridge the customer with ``party`` and act on commands until the call is over for the queue.
    ``expect_call``: the call the agents' states name (their transitions' expected call).
    ``keep_caller``: when the agent hangs up first the caller stays on the line (a survey follows)."""
    return await Talk(svc, record, queue, settings, customer, party, wait, expect_call, caller_id,
                      keep_caller).run()


class Talk:
    """One conversation's state and its loop (consultation.py acts on it too)."""

    def __init__(self, svc: QueueServices, record: Record, queue: str, settings: QueueSettings,
                 customer: CallHandle, party: Party, wait: float, expect_call: str, caller_id: str,
                 keep_caller: bool = False):
        self.svc, self.record, self.queue, self.settings = svc, record, queue, settings
        self.customer, self.party, self.wait, self.expect_call = customer, party, wait, expect_call
        self.caller_id = caller_id
        self.keep_caller = keep_caller
        self.hold_music = svc.prompts.path(settings.hold_prompt)
        self.held = False
        self.muted = False
        self.consult: Consultation | None = None
        self.blind: Target | None = None  # a blind transfer to ring, once its command is answered
        self.handoff: Handoff | None = None  # a blind transfer to a queue

    def emit(self, event: ev.Event) -> None:
        self.record.emit(event)

    # ------------------------------------------------------------------ the loop
    async def run(self) -> Handoff | None:
        with contextlib.suppress(CallEnded, MediaError):
            await self.customer.bridge(self.party.leg)
        inbox = self.record.inbox
        nxt: asyncio.Task[tuple[cmd.Command, asyncio.Future[cmd.Result]]] | None = None
        try:
            while True:
                watch: dict[asyncio.Future[Any], str] = {
                    asyncio.create_task(self.customer.ended.wait()): "customer",
                    asyncio.create_task(self.party.leg.ended.wait()): "party",
                }
                c = self.consult
                if c is not None and c.ringing is not None:
                    watch[c.ringing] = "ringing"
                if c is not None and c.leg is not None:
                    watch[asyncio.create_task(c.leg.ended.wait())] = "target"
                if inbox is not None:
                    nxt = nxt or asyncio.create_task(inbox.next())
                    watch[nxt] = "command"
                done, _ = await asyncio.wait(watch, return_when=asyncio.FIRST_COMPLETED)
                for t, what in watch.items():
                    if what in ("customer", "party", "target") and t not in done:
                        t.cancel()
                fired = {watch[t] for t in done}
                if "customer" in fired:
                    await self._finish(agent_first=False)
                    return None
                if "party" in fired:
                    if self.consult is None or self.consult.leg is None:
                        await self._finish(agent_first=True)
                        return None
                    await consultation.complete(self)  # the agent hung up on a consultation: the transfer completes
                    continue
                if "ringing" in fired:
                    await consultation.target_rang(self)
                if "target" in fired:
                    await consultation.target_left(self)
                if "command" in fired and nxt is not None:
                    command, answer = nxt.result()
                    nxt = None
                    try:
                        result = await self._command(command)
                    except (CallEnded, MediaError) as exc:
                        result = cmd.refused("gone", f"the call ended while acting on {command.NAME}: {exc}")
                    if not answer.done():  # its sender may have stopped waiting
                        answer.set_result(result)
                    if self.blind is not None:
                        return await self._blind_transfer(self.blind)
                    if self.handoff is not None:
                        return self.handoff
        finally:
            if nxt is not None and nxt.done() and not nxt.cancelled():  # taken, never acted on
                _command, answer = nxt.result()
                if not answer.done():
                    answer.set_result(cmd.refused("gone", "the call has ended"))
            elif nxt is not None:
                nxt.cancel()
            await consultation.drop(self)

    # ------------------------------------------------------------------ commands
    async def _command(self, c: cmd.Command) -> cmd.Result:
        state = self._state()
        if isinstance(c, cmd.Hold) and state == "connected":
            await self.customer.unbridge(self.party.leg, music=self.hold_music)  # the agent hears silence
            self.held = True
            return cmd.DONE
        if isinstance(c, cmd.Resume) and state == "held":
            await self.customer.bridge(self.party.leg)  # stops the hold music
            self.held = False
            return cmd.DONE
        if isinstance(c, cmd.Hangup) and c.leg == "agent":
            await self.party.leg.hangup()
            return cmd.DONE
        if isinstance(c, cmd.Mute | cmd.Unmute):
            on = isinstance(c, cmd.Mute)
            if self.muted == on:
                return cmd.refused("state", f"the agent is {'already' if on else 'not'} muted", state)
            await self.party.leg.mute(on)
            self.muted = on
            return cmd.DONE
        if isinstance(c, cmd.Transfer) and state in ("connected", "held"):
            return await self._start_blind(c)
        if isinstance(c, cmd.Consult) and state in ("connected", "held"):
            return await consultation.start(self, c)
        if isinstance(c, cmd.CancelConsult) and state == "consulting":
            await consultation.cancel(self)
            return cmd.DONE
        if isinstance(c, cmd.CompleteTransfer | cmd.Conference) and state in ("consulting", "conferenced"):
            if self.consult is None or self.consult.leg is None:
                return cmd.refused("state", "the target has not answered yet", state)
            if isinstance(c, cmd.Conference):
                if state == "conferenced":
                    return cmd.refused("state", "the call is a conference already", state)
                await consultation.conference(self)
            else:
                await consultation.complete(self)
            return cmd.DONE
        if isinstance(c, cmd.LeaveConference) and state == "conferenced":
            if c.leg == "agent":
                await consultation.complete(self)
            else:
                await consultation.drop_target(self)
            return cmd.DONE
        if isinstance(c, cmd.SendDtmf):
            return await self._dtmf(c, state)
        return cmd.refused("state", f"{c.NAME} is not possible while the call is {state}", state)

    def _state(self) -> str:
        if self.consult is not None:
            return "conferenced" if self.consult.conference_at else "consulting"
        return "held" if self.held else "connected"

    async def _dtmf(self, c: cmd.SendDtmf, state: str) -> cmd.Result:
        leg: CallHandle | None = self.customer
        if c.leg == "target":
            leg = self.consult.leg if self.consult is not None else (
                self.party.leg if self.party.agent_id is None else None)
        if leg is None:
            return cmd.refused("state", "there is no outside party on the call to send keys to", state, "leg")
        try:
            await leg.send_dtmf(c.digits)
        except MediaError as exc:
            return cmd.refused("invalid", str(exc), state, "digits")
        return cmd.DONE

    # ------------------------------------------------------------------ blind transfer
    async def _start_blind(self, c: cmd.Transfer) -> cmd.Result:
        try:
            target = await transfer.resolve(self.svc, c.kind, c.target, call_id=self.expect_call,
                                            ring_timeout=self.settings.ring_timeout + 5,
                                            current_agent=self.party.agent_id)
        except Refused as exc:
            return exc.result
        now = time.time()
        talk = now - self.party.connected_at
        self.emit(ev.BlindTransfer(interaction=self.record.interaction, queue=self.queue,
                                   agent_id=self.party.agent_id, kind=c.kind, target=c.target,
                                   to_agent_id=target.agent_id, talk=round(talk, 3)))
        await self.customer.start_play(self.hold_music, loop=True)  # until the target answers
        await self.end_party(self.party, talk)
        if target.kind == "queue":
            self.handoff = Handoff(target.name)
        else:
            self.blind = target
        return cmd.DONE

    async def _blind_transfer(self, target: Target) -> Handoff | None:
        """Ring the target; the caller hears the hold music meanwhile, and goes back to their queue
        if it does not answer."""
        offered = time.time()
        if target.agent_id is not None:
            self.emit(ev.Offer(interaction=self.record.interaction, queue=self.queue, agents=[target.agent_id]))
        try:
            leg = await self._ring(target, self.settings.ring_timeout if target.agent_id else TRANSFER_RING)
        except CallEnded:  # the caller hung up while the target rang
            await agent_step(self.svc, target.agent_id, "release", self.expect_call)
            return None
        except OriginateFailed as exc:
            if target.agent_id is not None:
                self.emit(ev.RingNoAnswer(interaction=self.record.interaction, queue=self.queue,
                                          agent_id=target.agent_id, ring=round(time.time() - offered, 3),
                                          cause=exc.cause, code=exc.code))
                await agent_step(self.svc, target.agent_id, "ring_no_answer", self.expect_call)
            return Handoff(self.queue)
        now = time.time()
        if target.agent_id is not None:
            await agent_step(self.svc, target.agent_id, "connect", self.expect_call)
            self.emit(ev.Connect(interaction=self.record.interaction, queue=self.queue, agent_id=target.agent_id,
                                 at=now, wait=round(self.wait, 3), ring=round(now - offered, 3),
                                 agent_call=leg.call_id))
        else:
            self.emit(ev.PartyConnect(interaction=self.record.interaction, queue=self.queue, kind=target.kind,
                                      target=target.name, party_call=leg.call_id))
        return await converse(self.svc, self.record, self.queue, self.settings, self.customer,
                              Party.reached(leg, target, now), self.wait,
                              self.expect_call, self.caller_id, self.keep_caller)

    async def _ring(self, target: Target, timeout: float) -> CallHandle:
        """The target's leg once answered; OriginateFailed if it is not, or if the caller hangs up."""
        ringing = asyncio.create_task(self.customer.originate(target.uri, timeout=timeout, caller_id=self.caller_id))
        gone = asyncio.create_task(self.customer.ended.wait())
        try:
            await asyncio.wait({ringing, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if not ringing.done():
            ringing.cancel()
            with contextlib.suppress(asyncio.CancelledError, OriginateFailed):
                late = await ringing
                await late.hangup()
            raise CallEnded(self.customer.hangup_event)  # type: ignore[arg-type]
        return ringing.result()

    def hand_over(self, leg: CallHandle, target: Target, at: float) -> Party:
        """The caller talks to ``target`` now (an attended transfer); returns whom they talked to."""
        old, self.party = self.party, Party.reached(leg, target, at)
        return old

    # ------------------------------------------------------------------ the end
    async def _finish(self, agent_first: bool) -> None:
        talk = time.time() - self.party.connected_at
        complete = ev.CompleteAgent if agent_first else ev.CompleteCaller
        self.emit(complete(interaction=self.record.interaction, queue=self.queue, agent_id=self.party.agent_id,
                           wait=round(self.wait, 3), talk=round(talk, 3)))
        await consultation.drop(self)
        if not (agent_first and self.keep_caller):
            await self.customer.hangup()
        await self.end_party(self.party, talk)

    async def end_party(self, party: Party, talk: float) -> None:
        """Hang up a party's leg; an agent goes to wrap-up and their time counts in the queue's AHT."""
        await party.leg.hangup()
        if party.agent_id is None:
            return
        await agent_step(self.svc, party.agent_id, "end_call", self.expect_call, self.settings.wrap_up)
        redis = self.svc.waiting.redis
        await redis.hset(AHT_KEY, self.queue,
                         repr(update_aht(await aht(redis, self.queue), talk + self.settings.wrap_up)))


async def aht(redis: aioredis.Redis, queue: str) -> float | None:
    """The queue's average handle time (docs/metrics.md), None before its first completed call."""
    raw = await redis.hget(AHT_KEY, queue)
    return float(raw) if raw is not None else None
