"""Baseline for bench/sip_capacity: a bare pjsua2 process that answers every call and loops a prompt,
with no Redis, no control plane and no application logic. Same endpoint settings as a media worker.

    python -m bench.bare_answer --sip-port 5070 --rtp-port 20000 --prompt var/prompts/hold_loop.wav
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import signal

import pjsua2 as pj

from media.endpoint import EndpointConfig, create_endpoint, pump, sip_sockets


class _Call(pj.Call):
    def __init__(self, owner: "Bare", acc: pj.Account, call_id: int):
        super().__init__(acc, call_id)
        self.owner = owner
        self.player: pj.AudioMediaPlayer | None = None

    def onCallState(self, prm: pj.OnCallStateParam) -> None:
        try:
            if self.getInfo().state == pj.PJSIP_INV_STATE_DISCONNECTED:
                self.player = None
                self.owner.calls.pop(self.getId(), None)
        except Exception:  # noqa: BLE001
            pass

    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:
        try:
            ci = self.getInfo()
            active = any(mi.type == pj.PJMEDIA_TYPE_AUDIO and mi.status == pj.PJSUA_CALL_MEDIA_ACTIVE
                         for mi in ci.media)
            if active and self.player is None:
                self.player = pj.AudioMediaPlayer()
                self.player.createPlayer(self.owner.prompt, 0)
                self.player.startTransmit(self.getAudioMedia(-1))
        except Exception:  # noqa: BLE001
            pass


class _Account(pj.Account):
    def __init__(self, owner: "Bare"):
        super().__init__()
        self.owner = owner

    def onIncomingCall(self, prm: pj.OnIncomingCallParam) -> None:
        try:
            call = _Call(self.owner, self, prm.callId)
            self.owner.calls[prm.callId] = call
            op = pj.CallOpParam()
            op.statusCode = 200
            call.answer(op)
        except Exception:  # noqa: BLE001
            pass


class Bare:
    def __init__(self, host: str, sip_port: int, rtp_port: int, prompt: str):
        self.prompt = prompt
        self.sip_port = sip_port
        self.calls: dict[int, _Call] = {}
        self.ep, ac = create_endpoint(EndpointConfig(host, sip_port, rtp_port, 40))
        self.acc = _Account(self)
        self.acc.create(ac)

    async def run(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        task = asyncio.create_task(pump(self.ep, stop, lambda: bool(self.calls), sip_sockets(self.sip_port)))
        print("ready", flush=True)
        await stop.wait()
        await task
        self.ep.hangupAllCalls()
        for _ in range(100):
            if not self.calls:
                break
            self.ep.libHandleEvents(10)
        self.calls.clear()
        self.acc.shutdown()
        del self.acc
        gc.collect()
        self.ep.libDestroy()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--sip-port", type=int, required=True)
    ap.add_argument("--rtp-port", type=int, required=True)
    ap.add_argument("--prompt", required=True)
    a = ap.parse_args()
    gc.disable()

    async def go() -> None:
        await Bare(a.host, a.sip_port, a.rtp_port, a.prompt).run()

    asyncio.run(go())


if __name__ == "__main__":
    main()
