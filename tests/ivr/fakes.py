"""Fakes of the IVR's own interfaces (ivr/services.py) and a caller behind the fake media worker,
for engine unit tests. The real CRM, queues and worker are tested in tests/callcenter and through
SIP (tests/sip)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bus import events as ev
from ivr.context import CallContext
from ivr.engine import Exit, FlowRun
from ivr.flow_load import FlowSet, load_flows
from ivr.script import CallScript
from ivr.services import CustomerRef, IvrServices, LookupFailed, PinCheck, Queued
from media import protocol as mp
from media.client import CallHandle
from tests.acd.fake_media import WORKER, FakeMedia

PROMPTS = {"welcome", "main_menu", "no_input", "invalid_entry", "goodbye", "technical_difficulty", "thanks",
           "enter_account", "enter_pin", "wrong_pin", "unknown_account", "account_locked", "your_balance",
           "lookup_failed", "connecting", "callback_confirm", "leave_message", "survey_thanks", "csat", "nps",
           "closed", "ticket_read"}


class FakePrompts:
    def __init__(self, names: set[str] | None = None):
        self.names = names if names is not None else PROMPTS

    def path(self, name: str) -> str:
        if name not in self.names:
            raise KeyError(name)
        return f"/p/{name}.wav"

    def spoken(self, text: str) -> str:
        return f"/p/said/{text}.wav"

    def joined(self, names: list[str]) -> str:
        return "/p/joined/" + "+".join(names) + ".wav"


class FakeCaller(FakeMedia):
    """The worker side of one caller: prompts play for ``prompt_time`` and end; keys are pressed when
    the prompt they answer starts (``answers``: (prompt, keys), in order), and are handled as the
    worker does: a key cuts an interruptible prompt, feeds a collection or waits as type-ahead."""

    def __init__(self, prompt_time: float = 0.002):
        super().__init__()
        self.prompt_time = prompt_time
        self.answers: list[tuple[str, str]] = []
        self.heard: list[str] = []  # prompts started, by name ("joined/..." for a say)
        self.hang_up_at: str | None = None  # hang up when this prompt starts
        self.speech_up = True  # a speech service answers Listen
        self.says: list[tuple[str, list[list[object]]]] = []  # (prompt, words heard) in order
        self._listening: set[str] = set()
        self._interrupt: dict[str, str] = {}
        self._typeahead: dict[str, str] = {}
        self._collect: dict[str, dict[str, Any]] = {}
        self._seq = 0

    def _act(self, c: mp.Command) -> None:
        if isinstance(c, mp.Answer):
            self._emit(mp.Answered, c.call_id)
        elif isinstance(c, mp.Play) and c.call_id in self.calls:
            self._start_prompt(c)
        elif isinstance(c, mp.StopPlay) and c.call_id in self.calls:
            self._finish(c.call_id, "stopped")
        elif isinstance(c, mp.CollectDigits) and c.call_id in self.calls:
            self._start_collect(c)
        elif isinstance(c, mp.StopCollect) and c.call_id in self.calls:
            self._end_collect(c.call_id, "stopped")
        elif isinstance(c, mp.Listen) and c.call_id in self.calls:
            if self.speech_up:
                self._listening.add(c.call_id)
            else:
                self._emit(mp.SpeechResult, c.call_id, words=[], reason="unavailable")
        elif isinstance(c, mp.StopListen) and c.call_id in self._listening:
            self._listening.discard(c.call_id)
            self._emit(mp.SpeechResult, c.call_id, words=[], reason="stopped")
        else:
            super()._act(c)

    # -------------------------------------------------------------- prompts
    def _start_prompt(self, c: mp.Play) -> None:
        if c.call_id in self.playing:
            self._finish(c.call_id, "stopped")
        name = c.path.removeprefix("/p/").removesuffix(".wav")
        self.heard.append(name)
        self.playing[c.call_id] = c.path
        self._interrupt[c.call_id] = c.interrupt_digits
        self._seq += 1
        seq = self._seq
        loop = asyncio.get_running_loop()
        if self.hang_up_at == name:
            loop.call_soon(self.remote_hangup, self.calls[c.call_id])
            return
        if not c.loop:
            loop.call_later(self.prompt_time, self._eof, c.call_id, seq)
        if self.answers and self.answers[0][0] == name:
            keys = self.answers.pop(0)[1]
            loop.call_soon(self.press, c.call_id, keys)
        elif self.says and self.says[0][0] == name and c.call_id in self._listening:
            loop.call_soon(self.speak, c.call_id, self.says.pop(0)[1])

    def speak(self, call_id: str, words: list[list[object]]) -> None:
        """The caller talks over the prompt (barge-in), then the service's answer."""
        self._emit(mp.SpeechStarted, call_id)
        self._finish(call_id, "interrupted")
        self._listening.discard(call_id)
        self._emit(mp.SpeechResult, call_id, words=words, reason="final")

    def _eof(self, call_id: str, seq: int) -> None:
        if self._seq == seq:
            self._finish(call_id, "eof")

    def _finish(self, call_id: str, reason: str, digit: str = "") -> None:
        path = self.playing.pop(call_id, None)
        if path is not None:
            self._seq += 1
            self._emit(mp.PromptFinished, call_id, path=path, reason=reason, digit=digit)

    # -------------------------------------------------------------- keys
    def press(self, call_id: str, keys: str) -> None:
        for k in keys:
            if call_id not in self.calls:
                return
            self._emit(mp.Digit, call_id, digit=k, method="rfc4733")
            if call_id in self.playing and k in self._interrupt.get(call_id, ""):
                self._finish(call_id, "interrupted", k)
            if call_id in self._collect:
                self._collect_key(call_id, k)
            else:
                self._typeahead[call_id] = self._typeahead.get(call_id, "") + k

    def _start_collect(self, c: mp.CollectDigits) -> None:
        self._collect[c.call_id] = {"cmd": c, "digits": "", "timer": None}
        typed = self._typeahead.pop(c.call_id, "")
        for i, k in enumerate(typed):
            if c.call_id not in self._collect:
                self._typeahead[c.call_id] = typed[i:]
                break
            self._collect_key(c.call_id, k)
        if c.call_id in self._collect:
            st = self._collect[c.call_id]
            if st["timer"] is not None:
                st["timer"].cancel()
            st["timer"] = asyncio.get_running_loop().call_later(
                c.inter_timeout if st["digits"] else c.first_timeout, self._end_collect, c.call_id, "timeout")

    def _collect_key(self, call_id: str, k: str) -> None:
        st = self._collect[call_id]
        c: mp.CollectDigits = st["cmd"]
        if k in c.terminators:
            self._end_collect(call_id, "terminator")
            return
        st["digits"] += k
        if len(st["digits"]) >= c.max_digits:
            self._end_collect(call_id, "max")
            return
        if st["timer"] is not None:
            st["timer"].cancel()
        st["timer"] = asyncio.get_running_loop().call_later(c.inter_timeout, self._end_collect, call_id, "timeout")

    def _end_collect(self, call_id: str, reason: str) -> None:
        st = self._collect.pop(call_id, None)
        if st is None:
            return
        if st["timer"] is not None:
            st["timer"].cancel()
        self._emit(mp.DigitsCollected, call_id, digits=st["digits"], reason=reason)


@dataclass
class FakeCrm:
    by_phone: dict[str, list[CustomerRef]] = field(default_factory=dict)
    accounts: dict[str, tuple[str, CustomerRef]] = field(default_factory=dict)  # number -> (pin, customer)
    data: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    down: bool = False
    slow: float = 0.0
    tickets: list[tuple[int, str, str]] = field(default_factory=list)
    wrong: dict[str, int] = field(default_factory=dict)
    lock_after: int = 6
    locked: set[str] = field(default_factory=set)

    async def _io(self) -> None:
        if self.slow:
            await asyncio.sleep(self.slow)
        if self.down:
            raise LookupFailed("database unreachable")

    async def customers_by_phone(self, e164: str) -> list[CustomerRef]:
        await self._io()
        return self.by_phone.get(e164, [])

    async def account_exists(self, number: str) -> bool:
        await self._io()
        return number in self.accounts

    async def check_pin(self, account: str, pin: str) -> PinCheck:
        await self._io()
        if account in self.locked:
            return PinCheck(reason="locked")
        if account not in self.accounts:
            return PinCheck(reason="unknown_account")
        right, customer = self.accounts[account]
        if pin == right:
            self.wrong.pop(account, None)
            return PinCheck(customer=customer)
        self.wrong[account] = self.wrong.get(account, 0) + 1
        if self.wrong[account] >= self.lock_after:
            self.locked.add(account)
            return PinCheck(reason="wrong_pin", locked_until=time.time() + 900)
        return PinCheck(reason="wrong_pin")

    async def lookup(self, query: str, customer_id: int) -> dict[str, Any] | None:
        await self._io()
        return self.data.get((query, customer_id))

    async def create_ticket(self, customer_id: int, kind: str, subject: str, priority: str, interaction: str) -> str:
        await self._io()
        self.tickets.append((customer_id, kind, subject))
        return f"T{1000 + len(self.tickets)}"


@dataclass
class FakeQueues:
    result: Queued = field(default_factory=lambda: Queued("connected", agent_id=7, queue="support"))
    entered: list[dict[str, Any]] = field(default_factory=list)
    available: dict[str, int] = field(default_factory=dict)
    waits: dict[str, float] = field(default_factory=dict)
    callbacks: list[str] = field(default_factory=list)
    voicemails: list[str] = field(default_factory=list)

    async def enqueue(self, call: CallHandle, queue: str, priority: int, skills: dict[str, int],
                      intent: str) -> Queued:
        self.entered.append({"queue": queue, "priority": priority, "skills": skills, "intent": intent})
        if not self.result.survey:
            await call.hangup()
        return self.result

    async def callback(self, call: CallHandle, queue: str, prompt: str) -> bool:
        self.callbacks.append(queue)
        await call.hangup()
        return True

    async def voicemail(self, call: CallHandle, queue: str, prompt: str, seconds: float) -> None:
        self.voicemails.append(queue)
        await call.hangup()

    async def agents_available(self, queue: str) -> int:
        return self.available.get(queue, 0)

    async def expected_wait(self, queue: str) -> float | None:
        return self.waits.get(queue)


@dataclass
class Harness:
    """One call through a flow set, with every fake at hand."""

    folder: Path
    media: FakeCaller = field(default_factory=FakeCaller)
    crm: FakeCrm = field(default_factory=FakeCrm)
    queues: FakeQueues = field(default_factory=FakeQueues)
    events: list[ev.Event] = field(default_factory=list)
    prompts: FakePrompts = field(default_factory=FakePrompts)
    dialable: dict[str, str] = field(default_factory=dict)

    def write(self, name: str, text: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"{name}.yaml").write_text(text)

    def flows(self, calendars: Path | None = None) -> FlowSet:
        return load_flows(self.folder, self.prompts.names, calendars)

    async def call(self, flow: str, caller: str = "+15550001111", customer: CustomerRef | None = None,
                   **kw: Any) -> Exit:
        handle = self.media.inbound()
        handle.answered = False
        handle.arrival = mp.CallArrived(worker_id=WORKER, call_id=handle.call_id, at=time.time(),
                                        caller_number=caller)
        script = CallScript(handle, self.prompts, self.events.append, "i-1")
        services = IvrServices(self.crm, self.queues, self.prompts, self.events.append,
                               dial_uri=self.dialable.get, speech=kw.pop("speech", True))
        ctx = CallContext(call={"caller_number": caller, "caller_e164": caller},
                          **({"customer": customer.as_vars()} if customer else {}))
        run = FlowRun(kw.pop("flowset", None) or self.flows(kw.pop("calendars", None)), script, services, ctx, **kw)
        self.run = run
        return await asyncio.wait_for(run.run(flow), 10)

    def of(self, kind: type[ev.Event]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    def told(self) -> str:
        """What the events say, without the ids and times they are given (a random hex id may hold
        any four digits, so a PIN is searched for in this)."""
        generated = {"id", "at", "interaction", "call"}
        return repr([{k: v for k, v in e.body().items() if k not in generated} for e in self.events])
