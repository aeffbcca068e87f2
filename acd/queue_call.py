"""One caller's time in a queue: enter (or be refused), hold with music and announcements, be offered
to agents, be bridged to the one who answers, or leave (hang up, exit key, timeout) with the cause
logged. Drives the call only through media.client.CallHandle.

Every step is an event of the call's interaction (bus/events.py, names after Asterisk's queue_log):
ENTERQUEUE, OFFER, CONNECT (wait, ring time), RINGNOANSWER, ABANDON (position, wait), EXITWITHTIMEOUT,
EXITWITHKEY, EXITEMPTY (no agents), FULL, COMPLETEAGENT / COMPLETECALLER (wait, talk time).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any

from acd.agent_state import InvalidTransition
from acd.agent_store import Conflict
from acd.conversation import Handoff, Party, Record, aht, converse
from acd.distributor import CallInfo, Offer
from acd.ewt import announce_minutes, ewt
from acd.models import Overflow, QueueSettings
from acd.services import QueueServices
from bus import commands as cmd
from bus import events as ev
from bus.redis import REDIS_DOWN
from ivr.script import CallScript
from media.client import CallEnded, CallHandle, OriginateFailed

log = logging.getLogger("acd.queue_call")

# How long an offer may take from the decision to this call's flow (one Redis publish).
CLAIMED_OFFER_WAIT = 3.0
CALLBACK_CONFIRM_PROMPT = "callback_confirm"
# How often a waiting caller's flow checks that someone is still logged in to the queue.
EMPTY_CHECK = 5.0


@dataclass(frozen=True)
class QueueResult:
    outcome: str  # connected | abandoned | exited | callback | transferred
    cause: str = ""  # exits: timeout | no_agents | full | key | no_queue
    agent_id: int | None = None
    overflow: Overflow | None = None
    transfer_to: str = ""  # transferred: the queue the caller goes to next


@dataclass
class _Wait:
    call: CallHandle
    queue: str
    settings: QueueSettings
    enqueued_at: float
    record: Record
    svc: QueueServices
    caller_id: str = ""
    callback_uri: str = ""
    keep: bool = False  # the call stays queued after the flow ends (a callback was requested)
    keep_caller: bool = False  # the caller stays on the line when the agent hangs up (a survey follows)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)


async def run_queue(call: CallHandle, svc: QueueServices, queue: str, record: Record, *, priority: int = 0,
                    skills: dict[str, int] | None = None, caller_id: str = "", callback_uri: str = "",
                    interaction: str = "", keep_caller: bool = False) -> QueueResult:
    settings = await svc.directory.settings(queue)
    if settings is None:
        log.error("call %s sent to unknown queue %r", call.call_id, queue)
        return QueueResult("exited", "no_queue", overflow=Overflow())
    if settings.no_agents == "exit" and (await svc.directory.staffing(queue)).logged_in == 0:
        record.emit(ev.ExitEmpty(interaction=record.interaction, queue=queue))
        return QueueResult("exited", "no_agents", overflow=settings.overflow)
    if await svc.waiting.size(queue) >= settings.max_callers:
        record.emit(ev.QueueFull(interaction=record.interaction, queue=queue, max_callers=settings.max_callers))
        return QueueResult("exited", "full", overflow=settings.overflow)

    await call.answer(wait=False)
    now = time.time()
    w = _Wait(call, queue, settings, now, record, svc, caller_id, callback_uri, keep_caller=keep_caller)
    offers = svc.offers.open(call.call_id)
    try:
        await svc.distributor.put_call(call.call_id, CallInfo(queue, now, priority, skills or {}, svc.node,
                                                              interaction))
        position = await svc.waiting.enqueue(queue, call.call_id, priority, now)
        record.emit(ev.EnterQueue(interaction=record.interaction, queue=queue, at=now, position=position,
                                  priority=priority, skills=skills or {}))
        await script(call, svc, record).music(settings.hold_prompt)
        await svc.distributor.decide_for(queue, call.call_id, settings)
        return await _wait_loop(w, offers)
    except CallEnded:
        return await _abandon(w)
    finally:
        for t in w.tasks:
            t.cancel()
        for late in svc.offers.close(call.call_id):  # crossed the callback request: the runner takes it
            svc.offers.deliver_unclaimed(late)
        if not w.keep:
            await svc.distributor.drop_call(call.call_id)


async def _abandon(w: _Wait) -> QueueResult:
    position = await w.svc.waiting.remove(w.queue, w.call.call_id)
    w.record.emit(ev.Abandon(interaction=w.record.interaction, queue=w.queue, position=position,
                             wait=round(time.time() - w.enqueued_at, 3)))
    return QueueResult("abandoned")


async def _leave(w: _Wait, kind: type[ev.ExitWithKey | ev.ExitWithTimeout | ev.ExitEmpty], cause: str,
                 **data: Any) -> QueueResult | None:
    """Take the call out of the queue; None if it is no longer there (an offer is on its way)."""
    position = await w.svc.waiting.remove(w.queue, w.call.call_id)
    if position is None:
        return None
    w.record.emit(kind(interaction=w.record.interaction, queue=w.queue, cause=cause, position=position,
                       wait=round(time.time() - w.enqueued_at, 3), **data))
    with contextlib.suppress(CallEnded):
        await w.call.stop_play()
    return QueueResult("exited", cause, overflow=w.settings.overflow)


async def _wait_loop(w: _Wait, offers: asyncio.Queue[Offer]) -> QueueResult:
    s = w.settings
    key_task: asyncio.Task[str] | None = None
    keys = s.exit_key + (s.callback_key if w.callback_uri and w.svc.originate else "")
    if keys:
        key_task = asyncio.create_task(w.call.next_digit(keys))
        w.tasks.append(key_task)
    next_announce = time.time() + s.announce_every if s.announce_every else None
    while True:
        deadline = w.enqueued_at + s.max_wait
        wake = min(t for t in (deadline, next_announce, time.time() + EMPTY_CHECK) if t is not None)
        offer_task = asyncio.create_task(offers.get())
        ended = asyncio.create_task(w.call.ended.wait())
        waits: set[asyncio.Task[Any]] = {offer_task, ended} | ({key_task} if key_task else set())
        done, _ = await asyncio.wait(waits, timeout=max(0.0, wake - time.time()),
                                     return_when=asyncio.FIRST_COMPLETED)
        ended.cancel()
        if offer_task not in done:
            offer_task.cancel()
        if w.call.ended.is_set():
            if offer_task in done:  # an offer crossed the hang-up: free its agents
                await _release_all(w, offer_task.result())
            raise CallEnded(w.call.hangup_event)  # type: ignore[arg-type]
        if offer_task in done:
            result = await _offer(w, offer_task.result())
            if result is not None:
                return result
            continue
        left: QueueResult | None
        if key_task is not None and key_task in done:
            key = key_task.result()
            key_task = None
            if key == s.callback_key:
                left = await _request_callback(w, cause="key")
            else:
                left = await _leave(w, ev.ExitWithKey, "key", key=key)
        elif time.time() >= deadline:
            if s.overflow.kind == "callback" and w.callback_uri and w.svc.originate:
                # overflow to a callback: the caller keeps the place they waited for
                w.record.emit(ev.ExitWithTimeout(interaction=w.record.interaction, queue=w.queue,
                                                 wait=round(time.time() - w.enqueued_at, 3), to="callback"))
                left = await _request_callback(w, cause="timeout")
            else:
                left = await _leave(w, ev.ExitWithTimeout, "timeout")
        elif s.no_agents == "exit" and await _all_logged_out(w):
            # every member logged out while the caller waited (Asterisk's leavewhenempty)
            left = await _leave(w, ev.ExitEmpty, "no_agents")
        else:
            if next_announce is not None and time.time() >= next_announce:
                try:
                    await _announce(w)
                except REDIS_DOWN as exc:  # the caller keeps the hold music and their place
                    log.warning("announcement for %s skipped: %s", w.call.call_id, exc)
                next_announce = time.time() + s.announce_every
            continue
        if left is not None:
            return left
        # The call had just been claimed for an offer: the offer wins over the exit.
        try:
            claimed = await asyncio.wait_for(offers.get(), CLAIMED_OFFER_WAIT)
        except TimeoutError:
            w.record.emit(ev.ExitWithTimeout(interaction=w.record.interaction, queue=w.queue, cause="offer_lost"))
            return QueueResult("exited", "timeout", overflow=s.overflow)
        result = await _offer(w, claimed)
        if result is not None:
            return result


async def _request_callback(w: _Wait, cause: str) -> QueueResult | None:
    """Virtual hold: the caller keeps their place in the queue and hangs up; when they reach the
    front, acd/callback.py reserves an agent and calls them back. None if an offer got there first."""
    position = await w.svc.waiting.position(w.queue, w.call.call_id)
    info = await w.svc.distributor.call_info(w.call.call_id)
    if position is None or info is None:
        return None
    await w.svc.distributor.put_call(w.call.call_id, replace(info, callback_uri=w.callback_uri))
    w.keep = True
    w.record.emit(ev.CallbackRequested(interaction=w.record.interaction, queue=w.queue, position=position,
                                       wait=round(time.time() - w.enqueued_at, 3), uri=w.callback_uri, cause=cause))
    with contextlib.suppress(CallEnded):
        await script(w.call, w.svc, w.record).play(CALLBACK_CONFIRM_PROMPT)  # in place of the hold music
        await w.call.hangup()
    return QueueResult("callback")


async def request_callback(call: CallHandle, svc: QueueServices, queue: str, record: Record, *, priority: int = 0,
                           skills: dict[str, int] | None = None, callback_uri: str, interaction: str,
                           prompt: str = CALLBACK_CONFIRM_PROMPT) -> bool:
    """A callback asked for before queueing (the IVR's after-hours choice): the caller takes a place
    in ``queue`` without waiting on the line, hears ``prompt`` and is hung up; acd/callback.py calls
    them back when the place reaches an agent. False if the queue does not exist or cannot call back."""
    settings = await svc.directory.settings(queue)
    if settings is None or not callback_uri or svc.originate is None:
        return False
    now = time.time()
    await svc.distributor.put_call(call.call_id, CallInfo(queue, now, priority, skills or {}, svc.node, interaction,
                                                          callback_uri=callback_uri))
    position = await svc.waiting.enqueue(queue, call.call_id, priority, now)
    record.emit(ev.EnterQueue(interaction=record.interaction, queue=queue, at=now, position=position,
                              priority=priority, skills=skills or {}))
    record.emit(ev.CallbackRequested(interaction=record.interaction, queue=queue, position=position, wait=0.0,
                                     uri=callback_uri, cause="ivr"))
    with contextlib.suppress(CallEnded):
        await script(call, svc, record).play(prompt)
        await call.hangup()
    await svc.distributor.decide_for(queue, call.call_id, settings)
    return True


def script(call: CallHandle, svc: QueueServices, record: Record) -> CallScript:
    """The call-script API (ivr/script.py) on a queued call: its prompts, its interaction's events."""
    return CallScript(call, svc.prompts, record.emit, record.interaction)


async def _all_logged_out(w: _Wait) -> bool:
    """Every member left while the caller waited? While Redis is away nobody can tell, and the
    caller keeps waiting: their place is in Redis, and routing resumes when it is back."""
    try:
        return (await w.svc.directory.staffing(w.queue)).logged_in == 0
    except REDIS_DOWN as exc:
        log.warning("queue %s: staffing unknown (%s); %s keeps waiting", w.queue, exc, w.call.call_id)
        return False


async def _announce(w: _Wait) -> None:
    """Position and estimated wait, then back to the hold music."""
    position = await w.svc.waiting.position(w.queue, w.call.call_id)
    if position is None:
        return
    staff = await w.svc.directory.staffing(w.queue)
    minutes = announce_minutes(ewt(position, await aht(w.svc.waiting.redis, w.queue), staff.staffed, staff.idle))
    text = f"You are caller number {position} in line."
    if minutes == 0:
        text += " Your expected wait is less than a minute."
    elif minutes is not None:
        text += f" Your expected wait is about {minutes} minute{'s' if minutes > 1 else ''}."
    w.record.emit(ev.Announce(interaction=w.record.interaction, queue=w.queue, position=position,
                              ewt_minutes=minutes))
    s = script(w.call, w.svc, w.record)
    await s.speak(text)  # in place of the hold music, which comes back after it
    await s.music(w.settings.hold_prompt)


async def _release_all(w: _Wait, offer: Offer) -> None:
    for aid in offer.agents:
        with contextlib.suppress(InvalidTransition, Conflict):
            await w.svc.agents.transition(aid, "release", expect_call=w.call.call_id)


async def _offer(w: _Wait, offer: Offer) -> QueueResult | None:
    """Ring the reserved agent(s); bridge the first to answer. None: back to waiting (requeued)."""
    svc, s = w.svc, w.settings
    offered_at = time.time()
    w.record.emit(ev.Offer(interaction=w.record.interaction, queue=w.queue, at=offered_at,
                           agents=list(offer.agents)))
    legs: dict[asyncio.Task[Any], int] = {}
    for aid in offer.agents:
        uri = await svc.device_uri(aid)
        if uri is None:
            w.record.emit(ev.RingNoAnswer(interaction=w.record.interaction, queue=w.queue, agent_id=aid,
                                          cause="no_device"))
            await _missed(w, aid)
            continue
        legs[asyncio.create_task(w.call.originate(uri, timeout=s.ring_timeout, caller_id=w.caller_id))] = aid
    leg: CallHandle | None = None
    agent_id: int | None = None
    ended: asyncio.Task[Any] = asyncio.create_task(w.call.ended.wait())
    pending: set[asyncio.Task[Any]] = set(legs)
    inbox = w.record.inbox
    nxt: asyncio.Task[Any] | None = None
    try:
        while pending and leg is None:
            if inbox is not None and nxt is None:
                nxt = asyncio.create_task(inbox.next())
            done, pending = await asyncio.wait(pending | {ended} | ({nxt} if nxt else set()),
                                               return_when=asyncio.FIRST_COMPLETED)
            pending -= {ended, nxt}
            for t in done:
                if t is ended:
                    continue
                if t is nxt:
                    nxt = None
                    command, answer = t.result()
                    result = await _rejected(w, command, legs, pending, offered_at)
                    if not answer.done():  # its sender may have stopped waiting
                        answer.set_result(result)
                    continue
                aid = legs[t]
                try:
                    answered: CallHandle = t.result()
                except OriginateFailed as exc:
                    w.record.emit(ev.RingNoAnswer(interaction=w.record.interaction, queue=w.queue, agent_id=aid,
                                                  ring=round(time.time() - offered_at, 3), cause=exc.cause,
                                                  code=exc.code))
                    await _missed(w, aid)
                    continue
                if leg is None:
                    leg, agent_id = answered, aid
                else:  # ring-all: a second phone answered in the same instant
                    await answered.hangup()
                    await _release(w, aid)
            if w.call.ended.is_set():
                break
    finally:
        ended.cancel()
        if nxt is not None:
            nxt.cancel()
        for t in pending:
            t.cancel()  # stops those phones ringing (MediaClient hangs the leg up)
        for t in pending:
            await _stop_ringing(t)
            await _release(w, legs[t])
    if w.call.ended.is_set():
        if leg is not None and agent_id is not None:
            await leg.hangup()
            await _release(w, agent_id)
        raise CallEnded(w.call.hangup_event)  # type: ignore[arg-type]
    if leg is None or agent_id is None:
        await svc.waiting.requeue(offer.head)  # back at its place: a missed offer costs no place
        await svc.distributor.decide_for(w.queue, w.call.call_id, s)
        return None
    return await _connected(w, leg, agent_id, offered_at)


async def _rejected(w: _Wait, command: cmd.Command, legs: dict[asyncio.Task[Any], int],
                    pending: set[asyncio.Task[Any]], offered_at: float) -> cmd.Result:
    """A command while agents' phones ring: RejectOffer stops the ringing of the agent named (all of
    them if none is), as a missed offer; the call is offered again at once, at its place."""
    if not isinstance(command, cmd.RejectOffer):
        return cmd.refused("state", f"{command.NAME} is not possible while the call is offered", "offering")
    targets = [t for t in pending if command.agent_id in (None, legs[t])]
    if not targets:
        return cmd.refused("state", f"agent {command.agent_id} is not being offered this call", "offering")
    for t in targets:
        pending.discard(t)
        await _stop_ringing(t)
        w.record.emit(ev.RingNoAnswer(interaction=w.record.interaction, queue=w.queue, agent_id=legs[t],
                                      ring=round(time.time() - offered_at, 3), cause="rejected"))
        await _missed(w, legs[t])
    return cmd.DONE


async def _stop_ringing(ringing: asyncio.Task[Any]) -> None:
    """Cancel an agent leg's originate (its phone stops ringing); hang up one answered meanwhile."""
    ringing.cancel()
    try:
        late: CallHandle | None = await ringing
    except (asyncio.CancelledError, OriginateFailed):
        late = None
    if late is not None:
        await late.hangup()


async def _missed(w: _Wait, aid: int) -> None:
    with contextlib.suppress(InvalidTransition, Conflict):
        await w.svc.agents.transition(aid, "ring_no_answer", expect_call=w.call.call_id)


async def _release(w: _Wait, aid: int) -> None:
    with contextlib.suppress(InvalidTransition, Conflict):
        await w.svc.agents.transition(aid, "release", expect_call=w.call.call_id)


async def _connected(w: _Wait, leg: CallHandle, agent_id: int, offered_at: float) -> QueueResult:
    now = time.time()
    try:
        await w.svc.agents.transition(agent_id, "connect", expect_call=w.call.call_id)
    except (InvalidTransition, Conflict) as exc:
        # The reservation was taken back (reconciler): still connect the caller, the agent is there.
        log.warning("agent %s answered call %s after its reservation ended: %s", agent_id, w.call.call_id, exc)
    w.record.emit(ev.Connect(interaction=w.record.interaction, queue=w.queue, agent_id=agent_id, at=now,
                             wait=round(now - w.enqueued_at, 3), ring=round(now - offered_at, 3),
                             agent_call=leg.call_id))
    # converse bridges the two legs, which stops the hold music
    handoff = await converse(w.svc, w.record, w.queue, w.settings, w.call, Party(leg, agent_id, now),
                             now - w.enqueued_at, expect_call=w.call.call_id, caller_id=w.caller_id,
                             keep_caller=w.keep_caller)
    if isinstance(handoff, Handoff):
        return QueueResult("transferred", agent_id=agent_id, transfer_to=handoff.queue)
    return QueueResult("connected", agent_id=agent_id)
