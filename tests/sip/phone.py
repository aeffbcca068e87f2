"""A pjsua2 test phone (its own process: pjsua is one endpoint per process).

    python -m tests.sip.phone --port 5090 --answer --tone 1000 --record out.wav --seconds 8
    python -m tests.sip.phone --port 5091 --call sip:200@127.0.0.1:5060 --tone 440 --record in.wav --seconds 8

It sends a sine tone so the far end can tell who it hears, records what it receives, and prints one
JSON line when done: {"answered": bool, "disconnected": bool, "code": int, "record": path}.

As an agent's phone it takes call after call for --seconds (one at a time, 486 when busy), answers
or only rings (--ring-only), hangs up after --talk seconds if given, records each call to
<record>-<n>.wav, and reports every call: {"calls": [{"from": uri, "answered": bool, "record": path}]}.

    python -m tests.sip.phone --port 5092 --agent --tone 1000 --record agent --seconds 30
    python -m tests.sip.phone --port 5094 --agent --register sip:201@127.0.0.1:5060 --password <pw>

With --commands the test drives the call through stdin, a line at a time: ``dtmf 12#`` (RFC 4733),
``info 12#`` (SIP INFO), ``play <wav>`` (speak it once instead of the tone), ``hangup``.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import math
import queue
import struct
import sys
import tempfile
import threading
import time
import wave

import pjsua2 as pj


def write_tone(path: str, hz: float, seconds: float = 1.0, rate: int = 8000, level: int = 9000) -> None:
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(struct.pack("<h", int(level * math.sin(2 * math.pi * hz * i / rate)))
                               for i in range(int(rate * seconds))))


class Phone:
    def __init__(self, port: int, register: str = "", password: str = "", user: str = "test-phone"):
        self.ep = pj.Endpoint()
        self.ep.libCreate()
        c = pj.EpConfig()
        c.uaConfig.threadCnt = 0
        c.uaConfig.mainThreadOnly = True
        c.logConfig.level = 1
        c.logConfig.consoleLevel = 1
        c.medConfig.clockRate = 8000
        c.medConfig.sndClockRate = 8000
        c.medConfig.ecTailLen = 0
        c.medConfig.noVad = True
        self.ep.libInit(c)
        self.ep.audDevManager().setNullDev()
        tc = pj.TransportConfig()
        tc.port = port
        tc.boundAddress = "127.0.0.1"
        self.ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tc)
        self.ep.libStart()
        ac = pj.AccountConfig()
        ac.idUri = f"sip:{user}@127.0.0.1:{port}"
        self.registered = False
        if register:  # sip:<extension>@<front door>: register there, calls come through it
            ac.idUri = register
            ac.regConfig.registrarUri = "sip:" + register.split("@", 1)[1]
            if password:  # digest credentials, as a softphone's account settings hold them
                user = register.split(":", 1)[1].split("@", 1)[0]
                ac.sipConfig.authCreds.append(pj.AuthCredInfo("digest", "*", user, 0, password))
        ac.mediaConfig.transportConfig.port = port + 1000
        ac.mediaConfig.transportConfig.portRange = 20
        self.acc = _Account(self)
        self.acc.create(ac)
        self.call: _Call | None = None
        self.answered = False
        self.disconnected = False
        self.code = 0
        self.ended_at = 0.0  # unix time the call ended (the far end's BYE, or our own hang-up)
        self.record_started = 0.0
        self.tone_path = ""
        self.record_path = ""
        self.player: pj.AudioMediaPlayer | None = None
        self.recorder: pj.AudioMediaRecorder | None = None
        self.released: list[pj.AudioMedia] = []  # of ended calls: dropped outside pjsua2's callbacks
        self.agent = False
        self.ring_only = False
        self.talk = 0.0
        self.record_prefix = ""
        self.calls: list[dict[str, object]] = []
        self.answered_at = 0.0
        self.dtmf = ""  # keys to send on the outbound call, dtmf_after seconds after it is answered
        self.dtmf_after = 0.0
        self.keys_heard = ""  # keys the far end sent (RFC 4733), every call's
        self.commands: queue.Queue[str] | None = None  # lines from stdin (--commands)

    def media_up(self) -> None:
        assert self.call is not None
        am = self.call.getAudioMedia(-1)
        if self.player is None and self.tone_path:
            self.player = pj.AudioMediaPlayer()
            self.player.createPlayer(self.tone_path, 0)
            self.player.startTransmit(am)
        if self.recorder is None and self.record_path:
            self.recorder = pj.AudioMediaRecorder()
            self.recorder.createRecorder(self.record_path)
            self.record_started = time.time()  # to find a moment of the call in the recording
            if self.agent and self.calls:
                self.calls[-1]["record_started"] = self.record_started
            am.startTransmit(self.recorder)

    def ended(self, code: int) -> None:
        self.disconnected = True
        self.code = code
        self.ended_at = time.time()
        if self.agent and self.calls:
            self.calls[-1]["ended_at"] = self.ended_at
        # The player and recorder are released after this callback returns (run_for), not inside
        # it: a test phone that dropped them here died in libHandleEvents (SIGSEGV), rarely.
        self.released += [m for m in (self.player, self.recorder) if m is not None]
        self.player = None
        self.recorder = None
        self.call = None  # dropped inside DISCONNECTED (pitfall 1)
        self.answered_at = 0.0

    def run_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and (self.agent or not (self.disconnected and self.call is None)):
            self.ep.libHandleEvents(20)
            self.released.clear()  # closes an ended call's WAV file
            while self.commands is not None and not self.commands.empty():
                self.command(self.commands.get())
            if self.dtmf and self.answered_at and time.monotonic() - self.answered_at > self.dtmf_after:
                keys, self.dtmf = self.dtmf, ""
                if self.call is not None:
                    self.call.dialDtmf(keys)  # RFC 4733
            if self.talk and self.answered_at and time.monotonic() - self.answered_at > self.talk:
                self.answered_at = 0.0
                if self.call is not None:
                    try:
                        self.call.hangup(pj.CallOpParam())
                    except pj.Error:
                        pass

    def command(self, line: str) -> None:
        verb, _, arg = line.strip().partition(" ")
        if self.call is None:
            return
        if verb == "dtmf":
            self.call.dialDtmf(arg)
        elif verb == "info":
            prm = pj.CallSendDtmfParam()
            prm.method = pj.PJSUA_DTMF_METHOD_SIP_INFO
            for key in arg:
                prm.digits = key
                self.call.sendDtmf(prm)
        elif verb == "play":  # speak: this WAV once instead of the tone (then silence)
            if self.player is not None:
                self.released.append(self.player)
            self.player = pj.AudioMediaPlayer()
            self.player.createPlayer(arg, pj.PJMEDIA_FILE_NO_LOOP)
            self.player.startTransmit(self.call.getAudioMedia(-1))
        elif verb == "hangup":
            try:
                self.call.hangup(pj.CallOpParam())
            except pj.Error:
                pass

    def incoming(self, call: "_Call", invite: str) -> int:
        """Agent mode: take the call (200), or only ring (180); 486 while on another call."""
        if self.call is not None:
            return 486
        self.call = call
        self.record_path = f"{self.record_prefix}-{len(self.calls)}.wav" if self.record_prefix else ""
        # Who is calling, as phones show it: P-Asserted-Identity (the platform's caller ID) over From.
        pai = next((ln.split(":", 1)[1].strip() for ln in invite.splitlines()
                    if ln.lower().startswith("p-asserted-identity:")), "")
        self.calls.append({"from": call.getInfo().remoteUri, "identity": pai, "answered": False,
                           "record": self.record_path})
        return 180 if self.ring_only else 200

    def hangup(self) -> None:
        if self.call is not None:
            try:
                self.call.hangup(pj.CallOpParam())
            except pj.Error:
                pass
        self.run_for(2.0)

    def destroy(self) -> None:
        self.player = self.recorder = None
        self.released.clear()
        self.call = None
        self.acc.shutdown()
        del self.acc
        self.ep.libDestroy()


class _Account(pj.Account):
    def __init__(self, phone: Phone):
        super().__init__()
        self.phone = phone
        self.auto_answer = False

    def onRegState(self, prm: pj.OnRegStateParam) -> None:
        self.phone.registered = prm.code == 200
    def onIncomingCall(self, prm: pj.OnIncomingCallParam) -> None:
        try:
            call = _Call(self.phone, self, prm.callId)
            op = pj.CallOpParam()
            if self.phone.agent:
                op.statusCode = self.phone.incoming(call, prm.rdata.wholeMsg)
                call.answer(op)
                return
            if self.phone.call is not None or not self.auto_answer:
                op.statusCode = 486
                call.answer(op)
                return
            self.phone.call = call
            op.statusCode = 200
            call.answer(op)
        except Exception as exc:  # noqa: BLE001
            print(f"incoming: {exc}", file=sys.stderr)


class _Call(pj.Call):
    def __init__(self, phone: Phone, acc: pj.Account, call_id: int = pj.PJSUA_INVALID_ID):
        super().__init__(acc, call_id)
        self.phone = phone

    def onCallState(self, prm: pj.OnCallStateParam) -> None:
        try:
            ci = self.getInfo()
            if ci.state == pj.PJSIP_INV_STATE_CONFIRMED:
                self.phone.answered = True
                self.phone.answered_at = time.monotonic()
                if self.phone.agent and self.phone.calls:
                    self.phone.calls[-1]["answered"] = True
            elif ci.state == pj.PJSIP_INV_STATE_DISCONNECTED and self.phone.call is self:
                self.phone.ended(ci.lastStatusCode)
        except Exception as exc:  # noqa: BLE001
            print(f"state: {exc}", file=sys.stderr)

    def onDtmfDigit(self, prm: pj.OnDtmfDigitParam) -> None:
        self.phone.keys_heard += prm.digit

    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:
        try:
            ci = self.getInfo()  # keep it alive: the media vector points into it
            for mi in ci.media:
                if mi.type == pj.PJMEDIA_TYPE_AUDIO and mi.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                    self.phone.media_up()
        except Exception as exc:  # noqa: BLE001
            print(f"media: {exc}", file=sys.stderr)


def main() -> None:
    faulthandler.enable()  # a crash inside pjsua2 says where it was (stderr reaches the test's message)
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--call")
    ap.add_argument("--answer", action="store_true")
    ap.add_argument("--tone", type=float, default=0)
    ap.add_argument("--tone-level", type=int, default=9000, help="the tone's peak (16-bit)")
    ap.add_argument("--record", default="")
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--agent", action="store_true")
    ap.add_argument("--ring-only", action="store_true")
    ap.add_argument("--talk", type=float, default=0)
    ap.add_argument("--register", default="", help="sip:<extension>@<host>:<port> of the front door")
    ap.add_argument("--password", default="", help="the extension's SIP password")
    ap.add_argument("--dtmf", default="", help="keys to press on the --call call")
    ap.add_argument("--user", default="test-phone", help="the user part of the phone's own URI (the caller ID)")
    ap.add_argument("--dtmf-after", type=float, default=3.0)
    ap.add_argument("--commands", action="store_true", help="read dtmf/info/hangup lines from stdin")
    a = ap.parse_args()
    phone = Phone(a.port, a.register, a.password, a.user)
    deadline = time.monotonic() + 5
    while a.register and not phone.registered and time.monotonic() < deadline:
        phone.ep.libHandleEvents(20)
    if a.register and not phone.registered:
        sys.exit("registration failed")
    phone.agent, phone.ring_only, phone.talk = a.agent, a.ring_only, a.talk
    phone.dtmf, phone.dtmf_after = a.dtmf, a.dtmf_after
    if a.tone:
        phone.tone_path = tempfile.mktemp(suffix=".wav")
        write_tone(phone.tone_path, a.tone, level=a.tone_level)
    phone.record_path = a.record
    if a.agent:
        phone.record_prefix, phone.record_path = a.record, ""
    if a.commands:
        phone.commands = queue.Queue()
        threading.Thread(target=_read_commands, args=(phone.commands,), daemon=True).start()
    print(json.dumps({"ready": True}), flush=True)
    if a.call:
        phone.call = _Call(phone, phone.acc)
        phone.call.makeCall(a.call, pj.CallOpParam(True))
    else:
        phone.acc.auto_answer = a.answer
    phone.run_for(a.seconds)
    far_end = phone.disconnected  # the other side ended it (a BYE came) before we would have
    ended_at = phone.ended_at
    if phone.call is not None or not phone.disconnected and not a.agent:
        phone.agent = False
        phone.hangup()
    print(json.dumps({"answered": phone.answered, "disconnected": phone.disconnected, "code": phone.code,
                      "far_end_hung_up": far_end, "ended_at": ended_at if far_end else 0.0,
                      "record": a.record, "record_started": phone.record_started, "calls": phone.calls,
                      "keys_heard": phone.keys_heard}),
          flush=True)
    phone.destroy()


def _read_commands(q: "queue.Queue[str]") -> None:
    """stdin to the phone's loop: pjsua2 is called from the main thread only (pitfall 2)."""
    for line in sys.stdin:
        q.put(line)


if __name__ == "__main__":
    main()
