"""The audio side of a worker's calls: prompts, digit collection, recorders and bridges. Every
method runs on the worker's loop thread; what happens is reported through ``emit``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol

import pjsua2 as pj

from media import protocol as mp
from media.call_state import CallState, Collect
from media.pj_callbacks import CallEvents, Player

MAX_DTMF = 32  # keys in one SendDtmf


class Emit(Protocol):
    def __call__(self, cls: type[mp.Event], call_id: str, **kw: Any) -> None: ...


class CallMedia:
    def __init__(self, loop: asyncio.AbstractEventLoop, calls: dict[str, CallState], emit: Emit,
                 events: Callable[[], CallEvents | None]):
        self.loop = loop
        self.calls = calls
        self.emit = emit
        self.events = events  # the worker, weakly: a player's end of file goes back through it

    # ------------------------------------------------------------------ commands
    def play(self, st: CallState, cmd: mp.Play) -> None:
        if not st.media_ready:
            st.pending_play = cmd
            return
        self._stop_player(st, "stopped")
        st.player_seq += 1
        player = Player(self.loop, self.events, (st.call.key, st.player_seq))
        try:
            player.createPlayer(cmd.path, 0 if cmd.loop else pj.PJMEDIA_FILE_NO_LOOP)
        except pj.Error as exc:
            self.emit(mp.PromptFinished, st.call.key, path=cmd.path, reason="error")
            raise RuntimeError(f"cannot play {cmd.path}: {exc.reason}") from None
        player.startTransmit(st.call.getAudioMedia(-1))
        st.player = player
        st.player_path = cmd.path
        st.player_started = time.time()
        st.interrupt_digits = cmd.interrupt_digits

    def stop_play(self, st: CallState, cmd: mp.StopPlay) -> None:
        st.pending_play = None
        self._stop_player(st, "stopped")

    def collect(self, st: CallState, cmd: mp.CollectDigits) -> None:
        self._end_collect(st, None)
        st.collect = Collect(cmd.max_digits, cmd.terminators, cmd.inter_timeout)
        typed, st.typeahead = st.typeahead, ""
        for i, d in enumerate(typed):
            if st.collect is None:  # this collection is done: the rest waits for the next one
                st.typeahead = typed[i:]
                break
            self._collect_digit(st, d)
        if st.collect is not None:
            if st.collect.timer is not None:  # a typed-ahead key started the inter-key timer: start it again
                st.collect.timer.cancel()
            timeout = cmd.inter_timeout if st.collect.digits else cmd.first_timeout
            st.collect.timer = self.loop.call_later(timeout, self._collect_timeout, st.call.key)

    def stop_collect(self, st: CallState, cmd: mp.StopCollect) -> None:
        self._end_collect(st, "stopped")

    def interrupt(self, st: CallState) -> None:
        """The caller spoke over the prompt (barge-in): stop it as a key would."""
        if st.player is not None:
            self._stop_player(st, "interrupted")

    def start_capture(self, st: CallState, cmd: mp.StartCapture) -> None:
        self._release_recorder(st, "capture")
        rec = pj.AudioMediaRecorder()
        rec.createRecorder(cmd.path)
        st.call.getAudioMedia(-1).startTransmit(rec)
        st.capture = rec

    def stop_capture(self, st: CallState, cmd: mp.StopCapture) -> None:
        self._release_recorder(st, "capture")

    def record(self, st: CallState, cmd: mp.Record) -> None:
        self._release_recorder(st, "recorder")
        rec = pj.AudioMediaRecorder()
        rec.createRecorder(cmd.path)
        st.call.getAudioMedia(-1).startTransmit(rec)
        for other in st.bridged_to:
            o = self.calls.get(other)
            if o is not None and o.media_ready:
                o.call.getAudioMedia(-1).startTransmit(rec)
        st.recorder = rec

    def stop_record(self, st: CallState, cmd: mp.StopRecord) -> None:
        self._release_recorder(st, "recorder")

    def bridge(self, st: CallState, cmd: mp.Bridge) -> None:
        """Both ways (a muted side only listens). Bridging each pair of three calls is a three-way
        conference: pjsua2's conference bridge sums what reaches a port, so each hears the other two."""
        other = self.calls.get(cmd.other_call_id)
        if other is None or not other.media_ready or not st.media_ready:
            raise RuntimeError(f"cannot bridge {st.call.key} with {cmd.other_call_id}: not both live")
        for s in (st, other):
            s.pending_play = None
            self._stop_player(s, "stopped")
        a, b = st.call.getAudioMedia(-1), other.call.getAudioMedia(-1)
        if not st.muted:
            a.startTransmit(b)
        if not other.muted:
            b.startTransmit(a)
        for rec, heard in ((st.recorder, b), (other.recorder, a)):  # a recording hears every bridged leg
            if rec is not None:
                heard.startTransmit(rec)
        st.bridged_to.add(other.call.key)
        other.bridged_to.add(st.call.key)
        self.emit(mp.Bridged, st.call.key, other_call_id=other.call.key)
        self.emit(mp.Bridged, other.call.key, other_call_id=st.call.key)

    def mute(self, st: CallState, cmd: mp.Mute) -> None:
        if st.muted != cmd.muted and st.media_ready:
            mine = st.call.getAudioMedia(-1)
            for key in st.bridged_to:
                other = self.calls.get(key)
                if other is not None and other.media_ready:
                    if cmd.muted:
                        mine.stopTransmit(other.call.getAudioMedia(-1))
                    else:
                        mine.startTransmit(other.call.getAudioMedia(-1))
        st.muted = cmd.muted
        self.emit(mp.Muted, st.call.key, muted=st.muted)

    def send_dtmf(self, st: CallState, cmd: mp.SendDtmf) -> None:
        if not 0 < len(cmd.digits) <= MAX_DTMF or any(d not in mp.ALL_DIGITS for d in cmd.digits):
            raise RuntimeError(f"digits: 1 to {MAX_DTMF} of {mp.ALL_DIGITS}")
        if not st.media_ready:
            raise RuntimeError(f"call {st.call.key} has no media")
        st.call.dialDtmf(cmd.digits)
        self.emit(mp.DtmfSent, st.call.key, digits=cmd.digits)

    def unbridge(self, st: CallState, cmd: mp.Unbridge) -> None:
        other = self.calls.get(cmd.other_call_id)
        if other is not None:
            self._unbridge(st, other)

    # ------------------------------------------------------------------ news from pjsua2
    def media_state(self, st: CallState) -> None:
        info = st.call.getInfo()
        for mi in info.media:
            if mi.type == pj.PJMEDIA_TYPE_AUDIO and mi.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                if not st.media_ready:
                    self._drain(st)
                st.media_ready = True
        if st.media_ready and st.pending_play is not None:
            cmd, st.pending_play = st.pending_play, None
            self.play(st, cmd)

    def digit(self, st: CallState, digit: str) -> None:
        if st.player is not None and digit in st.interrupt_digits:
            self._stop_player(st, "interrupted", digit)
        if st.collect is not None:
            self._collect_digit(st, digit)
        else:
            st.typeahead = (st.typeahead + digit)[-32:]

    def player_eof(self, key: tuple[str, int]) -> None:
        st = self.calls.get(key[0])
        if st is None or st.player is None or st.player_seq != key[1]:
            return
        self._stop_player(st, "eof")

    def release(self, st: CallState) -> None:
        """The call is gone: end what it was doing, media first (its ports are going)."""
        self._end_collect(st, None)
        self._stop_player(st, "stopped")
        for other_key in list(st.bridged_to):
            other = self.calls.get(other_key)
            if other is not None:
                self._unbridge(st, other, media=False)
        self._release_recorder(st, "capture")
        self._release_recorder(st, "recorder")

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _drain(st: CallState) -> None:
        """Send the call's audio to the (null) sound device for as long as it lasts. The conference
        bridge reads only ports that have a listener; one that has none (a caller on hold, in the
        queue, muted) fills its jitter buffer, and whoever is bridged with it next first hears that
        stale audio, then seconds of clicks while the buffer discards its way back."""
        st.call.getAudioMedia(-1).startTransmit(pj.Endpoint.instance().audDevManager().getPlaybackDevMedia())

    def _unbridge(self, st: CallState, other: CallState, media: bool = True) -> None:
        if media and st.media_ready and other.media_ready:
            a, b = st.call.getAudioMedia(-1), other.call.getAudioMedia(-1)
            if not st.muted:
                a.stopTransmit(b)
            if not other.muted:
                b.stopTransmit(a)
            for rec, heard in ((st.recorder, b), (other.recorder, a)):
                if rec is not None:
                    heard.stopTransmit(rec)
        st.bridged_to.discard(other.call.key)
        other.bridged_to.discard(st.call.key)
        self.emit(mp.Unbridged, st.call.key, other_call_id=other.call.key)
        self.emit(mp.Unbridged, other.call.key, other_call_id=st.call.key)

    def _stop_player(self, st: CallState, reason: str, digit: str = "") -> None:
        player, st.player = st.player, None
        if player is None:
            return
        try:
            if st.media_ready and st.call is not None:
                player.stopTransmit(st.call.getAudioMedia(-1))
        except pj.Error:
            pass
        del player  # released here, on the loop thread (pitfall 6)
        self.emit(mp.PromptFinished, st.call.key, path=st.player_path, reason=reason, digit=digit,
                  started=st.player_started)

    @staticmethod
    def _release_recorder(st: CallState, attr: str) -> None:
        rec = getattr(st, attr)
        setattr(st, attr, None)
        del rec

    def _collect_digit(self, st: CallState, digit: str) -> None:
        c = st.collect
        assert c is not None
        if digit in c.terminators:
            self._end_collect(st, "terminator")
            return
        c.digits += digit
        if len(c.digits) >= c.max_digits:
            self._end_collect(st, "max")
            return
        if c.timer is not None:
            c.timer.cancel()
        c.timer = self.loop.call_later(c.inter_timeout, self._collect_timeout, st.call.key)

    def _collect_timeout(self, key: str) -> None:
        st = self.calls.get(key)
        if st is not None:
            self._end_collect(st, "timeout")

    def _end_collect(self, st: CallState, reason: str | None) -> None:
        c, st.collect = st.collect, None
        if c is None:
            return
        if c.timer is not None:
            c.timer.cancel()
        if reason is not None:
            self.emit(mp.DigitsCollected, st.call.key, digits=c.digits, reason=reason)
