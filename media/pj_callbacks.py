"""The pjsua2 objects of a media worker: subclasses whose callbacks only hand the news to the
worker (pitfall 3: nothing escapes a callback; pitfall 6: a player's end of file arrives on a
pjmedia thread). They hold the worker by a weak reference (pitfall 2: no cycles through pjsua2)."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable
from typing import Protocol

import pjsua2 as pj

log = logging.getLogger("media.worker")


class CallEvents(Protocol):
    """What the worker does with the news."""

    def on_incoming(self, prm: pj.OnIncomingCallParam) -> None: ...
    def on_call_state(self, key: str) -> None: ...
    def on_media_state(self, key: str) -> None: ...
    def on_digit(self, key: str, digit: str, method: str) -> None: ...
    def on_transfer_status(self, key: str, code: int, final: bool) -> None: ...
    def on_player_eof(self, key: tuple[str, int]) -> None: ...


class Player(pj.AudioMediaPlayer):
    """onEof2 runs on a pjmedia thread: only hand the news to the loop (pitfall 6)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, worker: Callable[[], CallEvents | None], key: tuple[str, int]):
        super().__init__()
        self._loop = loop
        self._worker = worker
        self._key = key

    def onEof2(self) -> None:
        try:
            self._loop.call_soon_threadsafe(_player_eof, self._worker, self._key)
        except Exception:  # noqa: BLE001
            pass


def _player_eof(worker_ref: Callable[[], CallEvents | None], key: tuple[str, int]) -> None:
    worker = worker_ref()
    if worker is not None:
        worker.on_player_eof(key)


class Account(pj.Account):
    def __init__(self, worker: CallEvents):
        super().__init__()
        self._worker = weakref.ref(worker)

    def onIncomingCall(self, prm: pj.OnIncomingCallParam) -> None:
        try:
            w = self._worker()
            if w is not None:
                w.on_incoming(prm)
        except Exception:  # noqa: BLE001 - pitfall 3
            log.exception("onIncomingCall")


class Call(pj.Call):
    """Callbacks only; the call's state lives in a CallState held by the worker."""

    def __init__(self, worker: CallEvents, acc: pj.Account, call_id: str, pj_id: int = pj.PJSUA_INVALID_ID):
        super().__init__(acc, pj_id)
        self.key = call_id
        self._worker = weakref.ref(worker)

    def _w(self) -> CallEvents | None:
        return self._worker()

    def onCallState(self, prm: pj.OnCallStateParam) -> None:
        try:
            w = self._w()
            if w is not None:
                w.on_call_state(self.key)
        except Exception:  # noqa: BLE001
            log.exception("onCallState")

    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:
        try:
            w = self._w()
            if w is not None:
                w.on_media_state(self.key)
        except Exception:  # noqa: BLE001
            log.exception("onCallMediaState")

    def onDtmfDigit(self, prm: pj.OnDtmfDigitParam) -> None:
        try:
            w = self._w()
            if w is not None:
                method = "info" if prm.method == pj.PJSUA_DTMF_METHOD_SIP_INFO else "rfc4733"
                w.on_digit(self.key, prm.digit, method)
        except Exception:  # noqa: BLE001
            log.exception("onDtmfDigit")

    def onCallTransferStatus(self, prm: pj.OnCallTransferStatusParam) -> None:
        try:
            w = self._w()
            if w is not None:
                w.on_transfer_status(self.key, prm.statusCode, prm.finalNotify)
        except Exception:  # noqa: BLE001
            log.exception("onCallTransferStatus")
