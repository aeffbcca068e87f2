"""A media worker: one process, one pjsua2 endpoint, its few calls, driven by the media protocol.

Run as ``python -m media.worker --id w1 --sip-port 5070 --rtp-port 20000 --redis-url ...``.
It knows calls, not customers: every decision comes from the control plane as a command. This
module holds the signalling (which INVITEs are taken, answers, hangups, transfers, originated legs,
their timeouts) and the life cycle; ``call_media`` the audio side, ``worker_bus`` the Redis side.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import signal
import time
import weakref
from collections.abc import Callable
from typing import Any

import pjsua2 as pj

from media import protocol as mp
from media.call_media import CallMedia
from media.call_state import CallState, cause_for
from media.endpoint import EndpointConfig, create_endpoint, probe_max_calls, pump, sip_sockets
from media.pj_callbacks import Account, Call
from media.sipuri import clean_text, request_uri, split_name_addr, user_part
from media.speech_stream import REUSE_AFTER, SpeechStreams
from media.worker_bus import STALLED, WorkerBus
from media.worker_config import WorkerConfig, parse_args

log = logging.getLogger("media.worker")

RING_DELAY = 0.5  # seconds before a call the control plane has not answered hears ringing (180)


class Worker:
    def __init__(self, cfg: WorkerConfig):
        self.cfg = cfg
        self.id = cfg.worker_id
        self.loop = asyncio.get_running_loop()
        self.calls: dict[str, CallState] = {}
        self.seq = 0
        self.stop = asyncio.Event()
        self.accepting = False
        self.bus = WorkerBus(cfg.worker_id, cfg.redis_url)
        self.max_calls = 0
        self.capacity = 0
        self._self_ref = weakref.ref(self)
        ep_cfg = EndpointConfig(cfg.host, cfg.sip_port, cfg.rtp_port, cfg.rtp_port_count)
        self.ep, acc_cfg = create_endpoint(ep_cfg)
        self.acc = Account(self)
        self.acc.create(acc_cfg)
        self.max_calls = cfg.max_calls_override or probe_max_calls(self.ep, self.acc, cfg.host)
        if cfg.front_door:  # after the probe, whose calls go to a local socket of its own
            acc_cfg.sipConfig.proxies.append(f"sip:{cfg.front_door};lr")
            self.acc.modify(acc_cfg)
        self.capacity = max(1, self.max_calls - cfg.outbound_reserve)
        self.sip_uri = f"sip:{cfg.host}:{cfg.sip_port}"
        self.media = CallMedia(self.loop, self.calls, self.emit, self._self_ref)
        m = self.media
        self.speech = SpeechStreams(self.loop, self.calls, self.emit, cfg.speech, m.interrupt)
        self._handlers: dict[type[mp.Command], Callable[[CallState, Any], None]] = {
            mp.Answer: self.cmd_answer, mp.Hangup: self.cmd_hangup, mp.Transfer: self.cmd_transfer,
            mp.Play: m.play, mp.StopPlay: m.stop_play, mp.CollectDigits: m.collect,
            mp.StartCapture: m.start_capture, mp.StopCapture: m.stop_capture, mp.Record: m.record,
            mp.StopRecord: m.stop_record, mp.Bridge: m.bridge, mp.Unbridge: m.unbridge, mp.Mute: m.mute,
            mp.SendDtmf: m.send_dtmf, mp.StopCollect: m.stop_collect, mp.Listen: self.speech.listen,
            mp.StopListen: self.speech.stop_listen,
        }

    # ------------------------------------------------------------------ events out
    def emit(self, cls: type[mp.Event], call_id: str, **kw: Any) -> None:
        self.bus.emit(cls(worker_id=self.id, call_id=call_id, at=time.time(), **kw))  # type: ignore[call-arg]

    def _info(self) -> str:
        return json.dumps(
            {
                "worker_id": self.id,
                "sip_uri": self.sip_uri,
                "host": self.cfg.host,
                "sip_port": self.cfg.sip_port,
                "max_calls": self.max_calls,
                "capacity": self.capacity,
                "calls": len(self.calls),
                "pid": os.getpid(),
                "at": time.time(),
            }
        )

    # ------------------------------------------------------------------ commands in
    def _execute_raw(self, raw: bytes) -> None:
        try:
            cmds = mp.decode_commands(raw)
        except mp.ProtocolError as exc:
            log.warning("%s", exc)
            return
        for cmd in cmds:
            if not isinstance(cmd, mp.Command):
                log.warning("not a command: %s", cmd.type)
                continue
            try:
                self.execute(cmd)
            except Exception as exc:  # noqa: BLE001 - one bad command must not stop the worker
                log.exception("command %s failed", cmd.type)
                self.emit(mp.CommandFailed, getattr(cmd, "call_id", ""), command=cmd.type, error=str(exc))

    def execute(self, cmd: mp.Command) -> None:
        if isinstance(cmd, mp.Shutdown):
            self.stop.set()
            return
        if isinstance(cmd, mp.Originate):
            self.originate(cmd)
            return
        st = self.calls.get(cmd.call_id)
        if st is None:
            self.emit(mp.CommandFailed, cmd.call_id, command=cmd.type, error="no such call")
            return
        self._handlers[type(cmd)](st, cmd)

    def cmd_answer(self, st: CallState, cmd: mp.Answer) -> None:
        self._cancel_timer(st)
        prm = pj.CallOpParam()
        prm.statusCode = cmd.code
        st.call.answer(prm)
        if 200 <= cmd.code < 300:  # an INVITE flood that never ACKs must not hold the slot for 32 s
            st.timer = self.loop.call_later(self.cfg.ack_timeout, self._ack_timeout, st.call.key)

    def cmd_transfer(self, st: CallState, cmd: mp.Transfer) -> None:
        st.call.xfer(cmd.uri, pj.CallOpParam(True))

    def cmd_hangup(self, st: CallState, cmd: mp.Hangup) -> None:
        st.hangup_side = st.hangup_side or "platform"
        st.hangup_cause = st.hangup_cause or "hangup_command"
        prm = pj.CallOpParam()
        if cmd.code:
            prm.statusCode = cmd.code
        st.call.hangup(prm)

    def originate(self, cmd: mp.Originate) -> None:
        if cmd.call_id in self.calls:
            raise RuntimeError(f"call id {cmd.call_id} in use")
        if len(self.calls) >= self.max_calls:
            self.emit(mp.HungUp, cmd.call_id, cause="no_capacity", code=503, side="worker")
            return
        call = Call(self, self.acc, cmd.call_id)
        st = CallState(call=call, outbound=True)
        self.calls[cmd.call_id] = st
        prm = pj.CallOpParam(True)
        if cmd.caller_id:
            hdr = pj.SipHeader()
            hdr.hName = "P-Asserted-Identity"
            hdr.hValue = f"<sip:{cmd.caller_id}@{self.cfg.host}>"
            prm.txOption.headers.append(hdr)
        try:
            call.makeCall(cmd.uri, prm)
        except pj.Error as exc:
            del self.calls[cmd.call_id]
            self.emit(mp.HungUp, cmd.call_id, cause="originate_failed", code=0, side="worker",
                      extra={"error": exc.reason})
            return
        st.timer = self.loop.call_later(cmd.timeout, self._ring_timeout, cmd.call_id)

    # ------------------------------------------------------------------ pjsua2 callbacks
    def on_incoming(self, prm: pj.OnIncomingCallParam) -> None:
        self.seq += 1
        key = f"{self.id}-{self.seq}"
        call = Call(self, self.acc, key, prm.callId)
        st = CallState(call=call, outbound=False)
        inbound = sum(1 for s in self.calls.values() if not s.outbound)
        self.calls[key] = st
        reply = pj.CallOpParam()
        if self.cfg.front_door and prm.rdata.srcAddress != self.cfg.front_door:
            log.warning("SECURITY: INVITE from %s refused: calls come through the front door",
                        clean_text(prm.rdata.srcAddress, 64))
            st.reported = False
            reply.statusCode = 403
            reply.reason = "Use the front door"
            call.answer(reply)
            return
        if not self.accepting or inbound >= self.capacity:
            # Full (or stopping): 503 lets the front door try another worker.
            st.reported = False
            reply.statusCode = 503
            reply.reason = "Media worker full"
            call.answer(reply)
            return
        info = call.getInfo()
        caller_name, caller_uri = split_name_addr(info.remoteUri)
        ruri = request_uri(prm.rdata.wholeMsg) or split_name_addr(info.localUri)[1]
        # Everything below comes from the caller's headers: cleaned here, at the boundary.
        self.emit(
            mp.CallArrived,
            key,
            caller_uri=clean_text(caller_uri, 256),
            caller_number=clean_text(user_part(caller_uri), 64),
            caller_name=clean_text(caller_name, 128),
            dialed_uri=clean_text(ruri, 256),
            dialed_number=clean_text(user_part(ruri), 64),
            sip_call_id=clean_text(info.callIdString, 256),
        )
        if not self.bus.reachable:
            # Redis is away: nobody can take the call now. Refuse it at once (480, not 503: the
            # other workers share the same Redis, so the front door must not try them all); the
            # arrival and its end are held with the other events and still become a record.
            log.warning("call %s refused with 480: control_unavailable (Redis)", key)
            st.hangup_side, st.hangup_cause = "worker", "control_unavailable"
            reply.statusCode = 480
            reply.reason = "Call control unavailable"
            call.answer(reply)
            return
        # No 180 yet: the front door has sent 100 Trying, and a control plane that answers at once
        # (the usual case) sends the 200 alone. A 180 sent just before it could overtake it in the
        # front door's parallel workers (seen under load: a 180 after the 200, which SIPp refuses).
        # The control plane must take the call in time, or the caller hears a clean refusal. One
        # timer per ringing call (the answer cancels it): a timer that fires costs a loop wake-up.
        st.timer = self.loop.call_later(min(RING_DELAY, self.cfg.answer_timeout), self._ringing_check, key,
                                        time.monotonic())

    def on_call_state(self, key: str) -> None:
        st = self.calls.get(key)
        if st is None:
            return
        info = st.call.getInfo()
        if info.state == pj.PJSIP_INV_STATE_EARLY and st.outbound:
            self.emit(mp.Ringing, key)
        elif info.state == pj.PJSIP_INV_STATE_CONFIRMED and not st.answered:
            st.answered = True
            self._cancel_timer(st)
            self.emit(mp.Answered, key)
        elif info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self._disconnected(st, info.lastStatusCode, info.lastReason)

    def on_media_state(self, key: str) -> None:
        st = self.calls.get(key)
        if st is not None:
            self.media.media_state(st)

    def on_digit(self, key: str, digit: str, method: str) -> None:
        st = self.calls.get(key)
        if st is None:
            return
        self.emit(mp.Digit, key, digit=digit, method=method)
        self.media.digit(st, digit)

    def on_player_eof(self, key: tuple[str, int]) -> None:
        self.media.player_eof(key)

    def on_transfer_status(self, key: str, code: int, final: bool) -> None:
        self.emit(mp.TransferResult, key, code=code, final=final)
        st = self.calls.get(key)
        if final and st is not None and 200 <= code < 300:
            st.hangup_side, st.hangup_cause = "platform", "transferred"
            st.call.hangup(pj.CallOpParam())

    # ------------------------------------------------------------------ helpers
    def _disconnected(self, st: CallState, code: int, reason: str) -> None:
        key = st.call.key
        self._cancel_timer(st)
        self.speech.release(st)  # its port goes before the call's media
        self.media.release(st)
        side = st.hangup_side or "remote"
        cause = st.hangup_cause or ("normal_clearing" if st.answered else cause_for(code))
        # Pitfall 1: drop the pjsua2 Call here, inside DISCONNECTED, so its id is not reused under it.
        del self.calls[key]
        st.call = None  # type: ignore[assignment]
        if st.reported:
            self.emit(mp.HungUp, key, cause=cause, code=code, side=side, extra={"reason": reason})

    def _cancel_timer(self, st: CallState) -> None:
        if st.timer is not None:
            st.timer.cancel()
            st.timer = None

    def _ringing_check(self, key: str, arrived: float) -> None:
        """A call the control plane has not answered yet: ringing from RING_DELAY on, refused when
        Redis froze as it came in (checked again STALLED after the arrival) or at the answer deadline."""
        st = self.calls.get(key)
        if st is None or st.answered:
            return
        st.timer = None
        elapsed, limit = time.monotonic() - arrived, self.cfg.answer_timeout
        if not self.bus.reachable:
            self._refuse_ringing(st, "control_unavailable")
            return
        if elapsed >= limit - 0.01:
            self._refuse_ringing(st, "control_plane_timeout")
            return
        if not st.ringing:
            st.ringing = True
            prm = pj.CallOpParam()
            prm.statusCode = 180
            st.call.answer(prm)
        after = STALLED + 0.3 if elapsed < STALLED + 0.29 else limit
        st.timer = self.loop.call_later(min(after, limit) - elapsed, self._ringing_check, key, arrived)

    def _refuse_ringing(self, st: CallState, cause: str) -> None:
        """480, not 503: another worker would wait for the same control plane (or Redis) again."""
        log.warning("call %s refused with 480: %s", st.call.key, cause)
        st.hangup_side, st.hangup_cause = "worker", cause
        prm = pj.CallOpParam()
        prm.statusCode = 480
        prm.reason = "Call control unavailable"
        st.call.hangup(prm)

    def _ack_timeout(self, key: str) -> None:
        st = self.calls.get(key)
        if st is None or st.answered:
            return
        log.warning("call %s: no ACK %.0f s after the answer; hanging up", key, self.cfg.ack_timeout)
        st.hangup_side, st.hangup_cause = "worker", "no_ack"
        st.call.hangup(pj.CallOpParam())

    def _ring_timeout(self, key: str) -> None:
        st = self.calls.get(key)
        if st is None or st.answered:
            return
        st.hangup_side, st.hangup_cause = "worker", "no_answer"
        st.call.hangup(pj.CallOpParam())

    # ------------------------------------------------------------------ life cycle
    async def run(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self.stop.set)
        publisher = asyncio.create_task(self.bus.publish())
        pump_task = asyncio.create_task(pump(self.ep, self.stop, lambda: bool(self.calls),
                                             sip_sockets(self.cfg.sip_port)))
        self.accepting = True
        await self.bus.forget_commands()
        self.emit(mp.WorkerUp, "", sip_uri=self.sip_uri, max_calls=self.max_calls, capacity=self.capacity,
                  pid=os.getpid())
        cfg = self.cfg
        tasks = [asyncio.create_task(self.bus.heartbeat(self.stop, cfg.heartbeat_ttl, cfg.heartbeat_interval,
                                                        self._info)),
                 asyncio.create_task(self.bus.commands(self.stop, self._execute_raw))]
        log.info("worker %s on %s: %d calls per process, %d inbound", self.id, self.sip_uri,
                 self.max_calls, self.capacity)
        await self.stop.wait()
        self.accepting = False
        await self._hangup_all()
        pump_task.cancel()
        for t in tasks:
            t.cancel()
        await asyncio.gather(pump_task, *tasks, return_exceptions=True)
        await self.bus.leave()
        self.emit(mp.WorkerDown, "", reason="shutdown")
        try:
            await asyncio.wait_for(publisher, 5)
        except TimeoutError:
            log.error("could not publish %d final events", self.bus.events.qsize())
        await self.bus.aclose()
        self.destroy()

    async def _hangup_all(self) -> None:
        for st in list(self.calls.values()):
            st.hangup_side, st.hangup_cause = "platform", "worker_shutdown"
            try:
                st.call.hangup(pj.CallOpParam())
            except pj.Error:
                pass
        deadline = time.monotonic() + 3.0
        while self.calls and time.monotonic() < deadline:
            self.ep.libHandleEvents(0)
            await asyncio.sleep(0.01)

    def destroy(self) -> None:
        """Orderly teardown (pitfall 4): calls gone, objects dropped, account shut down, then libDestroy."""
        self.calls.clear()
        self.speech.ports.destroy()
        gc.collect()
        time.sleep(REUSE_AFTER)  # the bridge applies the ports' removal on its own thread
        self.acc.shutdown()
        del self.acc
        gc.collect()
        self.ep.libDestroy()


def main(argv: list[str] | None = None) -> None:
    cfg, log_level = parse_args(argv)
    logging.basicConfig(level=log_level, format=f"%(asctime)s {cfg.worker_id} %(levelname)s %(message)s")
    gc.disable()  # collected by hand on the loop thread (pitfall 2)

    async def _run() -> None:
        try:
            worker = Worker(cfg)
        except pj.Error as exc:
            # e.g. the SIP port is taken: say which, exit non-zero; the supervisor retries with back-off
            log.error("cannot start on %s:%d (RTP %d+): %s", cfg.host, cfg.sip_port, cfg.rtp_port, exc.info())
            raise SystemExit(2) from None
        await worker.run()

    asyncio.run(_run())


if __name__ == "__main__":
    main()
