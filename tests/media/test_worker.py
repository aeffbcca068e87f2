"""One real media worker driven through the media protocol by the real MediaClient (the test plays
the control plane): recording and speech capture, blind transfer, mute, sending DTMF, the answer
timeout, the worker's own 503 when full, and bad commands."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
import redis

from bus import keys
from callcenter.embedded import free_port
from media import protocol as mp
from media.client import CallHandle, MediaClient, MediaError
from tests.conftest import ROOT, Stores, sipp
from tests.sip.audio import read_wav, rms, tone_power, window
from tests.sip.load import load
from tests.sip.phones import phone, result


@dataclass
class Rig:
    client: MediaClient
    calls: asyncio.Queue[CallHandle]
    port: int
    worker_id: str
    url: str
    take: bool = True  # False: leave arrivals alone (the control plane "is not there")


@pytest_asyncio.fixture(loop_scope="session")
async def rig(stores: Stores, tmp_path: Path) -> AsyncIterator[Rig]:
    url = stores.redis_db(2)
    redis.Redis.from_url(url).flushdb()
    port = free_port()
    wid = "tw" + uuid.uuid4().hex[:6]
    calls: asyncio.Queue[CallHandle] = asyncio.Queue()
    holder: dict[str, Rig] = {}

    async def on_call(h: CallHandle) -> None:
        if holder["rig"].take:
            await calls.put(h)
            await h.wait_ended()

    client = MediaClient(url, on_call=on_call)
    await client.start()
    reader = asyncio.create_task(client.run())
    proc = subprocess.Popen([sys.executable, "-m", "media.worker", "--id", wid, "--sip-port", str(port),
                             "--rtp-port", str(32000 + (port % 50) * 40), "--redis-url", url,
                             "--answer-timeout", "1.5"], cwd=ROOT, stdout=open(tmp_path / "worker.log", "wb"),
                            stderr=subprocess.STDOUT)
    up = asyncio.get_running_loop().create_future()
    client.listeners.append(lambda ev, _h: isinstance(ev, mp.WorkerUp) and not up.done() and up.set_result(ev))
    ev = await asyncio.wait_for(up, 20)
    assert ev.max_calls == 4 and ev.capacity == 3  # the wheel's limit, read by the worker itself
    holder["rig"] = Rig(client, calls, port, wid, url)
    yield holder["rig"]
    await client.send(wid, mp.Shutdown(""))
    assert await asyncio.to_thread(proc.wait, 15) == 0
    await client.stop()
    reader.cancel()


async def test_record_and_capture_hold_the_callers_audio(rig: Rig, tmp_path: Path) -> None:
    a = await asyncio.to_thread(phone, "--port", str(free_port()), "--call", f"sip:500@127.0.0.1:{rig.port}",
                                "--tone", "440", "--seconds", "6")
    call = await asyncio.wait_for(rig.calls.get(), 10)
    assert call.arrival is not None and call.arrival.dialed_number == "500"
    await call.answer()
    rec, cap = str(tmp_path / "rec.wav"), str(tmp_path / "cap.wav")
    await call.record(rec)
    await call.start_capture(cap)
    await asyncio.sleep(2.0)
    await call.stop_capture()
    await asyncio.sleep(0.5)
    await call.hangup()
    r = await asyncio.to_thread(result, a)
    assert r["answered"] and r["disconnected"]
    for path in (rec, cap):
        s, rate = read_wav(path, skip=0.3)
        assert len(s) > rate, f"{path}: under a second of audio"
        assert rms(s) > 300 and tone_power(s, rate, 440) > 20 * tone_power(s, rate, 1000), path
    assert read_wav(cap)[0].__len__() < read_wav(rec)[0].__len__()  # capture stopped first


async def test_blind_transfer(rig: Rig, tmp_path: Path) -> None:
    target = "sip:agent-7@127.0.0.1:5999"

    async def control() -> list[mp.Event]:
        call = await asyncio.wait_for(rig.calls.get(), 10)
        await call.answer()
        res = await call.transfer(target, timeout=10)
        return [res, await asyncio.wait_for(call.wait_ended(), 10)]

    task = asyncio.create_task(control())
    done = await asyncio.to_thread(sipp, "transferee.xml", f"127.0.0.1:{rig.port}", service="501",
                                   keys={"caller": "+15550007777", "target": target}, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-1500:] + done.stderr[-1500:]
    outcome, ended = await task
    assert isinstance(outcome, mp.TransferResult) and outcome.code == 200 and outcome.final
    assert isinstance(ended, mp.HungUp) and ended.cause == "transferred" and ended.side == "platform"


async def test_unclaimed_call_is_refused_with_480(rig: Rig, tmp_path: Path) -> None:
    rig.take = False
    try:
        res = await asyncio.to_thread(load, f"127.0.0.1:{rig.port}", tmp_path, 1, 1000, 1, "502")
    finally:
        rig.take = True
    assert (res.answered, res.refused) == (0, 1), res.proc.stdout[-1500:]


async def test_full_worker_answers_503_itself(rig: Rig, tmp_path: Path) -> None:
    async def answer_all() -> None:
        for _ in range(3):
            h = await asyncio.wait_for(rig.calls.get(), 10)
            await h.answer()
            await h.start_play(str(ROOT / "var" / "prompts" / "hold_loop.wav"))

    task = asyncio.create_task(answer_all())
    res = await asyncio.to_thread(load, f"127.0.0.1:{rig.port}", tmp_path, 4, 3000, 20, "503")
    await task
    assert (res.answered, res.refused) == (3, 1), res.proc.stdout[-1500:]


async def test_bad_commands_are_answered_and_survived(rig: Rig) -> None:
    r = redis.Redis.from_url(rig.url)
    key = keys.MEDIA_CMD_KEY.format(worker_id=rig.worker_id)
    r.rpush(key, b"\xff not json", json.dumps({"type": "teleport", "call_id": "x"}))
    ghost = CallHandle(rig.client, rig.worker_id, "no-such-call")
    rig.client.calls[ghost.call_id] = ghost
    with pytest.raises(MediaError, match="no such call"):
        await ghost.answer(timeout=5)
    # Two commands in one entry (answer + play): the first failing does not stop the second.
    failed: list[str] = []
    def listener(ev: mp.Event, _h: CallHandle | None) -> None:
        if isinstance(ev, mp.CommandFailed):
            failed.append(ev.command)

    rig.client.listeners.append(listener)
    other = CallHandle(rig.client, rig.worker_id, "no-such-call-2")
    rig.client.calls[other.call_id] = other
    try:
        with pytest.raises(MediaError, match="play on no-such-call-2: no such call"):
            await other.play("/nowhere.wav", answer=True, timeout=5)
    finally:
        rig.client.listeners.remove(listener)
    assert failed[-2:] == ["answer", "play"]
    # Still alive and serving: the registry heartbeat is fresh.
    assert r.exists(keys.MEDIA_ALIVE_KEY.format(worker_id=rig.worker_id))


async def test_mute_send_dtmf_and_a_recording_that_hears_every_bridged_leg(rig: Rig, tmp_path: Path) -> None:
    agent_port = free_port()
    agent = await asyncio.to_thread(phone, "--port", str(agent_port), "--agent", "--tone", "1000", "--record",
                                    str(tmp_path / "agent"), "--seconds", "12")
    heard = str(tmp_path / "caller.wav")
    caller = await asyncio.to_thread(phone, "--port", str(free_port()), "--call", f"sip:500@127.0.0.1:{rig.port}",
                                     "--tone", "440", "--record", heard, "--seconds", "9")
    call = await asyncio.wait_for(rig.calls.get(), 10)
    await call.answer()
    rec = str(tmp_path / "both.wav")
    await call.record(rec)  # before the bridge: the agent's leg joins the recording when bridged
    leg = await call.originate(f"sip:agent@127.0.0.1:{agent_port}", timeout=5)
    await call.bridge(leg)
    await asyncio.sleep(1.5)
    muted_at = time.time()
    await leg.mute(True)
    await asyncio.sleep(2.0)
    unmuted_at = time.time()
    await leg.mute(False)
    await call.send_dtmf("12#")
    with pytest.raises(MediaError):
        await call.send_dtmf("12x")
    await asyncio.sleep(2.0)
    await call.stop_record()
    await leg.hangup()
    await call.hangup()
    c, a = await asyncio.to_thread(result, caller), await asyncio.to_thread(result, agent)
    assert c["keys_heard"] == "12#"
    talk, rate = window(heard, c["record_started"], unmuted_at + 0.5, unmuted_at + 1.8)
    quiet, rate = window(heard, c["record_started"], muted_at + 0.5, unmuted_at - 0.2)
    assert tone_power(talk, rate, 1000) > 20 * tone_power(quiet, rate, 1000), "muted, the caller still heard the agent"
    agent_side, rate = window(a["calls"][0]["record"], a["calls"][0]["record_started"], muted_at + 0.5,
                              unmuted_at - 0.2)
    assert tone_power(agent_side, rate, 440) > 20 * tone_power(agent_side, rate, 1000)  # the agent still hears
    both, rate = read_wav(rec, skip=2.0)
    assert tone_power(both, rate, 440) > 1e4 and tone_power(both, rate, 1000) > 1e4  # caller and agent recorded
