"""Control-plane side of the media protocol: send commands, receive events, await call outcomes.

ivr/, acd/ and callcenter/ drive calls only through ``CallHandle``. No pjsua2 here.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import cast

import redis.asyncio as aioredis

from bus import keys
from bus.redis import REDIS_DOWN, connect
from media import protocol as mp

log = logging.getLogger("media.client")

Listener = Callable[[mp.Event, "CallHandle | None"], None]


class CallEnded(Exception):
    """The call hung up while an operation was waiting on it."""

    def __init__(self, hangup: mp.HungUp):
        super().__init__(f"call {hangup.call_id} ended: {hangup.cause}")
        self.hangup = hangup


class MediaError(Exception):
    """A worker refused or failed a command."""


class OriginateFailed(Exception):
    def __init__(self, cause: str, code: int = 0):
        super().__init__(f"originate failed: {cause} ({code})")
        self.cause = cause
        self.code = code


class CallHandle:
    """One call leg on one worker. ``root`` is the inbound call an originated leg belongs to."""

    def __init__(self, client: "MediaClient", worker_id: str, call_id: str,
                 arrival: mp.CallArrived | None = None, root: "CallHandle | None" = None, uri: str = ""):
        self.client = client
        self.worker_id = worker_id
        self.call_id = call_id
        self.arrival = arrival
        self.root = root or self
        self.uri = uri  # what an originated leg dials
        self.answered = False
        self.masked = False  # the caller is keying a secret (a PIN): its keys stay out of the record
        # In the IVR keys may be typed ahead of the question they answer (a PIN too): single keys
        # are recorded without their value; the answers are (IVR_INPUT, masked when secret).
        self.hide_keys = False
        self.speaking = False  # the caller began to speak during the current listening
        self._answer_sent = False
        self.hangup_event: mp.HungUp | None = None
        self.ended = asyncio.Event()
        self._waiters: list[tuple[Callable[[mp.Event], bool], asyncio.Future[mp.Event]]] = []

    # -------------------------------------------------------------- event intake
    def feed(self, ev: mp.Event) -> None:
        if isinstance(ev, mp.Answered):
            self.answered = True
        elif isinstance(ev, mp.SpeechStarted):
            self.speaking = True
        for pred, fut in list(self._waiters):
            if not fut.done() and pred(ev):
                fut.set_result(ev)
        if isinstance(ev, mp.HungUp):
            self.hangup_event = ev
            self.ended.set()
            for _, fut in self._waiters:
                if not fut.done():
                    fut.set_exception(CallEnded(ev))
            self._waiters.clear()

    async def _request(self, cmd: mp.Command | None, pred: Callable[[mp.Event], bool],
                       timeout: float | None, answer: bool = False) -> mp.Event:
        if self.hangup_event is not None:
            raise CallEnded(self.hangup_event)
        fut: asyncio.Future[mp.Event] = asyncio.get_running_loop().create_future()
        kind = cmd.type if cmd is not None else ""

        def match(ev: mp.Event) -> bool:
            return pred(ev) or (isinstance(ev, mp.CommandFailed) and ev.command == kind)

        entry = (match, fut)
        self._waiters.append(entry)  # before sending: the answer may come back at once
        try:
            if cmd is not None:
                await self.client.send(self.worker_id, *self._answering(cmd, answer))
            ev = await asyncio.wait_for(fut, timeout)
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)
        if isinstance(ev, mp.CommandFailed) and not pred(ev):
            raise MediaError(f"{ev.command} on {self.call_id}: {ev.error}")
        return ev

    def _mine(self, kind: type[mp.Event]) -> Callable[[mp.Event], bool]:
        return lambda ev: isinstance(ev, kind) and ev.call_id == self.call_id

    def _answering(self, cmd: mp.Command, answer: bool) -> tuple[mp.Command, ...]:
        """``cmd``, behind an answer when asked for one and the call has none yet: both go in one
        message, so the worker answers and plays in one read (a round trip less per call on each
        side; the worker holds the prompt until the media is up)."""
        if not answer or self.answered or self._answer_sent:
            return (cmd,)
        self._answer_sent = True
        return (mp.Answer(self.call_id), cmd)

    # -------------------------------------------------------------- operations
    async def answer(self, timeout: float = 5.0, wait: bool = True) -> None:
        """Answer the call. ``wait=False`` only sends the command: the next operation follows
        without a round trip, and fails with CallEnded if the caller went away meanwhile. To answer
        and play a prompt, ``play``/``start_play`` with ``answer=True`` send both in one message."""
        if self.answered or self._answer_sent and not wait:
            return
        self._answer_sent = True
        if not wait:
            await self.client.send(self.worker_id, mp.Answer(self.call_id))
            return
        await self._request(mp.Answer(self.call_id), self._mine(mp.Answered), timeout)

    async def play(self, path: str, interrupt_digits: str = mp.ALL_DIGITS,
                   timeout: float | None = None, answer: bool = False) -> mp.PromptFinished:
        """Play a prompt to its end (or a key in ``interrupt_digits``); ``answer``: answer first."""
        # Match the path: stopping the prompt that played before (hold music) also reports a
        # PromptFinished, which may arrive after this request was sent.
        ev = await self._request(mp.Play(self.call_id, path=path, interrupt_digits=interrupt_digits),
                                 lambda e: isinstance(e, mp.PromptFinished) and e.call_id == self.call_id
                                 and e.path == path, timeout, answer)
        assert isinstance(ev, mp.PromptFinished)
        return ev

    async def start_play(self, path: str, loop: bool = True, interrupt_digits: str = "",
                         answer: bool = False) -> None:
        """Start a prompt and return at once; ``answer``: answer first (see ``_answering``)."""
        cmd = mp.Play(self.call_id, path=path, loop=loop, interrupt_digits=interrupt_digits)
        await self.client.send(self.worker_id, *self._answering(cmd, answer))

    async def stop_play(self) -> None:
        await self.client.send(self.worker_id, mp.StopPlay(self.call_id))

    async def collect(self, max_digits: int, first_timeout: float = 5.0, inter_timeout: float = 3.0,
                      terminators: str = "#") -> mp.DigitsCollected:
        cmd = mp.CollectDigits(self.call_id, max_digits=max_digits, first_timeout=first_timeout,
                               inter_timeout=inter_timeout, terminators=terminators)
        ev = await self._request(cmd, self._mine(mp.DigitsCollected), None)
        assert isinstance(ev, mp.DigitsCollected)
        return ev

    async def stop_collect(self) -> None:
        await self.client.send(self.worker_id, mp.StopCollect(self.call_id))

    async def start_listen(self, grammar: list[str], max_seconds: float = 15.0,
                           barge_in: bool = True) -> asyncio.Future[mp.Event]:
        """Stream the caller's audio to the speech service; the future is what it heard (SpeechResult),
        or CallEnded. Its waiter is in place before the command leaves: an answer cannot be missed."""
        if self.hangup_event is not None:
            raise CallEnded(self.hangup_event)
        self.speaking = False
        fut: asyncio.Future[mp.Event] = asyncio.get_running_loop().create_future()
        self._waiters.append((self._mine(mp.SpeechResult), fut))
        fut.add_done_callback(lambda f: self._forget(f))
        await self.client.send(self.worker_id, mp.Listen(self.call_id, grammar=grammar, max_seconds=max_seconds,
                                                         barge_in=barge_in))
        return fut

    def _forget(self, fut: asyncio.Future[mp.Event]) -> None:
        self._waiters = [w for w in self._waiters if w[1] is not fut]

    async def stop_listen(self) -> None:
        await self.client.send(self.worker_id, mp.StopListen(self.call_id))

    async def bridge(self, other: "CallHandle", timeout: float = 5.0) -> None:
        if other.worker_id != self.worker_id:
            raise MediaError("bridging legs on different workers is not supported")
        await self._request(mp.Bridge(self.call_id, other_call_id=other.call_id),
                            self._mine(mp.Bridged), timeout)

    async def unbridge(self, other: "CallHandle", music: str = "") -> None:
        """Disconnect from ``other``; with ``music``, this call hears it in a loop from then on (hold
        music: both in one message)."""
        cmds: list[mp.Command] = [mp.Unbridge(self.call_id, other_call_id=other.call_id)]
        if music:
            cmds.append(mp.Play(self.call_id, path=music, loop=True))
        await self.client.send(self.worker_id, *cmds)

    async def record(self, path: str) -> None:
        await self.client.send(self.worker_id, mp.Record(self.call_id, path=path))

    async def stop_record(self) -> None:
        await self.client.send(self.worker_id, mp.StopRecord(self.call_id))

    async def mute(self, muted: bool = True, timeout: float = 5.0) -> None:
        """Stop (or restart) sending this leg's audio to the legs it is bridged with."""
        await self._request(mp.Mute(self.call_id, muted=muted), self._mine(mp.Muted), timeout)

    async def send_dtmf(self, digits: str, timeout: float = 5.0) -> None:
        """Send keys to the far end of this leg; MediaError if the worker refuses them."""
        await self._request(mp.SendDtmf(self.call_id, digits=digits), self._mine(mp.DtmfSent), timeout)

    async def start_capture(self, path: str) -> None:
        await self.client.send(self.worker_id, mp.StartCapture(self.call_id, path=path))

    async def stop_capture(self) -> None:
        await self.client.send(self.worker_id, mp.StopCapture(self.call_id))

    async def transfer(self, uri: str, timeout: float = 30.0) -> mp.TransferResult:
        ev = await self._request(
            mp.Transfer(self.call_id, uri=uri),
            lambda e: isinstance(e, mp.TransferResult) and e.call_id == self.call_id and e.final,
            timeout,
        )
        assert isinstance(ev, mp.TransferResult)
        return ev

    async def hangup(self, code: int = 0, timeout: float = 5.0) -> None:
        if self.hangup_event is not None:
            return
        try:
            await self._request(mp.Hangup(self.call_id, code=code), self._mine(mp.HungUp), timeout)
        except CallEnded:
            pass

    async def originate(self, uri: str, timeout: float = 30.0, caller_id: str = "") -> "CallHandle":
        """Call ``uri`` from this call's worker; returns the answered leg or raises OriginateFailed."""
        return await self.client.originate(self.worker_id, uri, timeout=timeout, caller_id=caller_id,
                                           root=self.root)

    async def next_digit(self, digits: str = mp.ALL_DIGITS, timeout: float | None = None) -> str:
        """The next key the caller presses among ``digits`` (keys arrive as Digit events at any time)."""
        ev = await self._request(None, lambda e: isinstance(e, mp.Digit) and e.call_id == self.call_id
                                 and e.digit in digits, timeout)
        assert isinstance(ev, mp.Digit)
        return ev.digit

    async def wait_ended(self) -> mp.HungUp:
        await self.ended.wait()
        assert self.hangup_event is not None
        return self.hangup_event


async def first_ended(*calls: CallHandle) -> None:
    """Wait until one of the calls has ended (two bridged legs: whoever hangs up first)."""
    waits = [asyncio.create_task(c.ended.wait()) for c in calls]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


class MediaClient:
    """Reads the worker event stream as a consumer group member and routes events to handles."""

    GROUP = "control"

    def __init__(self, redis_url: str, on_call: Callable[[CallHandle], Awaitable[None]],
                 stale_after: float = 10.0):
        self.redis = connect(redis_url)
        self._reader = connect(redis_url, max_connections=2)
        self.on_call = on_call
        self.stale_after = stale_after
        self.calls: dict[str, CallHandle] = {}
        self.listeners: list[Listener] = []
        self.originate_listeners: list[Callable[[CallHandle], None]] = []
        self.consumer = f"{socket.gethostname()}-{os.getpid()}"
        self._tasks: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()
        self._empty_reads = 0

    async def start(self) -> None:
        try:
            await self.redis.xgroup_create(keys.MEDIA_EVENTS, self.GROUP, id="$", mkstream=True)
        except aioredis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def send(self, worker_id: str, *cmds: mp.Command) -> None:
        """Commands to one worker, in order, in one list entry."""
        await self.redis.rpush(keys.MEDIA_CMD_KEY.format(worker_id=worker_id), mp.encode_commands(cmds))

    async def originate(self, worker_id: str, uri: str, timeout: float = 30.0, caller_id: str = "",
                        root: CallHandle | None = None) -> CallHandle:
        leg = CallHandle(self, worker_id, "o-" + uuid.uuid4().hex[:16], root=root, uri=uri)
        self.calls[leg.call_id] = leg
        for hook in self.originate_listeners:
            hook(leg)
        try:
            await leg._request(mp.Originate(leg.call_id, uri=uri, caller_id=caller_id, timeout=timeout),
                               leg._mine(mp.Answered), timeout + 5.0)
        except CallEnded as exc:
            raise OriginateFailed(exc.hangup.cause, exc.hangup.code) from None
        except (TimeoutError, MediaError) as exc:
            await leg.hangup()
            raise OriginateFailed(str(exc) or "timeout") from None
        except asyncio.CancelledError:
            # Whoever waited gave up (the caller hung up, another phone answered first): stop the
            # ringing leg without waiting for it.
            if leg.hangup_event is None:
                await asyncio.shield(self.send(worker_id, mp.Hangup(leg.call_id)))
            raise
        return leg

    def _notify(self, ev: mp.Event, handle: CallHandle | None) -> None:
        for listener in self.listeners:
            try:
                listener(ev, handle)
            except Exception:  # noqa: BLE001 - a broken listener must not stop call handling
                log.exception("listener failed on %s", ev.type)

    def dispatch(self, ev: mp.Event) -> None:
        if isinstance(ev, mp.CallArrived):
            handle = CallHandle(self, ev.worker_id, ev.call_id, arrival=ev)
            self.calls[ev.call_id] = handle
            self._notify(ev, handle)  # every arrival becomes a record, a late one too
            if time.time() - ev.at > self.stale_after:
                # Held while Redis was away: the worker refused or timed it out long ago. No flow
                # for it; its HungUp follows in the same stream (the hangup covers a lost one).
                log.warning("late arrival %s (%.0f s old): recorded, not run", ev.call_id, time.time() - ev.at)
                task = asyncio.create_task(self._close_late(handle))
            else:
                task = asyncio.create_task(self._run_call(handle))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        h = self.calls.get(ev.call_id) if ev.call_id else None
        self._notify(ev, h)
        if h is not None:
            h.feed(ev)
            if isinstance(ev, mp.HungUp):
                self.calls.pop(ev.call_id, None)

    async def _run_call(self, handle: CallHandle) -> None:
        try:
            await self.on_call(handle)
        except CallEnded:
            pass
        except Exception:  # noqa: BLE001
            log.exception("call flow for %s failed", handle.call_id)
            await self._close_late(handle)

    async def _close_late(self, handle: CallHandle, patience: float = 30.0) -> None:
        """Hang up a call no flow runs any more. While Redis is away the hangup is retried (the
        caller keeps hearing what was playing), so it lands as soon as Redis is back."""
        deadline = time.monotonic() + patience
        while True:
            try:
                await handle.hangup()
                return
            except (MediaError, TimeoutError) as exc:  # the worker no longer has it, or is gone
                log.warning("hanging up %s: %s", handle.call_id, exc)
                return
            except REDIS_DOWN as exc:
                if time.monotonic() > deadline or self._stop.is_set():
                    log.error("could not hang up %s: %s", handle.call_id, exc)
                    return
                await asyncio.sleep(1.0)

    def fail_worker(self, worker_id: str, cause: str = "media_worker_lost") -> int:
        """The worker is gone: every call it held ends now, with ``cause``."""
        lost = [h for h in self.calls.values() if h.worker_id == worker_id]
        for h in lost:
            self.dispatch(mp.HungUp(worker_id=worker_id, call_id=h.call_id, at=time.time(),
                                    cause=cause, code=0, side="lost"))
        return len(lost)

    async def run(self) -> None:
        while not self._stop.is_set():
            try:
                # NOACK: nothing reads the pending list back (a restarted node resumes after the last
                # entry delivered), so an XACK per read was a round trip for nothing.
                resp = await self._reader.xreadgroup(self.GROUP, self.consumer, {keys.MEDIA_EVENTS: ">"},
                                                     count=500, block=500, noack=True)
            except REDIS_DOWN as exc:
                log.warning("event stream unreachable: %s", exc)
                await asyncio.sleep(0.5)
                continue
            except aioredis.ResponseError as exc:
                if "NOGROUP" in str(exc):
                    await self.start()
                    continue
                raise
            if not resp:
                self._empty_reads += 1
            for _stream, entries in cast(list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]], resp or []):
                for entry_id, fields in entries:
                    try:
                        ev = mp.decode(fields[b"m"])
                    except (mp.ProtocolError, KeyError) as exc:
                        log.warning("bad event %s: %s", entry_id, exc)
                        continue
                    if isinstance(ev, mp.Event):
                        self.dispatch(ev)

    async def stop_reading(self, reader: "asyncio.Task[None]", timeout: float = 3.0) -> None:
        """End ``run`` by asking, not by cancelling: a cancelled blocking read can leave redis-py's
        asyncio connection stuck (redis/redis-py#2579, #2028). The read blocks 0.5 s at most."""
        self._stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(reader), timeout)
        except TimeoutError:
            log.warning("event reader did not stop in %.0f s; cancelling it", timeout)
            reader.cancel()
            await asyncio.wait({reader}, timeout=timeout)

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait until the stream has been read dry (events already sent are handled)."""
        seen = self._empty_reads
        deadline = time.monotonic() + timeout
        while self._empty_reads < seen + 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        self._stop.set()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.redis.aclose()
        await self._reader.aclose()
