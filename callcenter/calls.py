"""Call routing in the control plane: every media event becomes part of the interaction record, and
each arriving call runs the dial-plan flow its dialed number selects."""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg

from acd.overflow import queue_flow
from callcenter.dialplan import BridgeRoute, DialPlan, GreetingRoute, LoopRoute, QueueRoute
from callcenter.interactions import InteractionLog, ts
from callcenter.phones import to_e164
from callcenter.prompts import PromptSet
from ivr import flows
from media import protocol as mp
from media.client import CallHandle, MediaClient

log = logging.getLogger("callcenter.calls")

if TYPE_CHECKING:
    from callcenter.acd_node import AcdNode

LOOKUP_TIMEOUT = 1.5  # seconds a database read on a call's path may take (acquiring a connection included)
_SIDES = {"remote": "caller", "platform": "platform", "worker": "system", "lost": "system"}


class CallRouter:
    def __init__(self, client: MediaClient, ilog: InteractionLog, plan: DialPlan, prompts: PromptSet,
                 pool: asyncpg.Pool | None, default_region: str = "US", acd: AcdNode | None = None,
                 voicemail_dir: Path = Path("var/voicemail"), callback_uri: str = "", node: str = ""):
        self.client = client
        self.node = node  # this control-plane node, written on each record it owns
        self.acd = acd
        self.voicemail_dir = voicemail_dir
        self.callback_uri = callback_uri  # template with {number}; "" = the caller's From URI
        self.queue_ids: dict[str, int] = {}
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
            node=self.node or None,
        )
        self.ilog.event(iid, "DID", ev.at, dialed=ev.dialed_number, caller=ev.caller_number,
                        worker=ev.worker_id)

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
        if row is None:
            return None
        iid = handle.data["interaction_id"]
        handle.data["customer_id"] = row["customer_id"]
        self.ilog.update(iid, customer_id=row["customer_id"])
        return str(row["value_tier"])

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
            elif isinstance(route, QueueRoute):
                await self._queue(handle, route, lookup)
        finally:
            await lookup

    async def _queue(self, handle: CallHandle, route: QueueRoute, lookup: asyncio.Task[str | None]) -> None:
        if self.acd is None:
            raise RuntimeError("queue route without an ACD")
        await handle.start_play(self.prompts.path(route.prompt), loop=False, answer=True)
        try:  # the value tier sets the priority; an unknown or slow lookup counts as no tier
            tier = await asyncio.wait_for(asyncio.shield(lookup), 2.0)
        except TimeoutError:
            tier = None
        priority = min(99, route.priority + route.tier_priority.get(tier or "", 0))
        await self._refresh_queue_ids()
        assert handle.arrival is not None
        await queue_flow(handle, self.acd.services, route.queue, _Record(self, handle.data["interaction_id"]),
                         priority=priority, skills=route.skills, caller_id=handle.arrival.caller_number,
                         callback_uri=self._callback_uri(handle.arrival),
                         interaction=str(handle.data["interaction_id"]),
                         voicemail_dir=self.voicemail_dir, voicemail_seconds=route.voicemail_seconds,
                         goodbye_prompt=route.goodbye_prompt, voicemail_prompt=route.voicemail_prompt)

    def _callback_uri(self, arrival: mp.CallArrived) -> str:
        if not self.callback_uri:
            return arrival.caller_uri
        return self.callback_uri.format(number=arrival.caller_number) if arrival.caller_number else ""

    def record_for(self, interaction: str) -> _Record:
        return _Record(self, uuid.UUID(interaction))

    async def _refresh_queue_ids(self) -> None:
        if self.pool is None:
            return
        try:  # the caller is waiting: a frozen database must not stop the call (ids are kept from before)
            rows = await asyncio.wait_for(self.pool.fetch("SELECT name, id FROM queues"), LOOKUP_TIMEOUT)
            self.queue_ids = {r["name"]: r["id"] for r in rows}
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("queue ids not refreshed: %s", exc)


class _Record:
    """The queue flow's view of the interaction record (acd.queue_call.Record)."""

    def __init__(self, router: CallRouter, iid: uuid.UUID):
        self.router = router
        self.iid = iid

    def event(self, name: str, *, queue: str, agent_id: int | None = None, **data: Any) -> None:
        self.router.ilog.event(self.iid, name, queue_id=self.router.queue_ids.get(queue), agent_id=agent_id,
                               queue=queue, **data)

    def update(self, **fields: Any) -> None:
        if "queue" in fields:
            fields["queue_id"] = self.router.queue_ids.get(fields.pop("queue"))
        self.router.ilog.update(self.iid, **{k: ts(v) if k.endswith("_at") else v for k, v in fields.items()})
