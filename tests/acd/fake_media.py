"""A fake media worker behind the real MediaClient, for flow unit tests: the client's commands are
answered with the events a worker sends (docs/media-protocol.md), and the fake keeps what a worker
would be doing — which calls are bridged, what each plays, which keys were sent — for the tests to
check. The real worker is tested through SIP (tests/sip/, tests/media/)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from media import protocol as mp
from media.client import CallHandle, MediaClient

WORKER = "w1"


class FakeMedia(MediaClient):
    def __init__(self) -> None:
        super().__init__("redis://127.0.0.1:1/0", on_call=self._no_flow)  # never connects: send is ours
        self.phones: dict[str, str] = {}  # uri -> answer (default) | busy | silent (rings until cancelled)
        self.bridges: set[frozenset[str]] = set()
        self.playing: dict[str, str] = {}  # call -> the prompt it plays
        self.muted: set[str] = set()
        self.keys_sent: dict[str, str] = {}
        self.dialed: list[str] = []

    @staticmethod
    async def _no_flow(handle: CallHandle) -> None:
        raise AssertionError("no inbound flows here")

    def inbound(self, call_id: str = "w1-1") -> CallHandle:
        handle = CallHandle(self, WORKER, call_id, arrival=mp.CallArrived(worker_id=WORKER, call_id=call_id, at=0))
        handle.answered = True
        self.calls[call_id] = handle
        return handle

    def leg(self, root: CallHandle, call_id: str) -> CallHandle:
        handle = CallHandle(self, WORKER, call_id, root=root)
        handle.answered = True
        self.calls[call_id] = handle
        return handle

    def bridged(self, a: CallHandle, b: CallHandle) -> bool:
        return frozenset({a.call_id, b.call_id}) in self.bridges

    def remote_hangup(self, handle: CallHandle) -> None:
        self._emit(mp.HungUp, handle.call_id, cause="normal_clearing", code=200, side="remote")

    async def send(self, worker_id: str, *cmds: mp.Command) -> None:
        for c in cmds:
            asyncio.get_running_loop().call_soon(self._act, c)

    def _emit(self, cls: type[mp.Event], call_id: str, **kw: Any) -> None:
        if isinstance(cls, type) and issubclass(cls, mp.HungUp):
            self._release(call_id)
        self.dispatch(cls(worker_id=WORKER, call_id=call_id, at=time.time(), **kw))  # type: ignore[call-arg]

    def _release(self, call_id: str) -> None:
        self.bridges = {b for b in self.bridges if call_id not in b}
        self.playing.pop(call_id, None)

    def _ring_timeout(self, call_id: str) -> None:
        handle = self.calls.get(call_id)
        if handle is not None and not handle.answered:
            self._emit(mp.HungUp, call_id, cause="no_answer", side="worker")

    def _act(self, c: mp.Command) -> None:
        live = c.call_id in self.calls
        if isinstance(c, mp.Originate):
            self.dialed.append(c.uri)
            behaviour = self.phones.get(c.uri, "answer")
            if behaviour == "answer":
                self._emit(mp.Answered, c.call_id)
            elif behaviour == "busy":
                self._emit(mp.HungUp, c.call_id, cause="busy", code=486, side="remote")
            else:  # rings until the worker's ring timeout, as a real worker does
                asyncio.get_running_loop().call_later(c.timeout, self._ring_timeout, c.call_id)
            return
        if not live:
            self._emit(mp.CommandFailed, c.call_id, command=c.type, error="no such call")
        elif isinstance(c, mp.Hangup):
            self._emit(mp.HungUp, c.call_id, cause="hangup_command", side="platform")
        elif isinstance(c, mp.Bridge):
            self.bridges.add(frozenset({c.call_id, c.other_call_id}))
            for call in (c.call_id, c.other_call_id):
                self.playing.pop(call, None)
            self._emit(mp.Bridged, c.call_id, other_call_id=c.other_call_id)
            self._emit(mp.Bridged, c.other_call_id, other_call_id=c.call_id)
        elif isinstance(c, mp.Unbridge):
            self.bridges.discard(frozenset({c.call_id, c.other_call_id}))
            self._emit(mp.Unbridged, c.call_id, other_call_id=c.other_call_id)
        elif isinstance(c, mp.Play):
            self.playing[c.call_id] = c.path
        elif isinstance(c, mp.StopPlay):
            self.playing.pop(c.call_id, None)
        elif isinstance(c, mp.Mute):
            (self.muted.add if c.muted else self.muted.discard)(c.call_id)
            self._emit(mp.Muted, c.call_id, muted=c.muted)
        elif isinstance(c, mp.SendDtmf):
            if not c.digits or any(d not in mp.ALL_DIGITS for d in c.digits):
                self._emit(mp.CommandFailed, c.call_id, command=c.type, error="digits: 1 to 32 of 0-9*#A-D")
                return
            self.keys_sent[c.call_id] = self.keys_sent.get(c.call_id, "") + c.digits
            self._emit(mp.DtmfSent, c.call_id, digits=c.digits)
