"""Running a flow on a call: each node's step (a method named after its type) returns the next node,
None when the flow is done, or an Exit that ends the IVR. Every node entered, every input, lookup
and the exit are events of the call (bus/events.py IVR_*), so containment and drop-out points can
be reported from the record.

The call keeps the FlowSet it started with: a reload changes only the calls that arrive after it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bus import events as ev
from ivr import flow_model as fm
from ivr.conditions import Judge
from ivr.context import CallContext
from ivr.flow_load import FlowSet
from ivr.identify import identify
from ivr.say import SayError
from ivr.script import CallScript, Reply
from ivr.services import IvrServices, LookupFailed
from ivr.speech_match import grammar, match
from ivr.survey import survey
from media.client import CallEnded, MediaError, OriginateFailed, first_ended

log = logging.getLogger("ivr.engine")

GOODBYE = "goodbye"
SORRY = "technical_difficulty"  # played when a flow cannot go on


@dataclass(frozen=True)
class Exit:
    reason: str  # as IVR_EXIT's
    flow: str = ""
    node: str = ""


class _Returned(Exception):
    """A ``return`` node: back to the subflow node that called this flow."""


class FlowRun:
    def __init__(self, flows: FlowSet, script: CallScript, services: IvrServices, ctx: CallContext,
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC), report_exit: bool = True):
        self.flows = flows
        self.script = script
        self.svc = services
        self.ctx = ctx
        self.clock = clock
        self.report_exit = report_exit  # a survey after the agent is not a second way out of the IVR
        self.steps = 0
        self.flow = ""
        self.node = ""

    @property
    def interaction(self) -> str:
        return self.script.interaction

    def emit(self, event: ev.Event) -> None:
        self.script.emit(event)

    def here(self, cls: type[ev.CallEvent], **fields: Any) -> None:
        """Emit an IVR event of the node the call is at."""
        self.emit(cls(interaction=self.interaction, flow=self.flow, ivr_node=self.node, **fields))  # type: ignore[call-arg]

    # ------------------------------------------------------------------ the loop
    async def run(self, flow: str, node: str | None = None) -> Exit:
        self.script.call.root.hide_keys = True  # keys typed ahead may be a PIN: see CallHandle
        try:
            exit_ = await self._flow(flow, node)
        except _Returned:  # a return with no subflow to go back to: the flow is done
            exit_ = Exit("served", self.flow, self.node)
            await self._end(None)
        except CallEnded:
            exit_ = Exit("abandoned", self.flow, self.node)
        except Exception:  # noqa: BLE001 - a broken flow step must not leave the caller in silence
            log.exception("flow %s failed at %s", self.flow, self.node)
            exit_ = Exit("error", self.flow, self.node)
            await self._end(SORRY)
        if self.report_exit:
            self.emit(ev.IvrExit(interaction=self.interaction, flow=exit_.flow, ivr_node=exit_.node,
                                 reason=exit_.reason))
        return exit_

    async def _flow(self, name: str, start: str | None = None) -> Exit:
        while True:
            flow = self.flows.flows[name]
            current: str | None = start or flow.start
            jump: tuple[str, str | None] | None = None
            while current is not None:
                self.steps += 1
                self.flow, self.node = name, current
                if self.steps > flow.max_steps:
                    log.warning("call %s went round flow %s %d times", self.interaction, name, self.steps)
                    await self._end(GOODBYE)
                    return Exit("loop", name, current)
                node = flow.nodes[current]
                self.emit(ev.IvrNode(interaction=self.interaction, flow=name, ivr_node=current,
                                     node_type=node.type, version=self.flows.version))  # type: ignore[attr-defined]
                if isinstance(node, fm.Goto):
                    jump = (node.flow, node.node)
                    break
                nxt = await self._steps[type(node)](self, node)
                if isinstance(nxt, Exit):
                    return nxt
                current = nxt
            if jump is None:
                await self.script.hangup()
                return Exit("served", self.flow, self.node)
            name, start = jump

    async def _end(self, prompt: str | None) -> None:
        """Say ``prompt`` if the prompts file has it, and hang up, whatever state the call is in."""
        try:
            try:
                await self.script.hangup(prompt)
            except KeyError:
                await self.script.hangup()
        except (CallEnded, MediaError, TimeoutError):
            pass

    # ------------------------------------------------------------------ output
    async def _play(self, n: fm.Play) -> str | None:
        if n.prompt:
            await self.script.play(n.prompt, n.interrupt)
        else:
            await self.script.speak(str(self.ctx.render(n.text)), n.interrupt)
        return n.next

    async def _say(self, n: fm.Say) -> str | None:
        parts: list[tuple[str, object]] = []
        currency = "USD"
        for p in n.parts:
            value = self.ctx.render(getattr(p, p.kind))
            if p.kind == "money":
                currency = str(self.ctx.render(p.currency))
            if value in (None, ""):
                raise SayError(f"{p.kind} of node {self.node!r} has no value")
            parts.append((p.kind, value))
        await self.script.say(parts, n.interrupt, currency)
        return n.next

    # ------------------------------------------------------------------ input
    async def _retry(self, n: fm._Asks, attempt: int, prompt: str | None) -> bool:
        """After a miss: True to ask again (having said ``prompt``), False when the tries are used up."""
        if attempt > n.retries:
            return False
        if prompt:
            await self.script.play(prompt, interrupt=True)
        return True

    async def _menu(self, n: fm.Menu) -> str | None:
        listen = bool(n.phrases) and self.svc.speech
        attempt = 0
        while True:
            attempt += 1
            if listen:
                reply = await self.script.ask_or_listen(n.prompt, grammar(n.phrases), n.timeout)
            else:
                ans = await self.script.ask(n.prompt, 1, n.timeout)
                reply = Reply("key", ans.digits) if ans.digits else Reply("none")
            choice, kind, value, confidence = self._choice(n, reply)
            if reply.kind == "none" or reply.kind == "speech" and not reply.words:
                self.here(ev.IvrNoInput, attempt=attempt)
                if await self._retry(n, attempt, n.no_input_prompt):
                    continue
                return n.fallback
            if choice is None:
                self.here(ev.IvrNoMatch, attempt=attempt, kind=kind, value=value)
                if await self._retry(n, attempt, n.invalid_prompt):
                    continue
                return n.fallback
            latency = round((time.time() - reply.ended) * 1000, 1) if reply.ended else None
            self.here(ev.IvrInput, kind=kind, value=value, confidence=confidence, latency_ms=latency)
            if n.var:
                self.ctx.set(n.var, choice.value or choice.key or choice.phrases[0])
            return choice.goto

    @staticmethod
    def _choice(n: fm.Menu, reply: Reply) -> tuple[fm.Choice | None, str, str, float | None]:
        """The choice a reply makes (None: no match), and what to log: kind, value, confidence."""
        if reply.kind == "speech":
            heard = match(reply.words, n.phrases)
            if heard.phrase is None:
                return None, "speech", heard.text, heard.confidence
            return next(c for c in n.choices if heard.phrase in c.phrases), "speech", heard.phrase, heard.confidence
        return next((c for c in n.choices if c.key == reply.key), None), "key", reply.key, None

    async def _collect(self, n: fm.Collect) -> str | None:
        secret = n.validate_as == "pin"
        attempt = 0
        while True:
            attempt += 1
            ans = await self.script.ask(n.prompt, n.max_length, n.timeout, n.inter_timeout, n.terminator,
                                        masked=secret)
            if not ans.digits:
                self.here(ev.IvrNoInput, attempt=attempt)
                if await self._retry(n, attempt, n.no_input_prompt):
                    continue
                return n.fallback
            shown = "*" * len(ans.digits) if secret else ans.digits
            if not await self._valid(n, ans.digits):
                self.here(ev.IvrNoMatch, attempt=attempt, kind="digits", value=shown)
                if await self._retry(n, attempt, n.invalid_prompt):
                    continue
                return n.fallback
            self.here(ev.IvrInput, kind="digits", value=shown)
            self.ctx.set(n.var, ans.digits)
            return n.next

    async def _valid(self, n: fm.Collect, digits: str) -> bool:
        if not n.min_length <= len(digits) <= n.max_length or not digits.isdigit():
            return False
        if n.validate_as == "luhn":
            return luhn(digits)
        if n.validate_as == "account_exists":
            try:
                return await asyncio.wait_for(self.svc.crm.account_exists(digits), 1.0)
            except (LookupFailed, TimeoutError):
                return False
        return True

    # ------------------------------------------------------------------ logic
    async def _condition(self, n: fm.ConditionNode) -> str | None:
        flow = self.flows.flows[self.flow]
        judge = Judge(self.ctx, self.flows.calendars, self.svc.queues, flow.timezone, self.clock())
        for b in n.branches:
            if await judge.holds(b.when):
                return b.goto
        return n.otherwise

    async def _set(self, n: fm.SetNode) -> str | None:
        values = {k: self.ctx.render(v) for k, v in n.values.items()}
        for k, v in values.items():
            self.ctx.set(k, v)
        if n.attach:
            self.script.attach({k: "" if v is None else str(v) for k, v in values.items()})
        return n.next

    async def _lookup(self, n: fm.Lookup) -> str | None:
        customer = self.ctx.get("customer.id")
        started = time.monotonic()
        result, data = "empty", None
        if customer is not None:
            try:
                data = await asyncio.wait_for(self.svc.crm.lookup(n.query, int(customer)), n.timeout)
                result = "found" if data else "empty"
            except TimeoutError:
                result = "timeout"
            except LookupFailed as exc:
                log.warning("lookup %s failed: %s", n.query, exc)
                result = "failed"
        self.here(ev.IvrLookup, query=n.query, result=result, ms=round((time.monotonic() - started) * 1000, 1))
        if result == "found":
            self.ctx.set(n.into or n.query, data)
            return n.found
        return n.empty if result == "empty" else n.failed

    async def _identify(self, n: fm.Identify) -> str | None:
        return n.next if await identify(self, n) else n.failed

    async def _create_ticket(self, n: fm.CreateTicket) -> str | None:
        customer = self.ctx.get("customer.id")
        if customer is None:
            return n.failed
        started = time.monotonic()
        try:
            number = await asyncio.wait_for(self.svc.crm.create_ticket(
                int(customer), n.kind, str(self.ctx.render(n.subject)), n.priority, self.interaction), 1.0)
        except (LookupFailed, TimeoutError) as exc:
            log.warning("ticket for call %s not created: %s", self.interaction, exc or "timeout")
            self.here(ev.IvrLookup, query="create_ticket", result="failed",
                      ms=round((time.monotonic() - started) * 1000, 1))
            return n.failed
        self.emit(ev.TicketCreated(interaction=self.interaction, number=number, kind=n.kind, customer_id=int(customer)))
        self.ctx.set(n.into, {"number": number, "kind": n.kind, "digits": "".join(c for c in number if c.isdigit())})
        return n.next

    # ------------------------------------------------------------------ ways out
    async def _queue(self, n: fm.QueueNode) -> Exit:
        tier = str(self.ctx.get("customer.tier") or "")
        priority = min(99, n.priority + n.tier_priority.get(tier, 0))
        data = {"queue": n.queue, "intent": n.intent} if n.intent else {"queue": n.queue}
        self.script.attach(data)
        if n.prompt:
            await self.script.play(n.prompt)
        exit_ = Exit("agent", self.flow, self.node)
        if self.report_exit:
            self.emit(ev.IvrExit(interaction=self.interaction, flow=exit_.flow, ivr_node=exit_.node, reason="agent"))
            self.report_exit = False  # the way out is told: what the queue does next is the ACD's record
        self.script.call.root.hide_keys = False  # keys for the agent's side are the record's again
        queued = await self.svc.queues.enqueue(self.script.call, n.queue, priority, dict(n.skills), n.intent)
        if queued.outcome == "connected" and queued.survey and queued.survey in self.flows.flows \
                and not self.script.call.ended.is_set():
            self.ctx.set("survey", {"queue": queued.queue, "agent_id": queued.agent_id})
            try:  # the caller left the IVR to an agent, whatever they do in the survey
                await self._flow(queued.survey)
            except CallEnded:
                pass
        await self.script.call.hangup()  # kept for a survey that did not run: nothing more to do
        return exit_

    async def _callback(self, n: fm.Callback) -> Exit:
        ok = await self.svc.queues.callback(self.script.call, n.queue, n.prompt)
        return Exit("callback" if ok else "refused", self.flow, self.node)

    async def _voicemail(self, n: fm.Voicemail) -> Exit:
        await self.svc.queues.voicemail(self.script.call, n.queue, n.prompt, n.max_seconds)
        return Exit("voicemail", self.flow, self.node)

    async def _transfer(self, n: fm.Transfer) -> str | Exit | None:
        uri = n.number if n.number.startswith("sip") else self.svc.dial_uri(n.number)
        if uri is None:
            log.warning("flow %s: %s cannot be dialled", self.flow, n.number)
            return n.failed
        call = self.script.call
        if n.prompt:
            await call.start_play(self.svc.prompts.path(n.prompt), loop=False, answer=True)
        try:
            leg = await call.originate(uri, timeout=n.ring_timeout,
                                       caller_id=call.arrival.caller_number if call.arrival else "")
        except OriginateFailed:
            return n.failed
        if call.ended.is_set():
            await leg.hangup()
            raise CallEnded(call.hangup_event)  # type: ignore[arg-type]
        self.here(ev.IvrExit, reason="transfer")
        self.report_exit = False
        await call.bridge(leg)
        await first_ended(call, leg)
        await leg.hangup()
        await call.hangup()
        return Exit("transfer", self.flow, self.node)

    async def _survey(self, n: fm.Survey) -> str | None:
        await survey(self, n)
        return n.next

    async def _subflow(self, n: fm.SubFlow) -> str | Exit | None:
        here = (self.flow, self.node)
        try:
            exit_ = await self._flow(n.flow)
        except _Returned:
            self.flow, self.node = here
            return n.next
        return exit_

    async def _return(self, n: fm.Return) -> None:
        raise _Returned

    async def _hangup(self, n: fm.Hangup) -> Exit:
        await self.script.hangup(n.prompt)
        return Exit(n.reason, self.flow, self.node)

    _steps: dict[type, Callable[[FlowRun, Any], Awaitable[Any]]] = {
        fm.Play: _play, fm.Say: _say, fm.Menu: _menu, fm.Collect: _collect, fm.ConditionNode: _condition,
        fm.SetNode: _set, fm.Lookup: _lookup, fm.Identify: _identify, fm.CreateTicket: _create_ticket,
        fm.QueueNode: _queue, fm.Callback: _callback, fm.Voicemail: _voicemail, fm.Transfer: _transfer,
        fm.Survey: _survey, fm.SubFlow: _subflow, fm.Return: _return, fm.Hangup: _hangup,
    }


def luhn(digits: str) -> bool:
    """The Luhn check digit (card and many account numbers) is right."""
    total = 0
    for i, c in enumerate(reversed(digits)):
        d = int(c)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return len(digits) > 1 and total % 10 == 0
