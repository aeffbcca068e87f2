"""The pjsua2 endpoint of one media process: creation, the asyncio pump, limit probe, shutdown.

Follows docs from ../shared/design/media-pjsua2.md: the endpoint lives on the event-loop thread
(threadCnt=0, mainThreadOnly) and a pump task calls libHandleEvents; the automatic GC is off and
run by hand on the loop thread so that no pjsua2 object is ever freed on a pjmedia thread.
"""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import pjsua2 as pj


@dataclass(frozen=True)
class EndpointConfig:
    host: str
    sip_port: int
    rtp_port: int
    rtp_port_count: int
    log_level: int = 1


class _ProbeCall(pj.Call):
    def __init__(self, acc: pj.Account, live: dict[int, "_ProbeCall"]) -> None:
        super().__init__(acc)
        self._live = live

    def onCallState(self, prm: pj.OnCallStateParam) -> None:
        try:
            if self.getInfo().state == pj.PJSIP_INV_STATE_DISCONNECTED:
                self._live.pop(self.getId(), None)
        except Exception:  # noqa: BLE001 - never let an exception escape a callback
            pass


def create_endpoint(cfg: EndpointConfig) -> tuple[pj.Endpoint, pj.AccountConfig]:
    ep = pj.Endpoint()
    ep.libCreate()
    ec = pj.EpConfig()
    ec.uaConfig.threadCnt = 0
    ec.uaConfig.mainThreadOnly = True
    ec.uaConfig.maxCalls = 1024  # cut silently to the build's PJSUA_MAX_CALLS; probed below
    ec.uaConfig.userAgent = "callcenter-media"
    ec.logConfig.level = cfg.log_level
    ec.logConfig.consoleLevel = cfg.log_level
    ec.medConfig.clockRate = 8000
    ec.medConfig.sndClockRate = 8000
    ec.medConfig.channelCount = 1
    ec.medConfig.ecTailLen = 0  # no echo canceller: it costs CPU and we have no sound card
    ec.medConfig.noVad = True  # keep RTP flowing through silence
    ep.libInit(ec)
    ep.audDevManager().setNullDev()
    tc = pj.TransportConfig()
    tc.port = cfg.sip_port
    tc.boundAddress = cfg.host
    ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tc)
    ep.libStart()
    for codec in ep.codecEnum2():
        prio = {"PCMU/8000/1": 255, "PCMA/8000/1": 254}.get(codec.codecId, 0)
        ep.codecSetPriority(codec.codecId, prio)
    ac = pj.AccountConfig()
    ac.idUri = f"sip:media@{cfg.host}:{cfg.sip_port}"
    ac.mediaConfig.transportConfig.port = cfg.rtp_port
    ac.mediaConfig.transportConfig.portRange = cfg.rtp_port_count
    ac.mediaConfig.transportConfig.boundAddress = cfg.host
    return ep, ac


def _refuse_invites(sock: socket.socket) -> int:
    """A stateless UAS for the probe: answer each INVITE 480 so pjsua frees the call at once."""
    n = 0
    while True:
        try:
            data, addr = sock.recvfrom(65535)
        except BlockingIOError:
            return n
        msg = data.decode(errors="replace")
        if not msg.startswith("INVITE "):
            continue
        keep = [ln for ln in msg.split("\r\n")
                if ln.split(":", 1)[0].strip().lower() in ("via", "v", "from", "f", "to", "t", "call-id", "i", "cseq")]
        reply = "SIP/2.0 480 Probe\r\n" + "\r\n".join(keep) + "\r\nContent-Length: 0\r\n\r\n"
        sock.sendto(reply.encode(), addr)
        n += 1


def probe_max_calls(ep: pj.Endpoint, acc: pj.Account, host: str, ceiling: int = 2048) -> int:
    """Read the build's real per-process call limit: pjsua2 does not expose PJSUA_MAX_CALLS and cuts
    a larger maxCalls silently, so start calls to a local refuser until PJ_ETOOMANY. The refuser
    answers 480, so every probe call ends at once and leaves no slot behind."""
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind((host, 0))
    sink.setblocking(False)
    uri = f"sip:limit-probe@{host}:{sink.getsockname()[1]}"
    live: dict[int, _ProbeCall] = {}
    count = 0
    try:
        while count < ceiling:
            call = _ProbeCall(acc, live)
            try:
                call.makeCall(uri, pj.CallOpParam(True))
            except pj.Error:
                del call
                break
            live[call.getId()] = call
            count += 1
        call = None  # type: ignore[assignment]
        deadline = time.monotonic() + 5.0
        while live and time.monotonic() < deadline:
            ep.libHandleEvents(5)
            _refuse_invites(sink)
    finally:
        sink.close()
    if live:
        raise RuntimeError(f"limit probe: {len(live)} probe calls did not end")
    return count


def sip_sockets(port: int) -> list[int]:
    """The file descriptors of the endpoint's SIP sockets (pjsua2 does not expose them): the ones
    of this process bound to ``port``."""
    fds = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            with socket.socket(fileno=os.dup(int(fd))) as sock:
                if sock.type == socket.SOCK_DGRAM and sock.getsockname()[1] == port:
                    fds.append(int(fd))
        except (OSError, ValueError, IndexError, TypeError):
            continue
    return fds


async def pump(ep: pj.Endpoint, stop: asyncio.Event, busy: Callable[[], bool], sip_fds: list[int] | None = None,
               busy_max: float = 0.05, idle_max: float = 0.1) -> None:
    """Drive pjsua2 from the event loop. Every wake-up costs CPU (about 0.2 ms on the 2-core VM this
    was measured on), so the pump sleeps until a SIP packet arrives on one of ``sip_fds`` (the
    loop watches them), or at the latest ``busy_max`` while the process has calls and ``idle_max``
    when it has none: pjsip's timers, and what pjmedia's threads hand over through the
    ``mainThreadOnly`` queue (DTMF, media events), wait at most that long. 20 ms instead of 50 cost
    a loaded platform 35 % more worker CPU at 75 calls/s (BENCHMARKS.md). Without ``sip_fds`` it
    polls with a short back-off after each event instead. Bounded batches keep commands flowing."""
    loop = asyncio.get_running_loop()
    wake: asyncio.Future[None] = loop.create_future()

    def woken() -> None:
        if not wake.done():
            wake.set_result(None)

    for fd in sip_fds or ():
        loop.add_reader(fd, woken)
    idle = 0.001
    last_gc = last_full = time.monotonic()
    try:
        while not stop.is_set():
            handled = 0
            for _ in range(64):
                n = ep.libHandleEvents(0)
                if n <= 0:
                    break
                handled += n
            if handled:
                idle = 0.001
                await asyncio.sleep(0)
            elif sip_fds:
                # A bare future and a timer handle: asyncio.wait_for would make a task per wait.
                wake = loop.create_future()
                timer = loop.call_later(busy_max if busy() else idle_max, woken)
                await wake
                timer.cancel()
            else:
                await asyncio.sleep(idle)
                idle = min(idle * 2, busy_max if busy() else idle_max)
            now = time.monotonic()
            if now - last_gc > 5.0:
                # The young generations every 5 s (what calls left behind: ~0.1 ms), everything once a
                # minute: a full collection every 5 s cost 25 ms of CPU in a loaded worker, a third of a
                # core over 64 workers (BENCHMARKS.md).
                if now - last_full > 60.0:
                    gc.collect()
                    last_full = now
                else:
                    gc.collect(1)
                last_gc = now
    finally:
        for fd in sip_fds or ():
            loop.remove_reader(fd)
