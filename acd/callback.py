"""Queue callback (virtual hold): the caller pressed the callback key and hung up but kept their place
(acd/queue_call.py). When the distributor offers that place to an agent, any node may run it:

    reserve agent -> ring the agent (ring timeout) -> agent answers -> call the customer back
    -> customer answers -> bridge (CONNECT, then COMPLETEAGENT / COMPLETECALLER)

An attempt the customer doesn't answer ends the agent's call at once (no wrap-up) and the customer's
place comes back after the queue's interval, for its number of attempts; each outcome is logged
(CALLBACK_ATTEMPT, CALLBACK_NOANSWER, CALLBACK_FAILED). An agent who doesn't answer is a missed offer
like any other (RINGNOANSWER); the place is put back at once.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field, replace
from typing import cast

from acd.agent_state import InvalidTransition, Params
from acd.agent_store import Conflict
from acd.conversation import Party, Record, converse
from acd.distributor import CallInfo, Offer
from acd.services import QueueServices
from bus import events as ev
from bus.keys import CALLBACK_CLAIM_KEY, CALLBACKS_DUE, WAITING_KEY
from media.client import OriginateFailed

log = logging.getLogger("acd.callback")



@dataclass
class CallbackRunner:
    svc: QueueServices
    running: set[str] = field(default_factory=set)  # callbacks this node is running (their agents are busy)

    async def handle(self, offer: Offer) -> None:
        """An offer no flow waited for: run it if it is a callback (else it was another node's)."""
        svc = self.svc
        info = await svc.distributor.call_info(offer.call_id)
        if info is None or not info.callback_uri or svc.originate is None or svc.record_for is None:
            return
        claim = CALLBACK_CLAIM_KEY.format(call_id=offer.call_id)
        if not await svc.waiting.redis.set(claim, svc.node, nx=True, ex=600):
            return
        self.running.add(offer.call_id)
        try:
            # This node now holds the callback: the reconciler asks this node whether the agent's call lives.
            info = replace(info, node=svc.node)
            await svc.distributor.put_call(offer.call_id, info)
            await self._attempt(offer, info, svc.record_for(info.interaction))
        finally:
            self.running.discard(offer.call_id)
            await svc.waiting.redis.delete(claim)

    async def _attempt(self, offer: Offer, info: CallInfo, record: Record) -> None:
        svc = self.svc
        settings = await svc.directory.settings(info.queue)
        agent_id, *others = offer.agents
        for other in others:  # ring-all: a callback goes to one agent
            await self._agent(other, "release", offer.call_id)
        if settings is None:
            await self._agent(agent_id, "release", offer.call_id)
            await svc.distributor.drop_call(offer.call_id)
            return
        attempt = info.attempts + 1
        queue = info.queue
        record.emit(ev.CallbackAttempt(interaction=record.interaction, queue=queue, agent_id=agent_id, attempt=attempt))
        uri = await svc.device_uri(agent_id)
        assert svc.originate is not None
        started = time.time()
        try:
            if uri is None:
                raise OriginateFailed("no_device")
            # the agent's phone shows whom the call is for
            agent_leg = await svc.originate(uri, settings.ring_timeout, _number(info.callback_uri))
        except OriginateFailed as exc:
            record.emit(ev.RingNoAnswer(interaction=record.interaction, queue=queue, agent_id=agent_id,
                                        ring=round(time.time() - started, 3), cause=exc.cause, code=exc.code))
            await self._agent(agent_id, "ring_no_answer", offer.call_id)
            await svc.waiting.requeue(offer.head)
            return
        await self._agent(agent_id, "connect", offer.call_id)
        try:
            customer = await agent_leg.originate(info.callback_uri, timeout=settings.callback_ring_timeout)
        except OriginateFailed as exc:
            await agent_leg.hangup()
            with contextlib.suppress(InvalidTransition, Conflict):
                await svc.agents.transition(agent_id, "end_call", Params(wrap_up=0), expect_call=offer.call_id)
            if attempt < settings.callback_retries:
                record.emit(ev.CallbackNoAnswer(interaction=record.interaction, queue=queue, agent_id=agent_id,
                                                attempt=attempt, cause=exc.cause, code=exc.code,
                                                retry_in=settings.callback_interval))
                await svc.distributor.put_call(offer.call_id, replace(info, attempts=attempt))
                await svc.waiting.redis.zadd(CALLBACKS_DUE, {offer.call_id: time.time() + settings.callback_interval})
            else:
                record.emit(ev.CallbackFailed(interaction=record.interaction, queue=queue, agent_id=agent_id,
                                              attempt=attempt, cause=exc.cause, code=exc.code))
                await svc.distributor.drop_call(offer.call_id)
            return
        now = time.time()
        wait = now - info.enqueued_at
        record.emit(ev.Connect(interaction=record.interaction, queue=queue, agent_id=agent_id, at=now,
                               wait=round(wait, 3), callback=True, attempt=attempt, agent_call=agent_leg.call_id))
        await converse(svc, record, queue, settings, customer, Party(agent_leg, agent_id, now), wait,
                       expect_call=offer.call_id)
        await svc.distributor.drop_call(offer.call_id)

    async def _agent(self, agent_id: int, event: str, call_id: str) -> None:
        with contextlib.suppress(InvalidTransition, Conflict):
            await self.svc.agents.transition(agent_id, event, expect_call=call_id)

    async def requeue_due(self, now: float | None = None) -> int:
        """Put back in their queues the callbacks whose retry interval has passed."""
        redis = self.svc.waiting.redis
        now = time.time() if now is None else now
        due = cast(list[bytes], await redis.zrangebyscore(CALLBACKS_DUE, "-inf", now))
        for raw in due:
            call_id = raw.decode()
            if not await redis.zrem(CALLBACKS_DUE, call_id):
                continue  # another node took it
            info = await self.svc.distributor.call_info(call_id)
            if info is not None:
                await redis.zadd(WAITING_KEY.format(queue=info.queue), {call_id: info.key}, nx=True)
        return len(due)



def _number(uri: str) -> str:
    """The user part of a SIP URI (sip:+15550100@host -> +15550100)."""
    return uri.split(":", 1)[-1].split("@", 1)[0]
