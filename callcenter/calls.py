"""Call routing in the control plane: every media event of a call becomes a call event of its
interaction (bus/events.py, through the notifier), and each arriving call runs the dial-plan flow
its dialed number selects."""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg

from acd.overflow import queue_flow
from bus import events as ev
from bus.notifier import Notifier
from callcenter.dialplan import BridgeRoute, DialPlan, FlowRoute, GreetingRoute, LoopRoute, QueueRoute
from callcenter.ivr_queues import AcdQueues
from callcenter.phones import to_e164
from callcenter.prompts import PromptSet
from callcenter.sessions import SessionTracker
from ivr import flows
from ivr.context import CallContext
from ivr.engine import FlowRun
from ivr.script import CallScript
from ivr.services import Crm, IvrServices
from media import protocol as mp
from media.client import CallHandle, MediaClient

log = logging.getLogger("callcenter.calls")

if TYPE_CHECKING:
    from callcenter.acd_node import AcdNode
    from callcenter.flow_library import FlowLibrary

LOOKUP_TIMEOUT = 1.5  # seconds a database read on a call's path may take (acquiring a connection included)


class CallRouter:
    def __init__(self, client: MediaClient, notifier: Notifier, sessions: SessionTracker, plan: DialPlan,
                 prompts: PromptSet, pool: asyncpg.Pool | None, default_region: str = "US", acd: AcdNode | None = None,
                 voicemail_dir: Path = Path("var/voicemail"), callback_uri: str = "",
                 flows: FlowLibrary | None = None, crm: Crm | None = None):
        self.client = client
        self.flows = flows  # the IVR's flows (FlowRoute)
        self.crm = crm
        self.speech = False  # a speech service runs: the IVR's menus with phrases listen
        self.sessions = sessions  # the session of each call this node runs, by its media call too
        self.acd = acd
        self.voicemail_dir = voicemail_dir
        self.callback_uri = callback_uri  # template with {number}; "" = the caller's From URI
        self.notifier = notifier
        self.plan = plan
        self.prompts = prompts
        self.pool = pool
        self.default_region = default_region
        client.listeners.append(self.on_event)
        client.originate_listeners.append(self.on_originate)

    # ------------------------------------------------------------------ the record
    def on_event(self, me: mp.Event, handle: CallHandle | None) -> None:
        """A media event of one of this node's calls, as the call event of its interaction."""
        if handle is None:
            return
        if isinstance(me, mp.CallArrived):
            self._arrived(me, handle)
            return
        session = self.sessions.for_call(handle.root.call_id)
        if session is None:
            return
        leg = handle is not handle.root
        base: dict[str, Any] = {"interaction": session.interaction, "at": me.at, "call": me.call_id if leg else ""}
        e: ev.CallEvent | None = None
        if isinstance(me, mp.Answered):
            e = ev.DialAnswered(**base) if leg else ev.CallAnswered(**base)
        elif isinstance(me, mp.Ringing):
            e = ev.DialRinging(**base)
        elif isinstance(me, mp.Digit):  # a secret (a PIN) being keyed is never in the record
            hidden = handle.root.masked or handle.root.hide_keys and not leg
            e = ev.Dtmf(digit="*" if hidden else me.digit, method=me.method, **base)
        elif isinstance(me, mp.DigitsCollected):
            e = ev.DigitsCollected(digits="*" * len(me.digits) if handle.root.masked else me.digits,
                                   reason=me.reason, **base)
        elif isinstance(me, mp.PromptFinished):
            e = ev.PromptPlayed(prompt=me.path.rsplit("/", 1)[-1], reason=me.reason, digit=me.digit,
                                started=me.started, **base)
        elif isinstance(me, mp.Bridged):
            e = ev.Bridged(other=me.other_call_id, **base)
        elif isinstance(me, mp.Unbridged):
            e = ev.Unbridged(other=me.other_call_id, **base)
        elif isinstance(me, mp.TransferResult):
            e = ev.SipTransfer(code=me.code, final=me.final, **base)
        elif isinstance(me, mp.CommandFailed):
            e = ev.MediaError(command=me.command, error=me.error, **base)
        elif isinstance(me, mp.HungUp):
            if leg:
                e = ev.DialEnded(cause=me.cause, code=me.code, side=me.side, **base)
            else:
                e = ev.Hangup(cause=me.cause, code=me.code, side=me.side, **base)
        if e is not None:
            self.notifier.emit(e)

    def on_originate(self, leg: CallHandle) -> None:
        session = self.sessions.for_call(leg.root.call_id)
        if session is not None:
            self.notifier.emit(ev.Dial(interaction=session.interaction, call=leg.call_id, uri=leg.uri))

    def _arrived(self, me: mp.CallArrived, handle: CallHandle) -> None:
        iid = uuid.uuid4()
        route = self.plan.match(me.dialed_number)
        self.notifier.emit(ev.CallArrived(  # opens the call's session (SessionTracker)
            interaction=str(iid), at=me.at, caller_number=me.caller_number, caller_name=me.caller_name,
            caller_uri=me.caller_uri, dialed_number=me.dialed_number, dialed_uri=me.dialed_uri,
            sip_call_id=me.sip_call_id, worker=me.worker_id, media_call=me.call_id,
            route=route.name if route else None))

    async def _identify(self, handle: CallHandle) -> str | None:
        """Caller-ID lookup, off the call path (only queueing waits for it, for the value tier).
        Returns the customer's value tier, or None for an unknown caller."""
        assert handle.arrival is not None
        e164 = to_e164(handle.arrival.caller_number, self.default_region)
        if e164 is None or self.pool is None:
            return None
        try:
            row = await asyncio.wait_for(self.pool.fetchrow(
                "SELECT p.customer_id, c.value_tier FROM customer_phones p JOIN customers c ON c.id = p.customer_id "
                "WHERE p.e164 = $1 ORDER BY p.is_primary DESC LIMIT 1", e164), LOOKUP_TIMEOUT)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("caller lookup failed: %s", exc)
            return None
        session = self.sessions.for_call(handle.call_id)
        if row is None or session is None:
            return None
        self.notifier.emit(ev.CustomerIdentified(interaction=session.interaction, customer_id=row["customer_id"]))
        return str(row["value_tier"])

    # ------------------------------------------------------------------ flows
    async def on_call(self, handle: CallHandle) -> None:
        session = self.sessions.for_call(handle.call_id)
        route = self.plan.match(handle.arrival.dialed_number) if handle.arrival and session else None
        if isinstance(route, FlowRoute):  # the flow identifies the caller (its identify node)
            assert session is not None
            await self._flow(handle, session.interaction, route)
            return
        lookup = asyncio.create_task(self._identify(handle))
        try:
            if route is None:
                await handle.hangup(code=404)
            elif isinstance(route, GreetingRoute):
                await flows.greeting(handle, self.prompts.path, prompt_name=route.prompt,
                                     collect_digits=route.collect_digits, digit_timeout=route.digit_timeout,
                                     then_prompt=route.then_prompt)
            elif isinstance(route, BridgeRoute):
                await flows.bridge(handle, self.prompts.path, prompt_name=route.prompt, target=route.target,
                                   ring_timeout=route.ring_timeout, fallback_prompt=route.fallback_prompt)
            elif isinstance(route, LoopRoute):
                await flows.loop_prompt(handle, self.prompts.path, prompt_name=route.prompt)
            elif isinstance(route, QueueRoute):
                assert session is not None
                await self._queue(handle, session.interaction, route, lookup)
        finally:
            await lookup

    async def _queue(self, handle: CallHandle, interaction: str, route: QueueRoute,
                     lookup: asyncio.Task[str | None]) -> None:
        if self.acd is None:
            raise RuntimeError("queue route without an ACD")
        await handle.start_play(self.prompts.path(route.prompt), loop=False, answer=True)
        try:  # the value tier sets the priority; an unknown or slow lookup counts as no tier
            tier = await asyncio.wait_for(asyncio.shield(lookup), 2.0)
        except TimeoutError:
            tier = None
        priority = min(99, route.priority + route.tier_priority.get(tier or "", 0))
        assert handle.arrival is not None
        await queue_flow(handle, self.acd.services, route.queue, _Record(self, uuid.UUID(interaction)),
                         priority=priority, skills=route.skills, caller_id=handle.arrival.caller_number,
                         callback_uri=self._callback_uri(handle.arrival),
                         interaction=interaction,
                         voicemail_dir=self.voicemail_dir, voicemail_seconds=route.voicemail_seconds,
                         goodbye_prompt=route.goodbye_prompt, voicemail_prompt=route.voicemail_prompt)

    async def _flow(self, handle: CallHandle, interaction: str, route: FlowRoute) -> None:
        if self.flows is None or self.crm is None or self.acd is None:
            raise RuntimeError("flow route without the IVR's flows, CRM and ACD")
        flows = self.flows.current  # the call keeps this version whatever a reload brings
        arrival = handle.arrival
        assert arrival is not None
        record = _Record(self, uuid.UUID(interaction))
        svc = self.acd.services
        queues = AcdQueues(svc, record, interaction, arrival.caller_number, self._callback_uri(arrival),
                           self.voicemail_dir, can_survey=lambda name: name in flows.flows)
        services = IvrServices(self.crm, queues, self.prompts, self.notifier.emit,
                               dial_uri=lambda number: svc.dial_uri("number", number), speech=self.speech)
        ctx = CallContext(call={"caller_number": arrival.caller_number, "dialed_number": arrival.dialed_number,
                                "caller_e164": to_e164(arrival.caller_number, self.default_region) or "",
                                "interaction": interaction})
        await FlowRun(flows, CallScript(handle, self.prompts, self.notifier.emit, interaction), services, ctx).run(
            route.flow)

    def _callback_uri(self, arrival: mp.CallArrived) -> str:
        if not self.callback_uri:
            return arrival.caller_uri
        return self.callback_uri.format(number=arrival.caller_number) if arrival.caller_number else ""

    def record_for(self, interaction: str) -> _Record:
        return _Record(self, uuid.UUID(interaction))


class _Record:
    """The queue flow's view of its interaction (acd.queue_call.Record): events go to the notifier."""

    def __init__(self, router: CallRouter, iid: uuid.UUID):
        self.notifier = router.notifier
        self.interaction = str(iid)
        self.inbox = router.sessions.inbox(self.interaction)  # None for a callback's own call

    def emit(self, event: ev.Event) -> None:
        self.notifier.emit(event)
