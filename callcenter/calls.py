"""Call routing in the control plane: every media event becomes part of the interaction record, and
each arriving call runs the dial-plan flow its dialed number selects."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import asyncpg

from callcenter.dialplan import BridgeRoute, DialPlan, GreetingRoute, LoopRoute
from callcenter.interactions import InteractionLog, ts
from callcenter.phones import to_e164
from callcenter.prompts import PromptSet
from ivr import flows
from media import protocol as mp
from media.client import CallHandle, MediaClient

log = logging.getLogger("callcenter.calls")

_SIDES = {"remote": "caller", "platform": "platform", "worker": "system", "lost": "system"}


class CallRouter:
    def __init__(self, client: MediaClient, ilog: InteractionLog, plan: DialPlan, prompts: PromptSet,
                 pool: asyncpg.Pool | None, default_region: str = "US"):
        self.client = client
        self.ilog = ilog
        self.plan = plan
        self.prompts = prompts
        self.pool = pool
        self.default_region = default_region
        self.active: dict[uuid.UUID, CallHandle] = {}
        client.listeners.append(self.on_event)
        client.originate_listeners.append(self.on_originate)

    # ------------------------------------------------------------------ the record
    def on_event(self, ev: mp.Event, handle: CallHandle | None) -> None:
        if handle is None:
            return
        if isinstance(ev, mp.CallArrived):
            self._arrived(ev, handle)
            return
        iid: uuid.UUID | None = handle.root.data.get("interaction_id")
        if iid is None:
            return
        leg = handle is not handle.root
        data: dict[str, Any] = {"call": ev.call_id} if leg else {}
        if isinstance(ev, mp.Answered):
            if leg:
                self.ilog.event(iid, "DIAL_ANSWER", ev.at, **data)
            else:
                self.ilog.update(iid, answered_at=ts(ev.at))
                self.ilog.event(iid, "ANSWER", ev.at)
        elif isinstance(ev, mp.Ringing):
            self.ilog.event(iid, "DIAL_RINGING", ev.at, **data)
        elif isinstance(ev, mp.Digit):
            self.ilog.event(iid, "DTMF", ev.at, digit=ev.digit, method=ev.method, **data)
        elif isinstance(ev, mp.DigitsCollected):
            self.ilog.update(iid, digits=ev.digits)
            self.ilog.event(iid, "DIGITS", ev.at, digits=ev.digits, reason=ev.reason)
        elif isinstance(ev, mp.PromptFinished):
            self.ilog.event(iid, "PROMPT", ev.at, prompt=ev.path.rsplit("/", 1)[-1], reason=ev.reason,
                            digit=ev.digit, **data)
        elif isinstance(ev, mp.Bridged):
            self.ilog.event(iid, "BRIDGE", ev.at, call=ev.call_id, other=ev.other_call_id)
        elif isinstance(ev, mp.Unbridged):
            self.ilog.event(iid, "UNBRIDGE", ev.at, call=ev.call_id, other=ev.other_call_id)
        elif isinstance(ev, mp.TransferResult):
            self.ilog.event(iid, "TRANSFER", ev.at, code=ev.code, final=ev.final, **data)
        elif isinstance(ev, mp.CommandFailed):
            self.ilog.event(iid, "MEDIA_ERROR", ev.at, command=ev.command, error=ev.error, **data)
        elif isinstance(ev, mp.HungUp):
            if leg:
                self.ilog.event(iid, "DIAL_HANGUP", ev.at, cause=ev.cause, code=ev.code, side=ev.side, **data)
            else:
                self.ilog.update(iid, ended_at=ts(ev.at), disconnect_reason=ev.cause,
                                 disconnect_side=_SIDES.get(ev.side, "system"), sip_code=ev.code or None)
                self.ilog.event(iid, "HANGUP", ev.at, cause=ev.cause, code=ev.code, side=ev.side)
                self.active.pop(iid, None)

    def on_originate(self, leg: CallHandle) -> None:
        iid = leg.root.data.get("interaction_id")
        if iid is not None:
            self.ilog.event(iid, "DIAL", call=leg.call_id, uri=leg.data.get("uri", ""))

    def _arrived(self, ev: mp.CallArrived, handle: CallHandle) -> None:
        iid = uuid.uuid4()
        handle.data["interaction_id"] = iid
        route = self.plan.match(ev.dialed_number)
        handle.data["route"] = route
        self.active[iid] = handle
        self.ilog.open(
            iid,
            direction="inbound",
            caller_number=ev.caller_number,
            caller_name=ev.caller_name or None,
            caller_uri=ev.caller_uri,
            dialed_number=ev.dialed_number,
            dialed_uri=ev.dialed_uri,
            sip_call_id=ev.sip_call_id,
            worker_id=ev.worker_id,
            media_call_id=ev.call_id,
            route=route.name if route else None,
            arrived_at=ts(ev.at),
        )
        self.ilog.event(iid, "DID", ev.at, dialed=ev.dialed_number, caller=ev.caller_number,
                        worker=ev.worker_id)

    async def _identify(self, handle: CallHandle) -> None:
        """Caller-ID lookup, off the call path: the flow never waits for it."""
        assert handle.arrival is not None
        e164 = to_e164(handle.arrival.caller_number, self.default_region)
        if e164 is None or self.pool is None:
            return
        try:
            customer_id = await self.pool.fetchval(
                "SELECT customer_id FROM customer_phones WHERE e164 = $1 ORDER BY is_primary DESC LIMIT 1", e164)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("caller lookup failed: %s", exc)
            return
        if customer_id is not None:
            iid = handle.data["interaction_id"]
            handle.data["customer_id"] = customer_id
            self.ilog.update(iid, customer_id=customer_id)

    # ------------------------------------------------------------------ flows
    async def on_call(self, handle: CallHandle) -> None:
        route = handle.data.get("route")
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
        finally:
            await lookup
