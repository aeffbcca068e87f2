"""IVR: spoken answers through the whole path, and how fast a key brings the next prompt, under load.
The whole platform runs (Kamailio, media workers, the speech service with its one Vosk model,
control plane, embedded PostgreSQL and Redis); SIPp callers dial a benchmark flow.

- **speech**: ``--streams`` concurrent callers in a speech menu, each saying 네 or 아니요 (espeak-ng
  Korean, telephone band, as an RTP pcap SIPp plays) every few seconds. Every answer goes media
  worker → speech service → worker → control plane. Figures: answers recognized of those said,
  end of speech to the answer at the control plane (IVR_INPUT latency_ms) p50 / p95, the speech
  service's memory with no stream and at the peak, its CPU. Real time is kept up with while the
  latency stays flat and every utterance is answered.
- **keys**: ``--calls`` concurrent callers in a key menu, each pressing a key every 2 s. Figure: from
  the key (its DTMF event, worker clock) to the next prompt starting (PROMPT started, same
  worker), p50 / p99.

Baseline for both, measured first in the same run on the same platform: one caller alone. The
report gives the loaded figures' ratios to it.

    python -m bench.ivr [--streams 50] [--calls 100] [--only speech|keys] [--workers N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from bench.machine import CpuMeter, machine
from bench.platform import stores, workers_up, write_config
from callcenter.embedded import free_port

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "var" / "bench" / "ivr"
SIP_PORT, WORKER_SIP, RTP_BASE = 27999, 27000, 38000

FLOWS = {
    "bench_speech": """flow: bench_speech
start: ask
max_steps: 10000
nodes:
  ask:
    type: menu
    prompt: survey_intro
    timeout: 10
    retries: 5
    no_input_prompt: null
    invalid_prompt: null
    choices:
      - {phrases: [네], goto: ask}
      - {phrases: [아니요], goto: ask}
""",
    "bench_keys": """flow: bench_keys
start: menu
max_steps: 10000
nodes:
  menu:
    type: menu
    prompt: ivr_main_menu
    timeout: 10
    choices:
      - {key: 1, goto: ack}
      - {key: 2, goto: ack}
  ack: {type: play, prompt: thanks, interrupt: true, next: menu}
""",
}


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


# ---------------------------------------------------------------- test audio as RTP


def speech_pcap(word: str, path: Path, pause: float = 1.5) -> float:
    """``word`` as an RTP (PCMU) pcap SIPp can play: espeak-ng Korean, telephone band, then ``pause``
    seconds of silence. Returns the audio's length in seconds."""
    speech = subprocess.run(["espeak-ng", "-v", "ko+f2", "-s", "170", "-p", "50", "--stdout", word],
                            check=True, capture_output=True).stdout
    ulaw = subprocess.run(["sox", "-D", "-R", "-t", "wav", "-", "-r", "8000", "-c", "1", "-e", "u-law", "-b", "8",
                           "-t", "raw", "-", "pad", "0.3", str(pause), "sinc", "300-3400"], input=speech,
                          check=True, capture_output=True).stdout
    payloads = [ulaw[i:i + 160].ljust(160, b"\xff") for i in range(0, len(ulaw), 160)]
    _write_pcap(path, [struct.pack("!BBHII", 0x80, 0, n & 0xFFFF, n * 160, 0x1234) + p for n, p in enumerate(payloads)])
    packets = payloads
    return len(packets) * 0.02


def _write_pcap(path: Path, packets: list[bytes]) -> None:
    """RTP packets (20 ms apart) as a pcap of Ethernet/IPv4/UDP frames, what SIPp's play_pcap_audio reads."""
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for n, rtp in enumerate(packets):
            udp = struct.pack("!HHHH", 6000, 6002, 8 + len(rtp), 0) + rtp
            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), n & 0xFFFF, 0, 64, 17, 0,
                             bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1])) + udp
            frame = b"\x00" * 12 + b"\x08\x00" + ip
            t = n * 0.02
            f.write(struct.pack("<IIII", int(t), int((t % 1) * 1e6), len(frame), len(frame)) + frame)


def dtmf_pcap(digit: str, press: int, path: Path) -> None:
    """One key as RFC 4733 events (payload type 101), numbered after the presses before it: SIPp's own
    DTMF pcaps replay the same sequence numbers and timestamps each time, so the far end drops a
    repeated one as old."""
    seq, ts = 1000 + press * 20, 16000 + press * 40000
    packets = []
    for i in range(10):
        end = i >= 7
        marker = 0x80 if i == 0 else 0
        payload = struct.pack("!BBH", int(digit), 0x8A if end else 0x0A, 160 * min(i + 1, 7))
        packets.append(struct.pack("!BBHII", 0x80, marker | 101, seq + i, ts, 0x4321) + payload)
    _write_pcap(path, packets)


def scenario(path: Path, steps: list[tuple[str, int]], hold: int) -> None:
    """A SIPp caller that plays pcaps (``-key p1..``) with pauses (ms) after each, then hangs up."""
    plays = "\n".join(f'  <nop><action><exec play_pcap_audio="[{key}]"/></action></nop>\n'
                      f'  <pause milliseconds="{ms}"/>' for key, ms in steps)
    template = (ROOT / "tests" / "sip" / "scenarios" / "ivr_keys.xml").read_text()
    head = template[:template.index("  <pause milliseconds=\"1500\"/>")]
    bye = f"""  <pause milliseconds="{hold}"/>
  <send>
    <![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      From: "SIPp Caller" <sip:[caller]@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Contact: <sip:sipp@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <recv response="200" timeout="10000"/>
</scenario>
"""
    path.write_text(head + '  <pause milliseconds="2500"/>\n' + plays + "\n" + bye)


# ---------------------------------------------------------------- the platform


async def start(workers: int) -> tuple[subprocess.Popen[bytes], str, str, Any, Any, str]:
    pg, rd, db_url, redis_url, key = await stores(OUT, "bench_ivr")
    flows = OUT / "flows"
    shutil.rmtree(flows, ignore_errors=True)
    flows.mkdir()
    for name, text in FLOWS.items():
        (flows / f"{name}.yaml").write_text(text)
    (OUT / "dialplan.toml").write_text(
        '[[route]]\nnumber = "701"\nname = "speech"\naction = "flow"\nflow = "bench_speech"\n\n'
        '[[route]]\nnumber = "702"\nname = "keys"\naction = "flow"\nflow = "bench_keys"\n')
    http_port = free_port()
    cfg = OUT / "callcenter.toml"
    write_config(cfg, http_port=http_port, sip_port=SIP_PORT, workers=workers, worker_sip=WORKER_SIP,
                 rtp_port=RTP_BASE, outbound_reserve=1, var_dir=OUT / "var", dialplan=OUT / "dialplan.toml",
                 sections='[speech]\nenabled = "on"', paths=f'ivr = "{flows}"\ncalendars = "{OUT / "none.yaml"}"')
    prompts = ROOT / "var" / "prompts"
    if prompts.exists() and not (OUT / "var" / "prompts").exists():
        shutil.copytree(prompts, OUT / "var" / "prompts")
    env = {**os.environ, "DATABASE_URL": db_url, "REDIS_URL": redis_url}
    proc = subprocess.Popen([sys.executable, "-m", "callcenter.cli", "--config", str(cfg), "run", "--demo-customers",
                             "0"], cwd=ROOT, env=env, stdout=open(OUT / "platform.log", "wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while workers_up(http_port, key) < workers or _speech_proc(proc) is None:
        if proc.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"the platform did not start; see {OUT / 'platform.log'}")
        await asyncio.sleep(0.5)
    await asyncio.sleep(2.0)  # the model is loaded once the process answers; let it settle
    return proc, f"http://127.0.0.1:{http_port}", key, pg, rd, db_url


def _speech_proc(platform: subprocess.Popen[bytes]) -> psutil.Process | None:
    """The platform's speech service process (a child of it)."""
    try:
        children = psutil.Process(platform.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return None
    return next((p for p in children if "ivr.speech_service" in p.cmdline()), None)


def sipp(scenario_file: Path, service: str, calls: int, rate: int, keys: dict[str, str],
         timeout: float) -> subprocess.Popen[str]:
    args = ["sipp", "-sf", str(scenario_file), "-s", service, "-m", str(calls), "-r", str(rate), "-l", str(calls),
            "-i", "127.0.0.1", "-p", str(free_port()), "-mp", "44000", "-nostdin", "-timeout", str(int(timeout)),
            "-key", "caller", "+15550199999", "-trace_err", "-error_file", str(OUT / "sipp-errors.log"),
            f"127.0.0.1:{SIP_PORT}"]
    for k, v in keys.items():
        args += ["-key", k, v]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=OUT)


async def events(db_url: str, since: float, names: tuple[str, ...]) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(db_url)
    try:
        return await conn.fetch("SELECT interaction_id, event, at, data FROM interaction_events WHERE "
                                "event = ANY($1) AND at > to_timestamp($2) ORDER BY interaction_id, at, id",
                                list(names), since)
    finally:
        await conn.close()


# ---------------------------------------------------------------- the two parts


async def speech_part(platform: subprocess.Popen[bytes], db_url: str, streams: int, rounds: int) -> dict[str, Any]:
    yes = OUT / "yes.pcap"
    no = OUT / "no.pcap"
    length = max(speech_pcap("네", yes), speech_pcap("아니요", no))
    gap = int(length * 1000) + 700  # the next word after the last one and its answer
    steps = [("p1" if i % 2 == 0 else "p2", gap) for i in range(rounds)]
    scenario(OUT / "speech.xml", steps, 2000)
    proc = _speech_proc(platform)
    assert proc is not None
    idle_rss = proc.memory_info().rss
    cpu0 = proc.cpu_times()
    since = time.time()
    meter = CpuMeter()
    caller = sipp(OUT / "speech.xml", "701", streams, max(1, streams // 5), {"p1": str(yes), "p2": str(no)},
                  timeout=60 + rounds * gap / 1000)
    peak = idle_rss
    while caller.poll() is None:
        peak = max(peak, proc.memory_info().rss)
        await asyncio.sleep(0.5)
    wall = time.time() - since
    cpu = proc.cpu_times()
    busy, steal = meter.read()
    await asyncio.sleep(3.0)  # the interaction log writes in batches
    rows = await events(db_url, since, ("IVR_INPUT", "IVR_NOMATCH", "IVR_NOINPUT"))
    inputs = [json.loads(r["data"]) for r in rows if r["event"] == "IVR_INPUT"]
    said = streams * rounds
    latencies = [float(d["latency_ms"]) for d in inputs if d.get("latency_ms") is not None]
    return {
        "streams": streams, "utterances said": said,
        "answered right": len(inputs), "no match": sum(r["event"] == "IVR_NOMATCH" for r in rows),
        "no input": sum(r["event"] == "IVR_NOINPUT" for r in rows),
        "end of speech -> answer ms p50": round(pct(latencies, 0.5), 1),
        "end of speech -> answer ms p95": round(pct(latencies, 0.95), 1),
        "end of speech -> answer ms max": round(max(latencies, default=float("nan")), 1),
        "speech service RSS MiB idle": round(idle_rss / 2**20), "speech service RSS MiB peak": round(peak / 2**20),
        "speech service cores": round((cpu.user + cpu.system - cpu0.user - cpu0.system) / wall, 2),
        "machine busy %": busy, "steal %": steal, "sipp": caller.returncode,
    }


async def keys_part(db_url: str, calls: int, presses: int) -> dict[str, Any]:
    steps = [(f"d{i + 1}", 2000) for i in range(presses)]
    scenario(OUT / "keys.xml", steps, 1000)
    pcaps = {}
    for i in range(presses):
        dtmf_pcap(str(i % 2 + 1), i, OUT / f"key{i + 1}.pcap")
        pcaps[f"d{i + 1}"] = str(OUT / f"key{i + 1}.pcap")
    since = time.time()
    meter = CpuMeter()
    caller = sipp(OUT / "keys.xml", "702", calls, max(1, calls // 10),
                  pcaps,
                  timeout=60 + presses * 2.5)
    while caller.poll() is None:
        await asyncio.sleep(0.5)
    busy, steal = meter.read()
    await asyncio.sleep(3.0)
    rows = await events(db_url, since, ("DTMF", "PROMPT"))
    latencies: list[float] = []
    by_call: dict[Any, list[asyncpg.Record]] = {}
    for r in rows:
        by_call.setdefault(r["interaction_id"], []).append(r)
    for evs in by_call.values():
        keys = [r["at"].timestamp() for r in evs if r["event"] == "DTMF"]
        # the prompt a key brings: the first to start after it (the acknowledgement, or the menu again
        # when the key cut the acknowledgement short)
        starts = sorted(float(json.loads(r["data"]).get("started") or 0) for r in evs if r["event"] == "PROMPT")
        for k in keys:
            after = [s for s in starts if s >= k]
            if after:
                latencies.append((after[0] - k) * 1000)
    return {"calls": calls, "keys": len(latencies), "key -> next prompt ms p50": round(pct(latencies, 0.5), 1),
            "key -> next prompt ms p99": round(pct(latencies, 0.99), 1),
            "key -> next prompt ms max": round(max(latencies, default=float("nan")), 1),
            "machine busy %": busy, "steal %": steal, "sipp": caller.returncode}


def _ratio(loaded: dict[str, Any], alone: dict[str, Any], key: str) -> float:
    return round(float(loaded[key]) / float(alone[key]), 2) if alone[key] else float("nan")


async def main() -> None:
    ap = argparse.ArgumentParser(prog="bench.ivr")
    ap.add_argument("--streams", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=8, help="utterances per speech caller")
    ap.add_argument("--calls", type=int, default=100)
    ap.add_argument("--presses", type=int, default=10)
    ap.add_argument("--only", choices=["speech", "keys"])
    ap.add_argument("--workers", type=int, default=0, help="media workers (default: as the parts need)")
    a = ap.parse_args()
    print(json.dumps({"machine": machine()}))
    # as many media workers as the parts run need (4 calls a worker, some to spare): an idle worker
    # still costs its clock thread
    callers = max(a.streams if a.only != "keys" else 0, a.calls if a.only != "speech" else 0)
    workers = a.workers or (callers + 2) // 3 + 2
    print(json.dumps({"media workers": workers}))
    proc, _base, _key, pg, rd, db_url = await start(workers)
    try:
        if a.only in (None, "speech"):
            one = await speech_part(proc, db_url, 1, a.rounds)
            print(json.dumps({"speech, baseline": one}, ensure_ascii=False))
            many = await speech_part(proc, db_url, a.streams, a.rounds)
            many["p95 ratio to one stream"] = _ratio(many, one, "end of speech -> answer ms p95")
            print(json.dumps({"speech": many}, ensure_ascii=False))
        if a.only in (None, "keys"):
            one = await keys_part(db_url, 1, a.presses)
            print(json.dumps({"keys, baseline": one}, ensure_ascii=False))
            many = await keys_part(db_url, a.calls, a.presses)
            many["p99 ratio to one call"] = _ratio(many, one, "key -> next prompt ms p99")
            print(json.dumps({"keys": many}, ensure_ascii=False))
    finally:
        proc.send_signal(2)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        rd.stop()
        pg.stop()


if __name__ == "__main__":
    asyncio.run(main())
