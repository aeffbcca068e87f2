"""Streaming a listening call's audio to the speech service (ivr/speech_service.py) and its answers
back as media events (Listen → SpeechStarted, SpeechResult).

The call's conference port transmits to a custom pjsua2 port whose ``onFrameReceived`` runs on a
pjmedia thread: it only copies the 20 ms frame and hands it to the loop (pitfall 6's rule). The
loop writes frames to one TCP connection per listening; nothing is written to disk. Everything that
touches pjsua2 runs on the loop thread, and the port is disconnected before the call's media goes
(pitfall 9).

Ports are lent, never destroyed while the endpoint runs: pjsua2 2.15.1's conference bridge applies
connects and removals asynchronously on its clock thread, and an ``AudioMediaPort`` destroyed while
the bridge may still feed it (a call's media torn down, its disconnect not yet applied) crashed the
worker with SIGSEGV (bench/ivr at 50 streams; fixed upstream after 2.15.1, pjproject#4200).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import pjsua2 as pj

from media import protocol as mp
from media.call_media import Emit
from media.call_state import CallState
from media.frame_bytes import frame_bytes

log = logging.getLogger("media.speech")

CONNECT_TIMEOUT = 1.0
BATCH = 5  # frames (100 ms) handed to the loop at once: the speech service feeds Vosk 100 ms at a time
MAX_QUEUED = 50  # batches (5 s) waiting for a slow connection; older ones are dropped
REUSE_AFTER = 0.2  # s: a port is lent again only once the bridge has applied its disconnect


class FramePort(pj.AudioMediaPort):
    """A sink port of the conference bridge; its audio goes to ``sink`` on the loop in batches of
    BATCH frames (none: dropped). ``onFrameReceived`` runs on the bridge's clock thread and keeps the
    batch there; one hand-off per batch, not per 20 ms frame, wakes the loop five times less."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        super().__init__()
        self._loop = loop
        self.sink: Callable[[bytes], None] | None = None
        self._batch: list[bytes] = []
        self._batch_for: Callable[[bytes], None] | None = None  # the sink the batch was gathered for

    def onFrameReceived(self, frame: pj.MediaFrame) -> None:
        try:
            sink = self.sink
            if sink is not self._batch_for:  # lent again, or given back: start afresh
                self._batch, self._batch_for = [], sink
            if sink is None or frame.type != pj.PJMEDIA_FRAME_TYPE_AUDIO or not frame.size:
                return
            self._batch.append(frame_bytes(frame.buf))
            if len(self._batch) >= BATCH:
                self._loop.call_soon_threadsafe(sink, b"".join(self._batch))
                self._batch = []
        except Exception:  # noqa: BLE001 - nothing may escape a pjsua2 callback (pitfall 3)
            pass


class PortPool:
    """The worker's frame ports: made when first needed, lent to one listening at a time, kept until
    the endpoint shuts down (see the module's note)."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.free: list[tuple[float, FramePort]] = []  # (when it may be lent again, port)
        self.made: list[FramePort] = []  # every port, lent or free: none is dropped before shutdown

    def lend(self, sink: Callable[[bytes], None]) -> FramePort:
        if self.free and self.free[0][0] <= self.loop.time():
            port = self.free.pop(0)[1]
        else:
            port = FramePort(self.loop)
            fmt = pj.MediaFormatAudio()
            fmt.type = pj.PJMEDIA_TYPE_AUDIO
            fmt.init(pj.PJMEDIA_FORMAT_PCM, 8000, 1, 20000, 16)
            port.createPort(f"asr-{len(self.made)}", fmt)
            self.made.append(port)
        port.sink = sink
        return port

    def give_back(self, port: FramePort) -> None:
        port.sink = None
        self.free.append((self.loop.time() + REUSE_AFTER, port))

    def destroy(self) -> None:
        """At shutdown, with every call gone: the ports go before the endpoint does (pitfall 4)."""
        self.free.clear()
        self.made.clear()


class Listening:
    """One Listen of one call."""

    def __init__(self, streams: SpeechStreams, st: CallState, cmd: mp.Listen):
        self.streams = streams
        self.key = st.call.key
        self.cmd = cmd
        self.frames: asyncio.Queue[bytes] = asyncio.Queue(MAX_QUEUED)
        self.port: FramePort | None = streams.ports.lend(self._frame)
        try:
            st.call.getAudioMedia(-1).startTransmit(self.port)
        except pj.Error:
            streams.ports.give_back(self.port)
            raise
        self.done = False
        self.began = time.time()  # the port hears the call in real time from here
        self.ended = 0.0  # when the caller's last word ended (wall clock)
        self.task = streams.loop.create_task(self._run())

    def _frame(self, pcm: bytes) -> None:
        if self.done:
            return
        if self.frames.full():
            self.frames.get_nowait()
        self.frames.put_nowait(pcm)

    async def _run(self) -> None:
        reason, words = "final", []  # type: tuple[str, list[Any]]
        try:
            reason, words = await asyncio.wait_for(self._stream(), self.cmd.max_seconds + CONNECT_TIMEOUT + 2)
        except TimeoutError:
            reason = "timeout"
        except (OSError, ValueError) as exc:
            log.warning("speech service: %s", exc)
            reason = "unavailable"
        finally:
            self.close()
        self.streams.emit(mp.SpeechResult, self.key, words=words, reason=reason, ended=self.ended)

    async def _stream(self) -> tuple[str, list[Any]]:
        host, port = self.streams.address
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), CONNECT_TIMEOUT)
        try:
            writer.write(json.dumps({"grammar": self.cmd.grammar, "rate": 8000}, ensure_ascii=False).encode() + b"\n")
            pump = asyncio.create_task(self._pump(writer))
            try:
                while True:
                    line = await reader.readline()
                    if not line:
                        return "final", []
                    msg = json.loads(line)
                    if msg.get("speech"):
                        self.streams.speech_started(self.key, self.cmd.barge_in)
                    if msg.get("final"):
                        if msg.get("end"):
                            self.ended = self.began + float(msg["end"])
                        return ("timeout" if pump.done() and not msg["words"] else "final"), msg["words"]
            finally:
                pump.cancel()
        finally:
            writer.close()

    async def _pump(self, writer: asyncio.StreamWriter) -> None:
        """Audio to the service; at max_seconds (or StopListen) the audio ends: the service answers."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.cmd.max_seconds):
                while True:
                    writer.write(await self.frames.get())
                    await writer.drain()
        with contextlib.suppress(OSError):
            writer.write_eof()

    def stop(self) -> None:
        """StopListen: end the audio now (the result that follows is reported as stopped)."""
        self.done = True
        self.task.cancel()

    def close(self, st: CallState | None = None) -> None:
        """Disconnect the port from the call (on the loop thread, before the call's media goes)."""
        self.done = True
        port, self.port = self.port, None
        if port is None:
            return
        st = st or self.streams.calls.get(self.key)
        if st is not None and st.media_ready:
            with contextlib.suppress(pj.Error):  # media already gone: the bridge disconnects it itself
                st.call.getAudioMedia(-1).stopTransmit(port)
        self.streams.ports.give_back(port)


class SpeechStreams:
    def __init__(self, loop: asyncio.AbstractEventLoop, calls: dict[str, CallState], emit: Emit, address: str,
                 interrupt: Callable[[CallState], None]):
        self.loop = loop
        self.calls = calls
        self.emit = emit
        host, _, port = address.rpartition(":")
        self.address = (host, int(port)) if address else ("", 0)
        self.interrupt = interrupt  # stops the call's prompt (barge-in)
        self.active: dict[str, Listening] = {}
        self.ports = PortPool(loop)

    def listen(self, st: CallState, cmd: mp.Listen) -> None:
        self._end(st.call.key)
        if not self.address[1] or not st.media_ready:
            self.emit(mp.SpeechResult, st.call.key, words=[], reason="unavailable")
            return
        try:
            listening = Listening(self, st, cmd)
        except pj.Error:  # its media went between the check and the connect
            self.emit(mp.SpeechResult, st.call.key, words=[], reason="unavailable")
            return
        self.active[st.call.key] = listening
        listening.task.add_done_callback(lambda _t: self._finished(listening))

    def stop_listen(self, st: CallState, cmd: mp.StopListen) -> None:
        listening = self.active.pop(st.call.key, None)
        if listening is not None:
            listening.stop()
            listening.close(st)
            self.emit(mp.SpeechResult, st.call.key, words=[], reason="stopped")

    def speech_started(self, key: str, barge_in: bool) -> None:
        st = self.calls.get(key)
        if st is None:
            return
        if barge_in:
            self.interrupt(st)
        self.emit(mp.SpeechStarted, key)

    def release(self, st: CallState) -> None:
        listening = self.active.pop(st.call.key, None)
        if listening is not None:
            listening.stop()
            listening.close(st)

    def _end(self, key: str) -> None:
        listening = self.active.pop(key, None)
        if listening is not None:
            listening.stop()
            listening.close()

    def _finished(self, listening: Listening) -> None:
        if self.active.get(listening.key) is listening:
            del self.active[listening.key]
