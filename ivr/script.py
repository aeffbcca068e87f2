"""The call-script API: what a flow does with a call, in the caller's terms: play a prompt or a
spoken text, say values, ask for keys (a menu, digits), attach data, hang up. It drives the call
only through media.client.CallHandle, so flows run against a fake media client in unit tests.

Keys come from the worker's type-ahead: a key that cuts a prompt short is kept by the worker and
is the first key of the collection that follows, so nothing pressed between two commands is lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bus import events as ev
from ivr import say
from ivr.services import Prompts
from media import protocol as mp
from media.client import CallHandle

log = logging.getLogger("ivr.script")

ALL_KEYS = "0123456789*#"


SPEECH_END = 8.0  # seconds a caller who began speaking has to finish, once the key time is up


@dataclass(frozen=True)
class Reply:
    """A menu's answer: a key, words heard (``words``: [word, confidence]), or nothing."""

    kind: str  # key, speech, none
    key: str = ""
    words: tuple[tuple[str, float], ...] = ()
    ended: float = 0.0  # speech: when the caller's last word ended


@dataclass(frozen=True)
class Answer:
    """What the caller gave: ``digits`` ("" when nothing came), and why the collection ended
    (max, terminator, timeout)."""

    digits: str
    reason: str


class CallScript:
    def __init__(self, call: CallHandle, prompts: Prompts, emit: Callable[[ev.Event], None], interaction: str):
        self.call = call
        self.prompts = prompts
        self._emit = emit
        self.interaction = interaction
        self._full = False  # the last answer ended at its full length (a # may still follow it)

    def emit(self, event: ev.Event) -> None:
        self._emit(event)

    # ------------------------------------------------------------------ output
    async def play(self, prompt: str, interrupt: bool = False) -> None:
        """A prompt of the prompts file, to its end (or the first key, with ``interrupt``)."""
        await self.play_file(self.prompts.path(prompt), interrupt)

    async def play_file(self, path: str, interrupt: bool = False) -> None:
        await self.call.play(path, interrupt_digits=ALL_KEYS if interrupt else "", answer=True)

    async def music(self, prompt: str) -> None:
        """A prompt in a loop (hold music) until something else plays; returns at once."""
        await self.call.start_play(self.prompts.path(prompt), loop=True, answer=True)

    async def speak(self, text: str, interrupt: bool = False) -> None:
        """A text known only now, in the prompts' voice (made once, then kept; off the event loop)."""
        await self.play_file(await asyncio.to_thread(self.prompts.spoken, text), interrupt)

    async def say(self, parts: Sequence[tuple[str, object]], interrupt: bool = False, currency: str = "USD") -> None:
        """Prompts and values as one prompt: ``parts`` are (kind, value) with kind prompt, number,
        money, digits, date or time (ivr/say.py). Raises say.SayError for a value of the wrong kind."""
        await self.play_file(await self.said(parts, currency), interrupt)

    async def said(self, parts: Sequence[tuple[str, object]], currency: str = "USD") -> str:
        names: list[str] = []
        for kind, value in parts:
            if kind == "prompt":
                names.append(str(value))
            elif kind == "money":
                names += say.money(value, currency)
            else:
                names += getattr(say, kind)(value)
        return await asyncio.to_thread(self.prompts.joined, names)

    # ------------------------------------------------------------------ input
    async def ask(self, prompt: str | None, max_digits: int, timeout: float, inter_timeout: float = 3.0,
                  terminator: str = "#", masked: bool = False) -> Answer:
        """Play ``prompt`` (a key cuts it short), then collect up to ``max_digits``. ``masked``: the
        digits are a secret (a PIN), kept out of the call's events."""
        root = self.call.root
        root.masked = masked or root.masked
        try:
            if prompt:
                await self.play(prompt, interrupt=True)
            got = await self.call.collect(max_digits, first_timeout=timeout, inter_timeout=inter_timeout,
                                          terminators=terminator)
            if got.reason == "terminator" and not got.digits and self._full:
                # The caller ended the last answer with # though it was complete: that # is not this one.
                got = await self.call.collect(max_digits, first_timeout=timeout, inter_timeout=inter_timeout,
                                              terminators=terminator)
        finally:
            if masked:
                root.masked = False
        self._full = got.reason == "max"
        return Answer(got.digits, got.reason)

    async def ask_or_listen(self, prompt: str, grammar: list[str], timeout: float, max_digits: int = 1,
                            terminator: str = "") -> Reply:
        """A menu that takes a key or speech, whichever comes first. Listening starts before the
        prompt, which the caller's speech stops (barge-in); once the prompt is over the caller has
        ``timeout`` for a key or the start of speech, and then SPEECH_END to finish speaking."""
        call = self.call
        await call.answer()  # a worker listens only to a call whose media is up (a menu may come first)
        heard = await call.start_listen(grammar, max_seconds=60.0, barge_in=True)
        keys: asyncio.Task[mp.DigitsCollected] | None = None
        try:
            await self.play(prompt, interrupt=True)
            keys = asyncio.ensure_future(call.collect(max_digits, first_timeout=timeout,
                                                      inter_timeout=min(timeout, 3.0), terminators=terminator))
            waits: set[asyncio.Future[Any]] = {keys, heard}
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            if heard in done and _unheard(heard):  # no speech service: keys only
                await keys
                done = {keys}
            if keys in done:
                if keys.result().digits:
                    await call.stop_listen()
                    return Reply("key", keys.result().digits)
                if not call.speaking:
                    await call.stop_listen()
                    return Reply("none")
                await asyncio.wait_for(asyncio.shield(heard), SPEECH_END)
            else:
                await call.stop_collect()
            result = heard.result()
            assert isinstance(result, mp.SpeechResult)
            return Reply("speech", words=tuple((str(w), float(c)) for w, c in result.words), ended=result.ended)
        except TimeoutError:
            await call.stop_listen()
            return Reply("none")
        finally:
            for f in (keys, heard):
                if f is None:
                    continue
                if not f.done():
                    f.cancel()
                elif not f.cancelled():
                    f.exception()  # the one not waited for may have failed as the call ended: seen

    # ------------------------------------------------------------------ the call
    def attach(self, data: dict[str, str], by: str = "ivr") -> None:
        """Attach data to the call: the session carries it to the agent's screen and the CTI."""
        self.emit(ev.CommandApplied(interaction=self.interaction, command="attach", by=by, args={"data": data}))

    async def hangup(self, prompt: str | None = None) -> None:
        if prompt:
            await self.play(prompt)
        await self.call.hangup()


def _unheard(heard: asyncio.Future[mp.Event]) -> bool:
    result = heard.result()
    return isinstance(result, mp.SpeechResult) and result.reason == "unavailable"
