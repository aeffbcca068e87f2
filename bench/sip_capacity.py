"""SIP capacity: the platform (Kamailio + media workers + control plane) against bare pjsua2 answering
processes behind the same Kamailio configuration, measured in the same run.

For each system: the most concurrent answered calls hearing a looping prompt with no failed call,
and the highest call-setup rate (short calls) with no failed call. SIPp (Debian sip-tester) is the
caller. Prints the machine, both figures and their ratio.

    python -m bench.sip_capacity [--processes 64] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from bench.machine import machine as base_machine
from callcenter.auth import create_key
from callcenter.db import migrate
from callcenter.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from callcenter.frontdoor import Destination, FrontDoor, Policy

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ROOT / "tests" / "sip" / "scenarios" / "load_call.xml"
OUT = ROOT / "var" / "bench"
WORKER_SIP = 25000
RTP_BASE = 30000
SIP_PORT = 25999


@dataclass
class Run:
    calls: int
    answered: int
    refused: int
    cpu: float  # machine CPU busy % while the calls were up

    @property
    def ok(self) -> bool:
        return self.answered == self.calls


def cpu_times() -> tuple[int, int]:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def sipp_load(target: str, calls: int, rate: int, hold_ms: int, workdir: Path) -> Run:
    workdir.mkdir(parents=True, exist_ok=True)
    for f in workdir.glob("*"):
        f.unlink()
    args = ["sipp", "-sf", str(SCENARIO), "-s", "300", "-m", str(calls), "-r", str(rate), "-l", str(calls),
            "-d", str(hold_ms), "-i", "127.0.0.1", "-p", str(free_port()), "-mp", "45000", "-nostdin",
            "-trace_logs", "-recv_timeout", "8000", "-timeout", f"{int(calls / rate + hold_ms / 1000 + 60)}s",
            "-timeout_error", target]
    proc = subprocess.Popen(args, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Sample CPU in the steady state: while every call is up (long calls) or mid-way through the
    # stream of short calls (setup-rate runs).
    ramp, hold = calls / rate, hold_ms / 1000
    start, end = (ramp + 0.5, ramp + max(1.0, hold / 2)) if hold > ramp else (ramp * 0.3, ramp * 0.8)
    time.sleep(start)
    b0, t0 = cpu_times()
    time.sleep(end - start)
    b1, t1 = cpu_times()
    proc.wait()
    text = "".join(p.read_text() for p in workdir.glob("*_logs.log"))
    return Run(calls, text.count("ANSWERED "), text.count("REFUSED "), 100.0 * (b1 - b0) / max(1, t1 - t0))


def search(label: str, steps: list[int], attempt: Callable[[int], Run]) -> tuple[int, list[Run]]:
    best, runs = 0, []
    for n in steps:
        r = attempt(n)
        runs.append(r)
        print(f"  {label} {n:>5}: answered {r.answered}/{r.calls}, refused {r.refused}, cpu {r.cpu:.0f}%",
              flush=True)
        if not r.ok:
            break
        best = n
    return best, runs


@dataclass
class Capacity:
    concurrent: int
    setup_rate: int
    cpu_at_peak: float | None
    runs: dict[str, list[dict[str, object]]]


def measure(name: str, target: str, capacity: int, quick: bool) -> Capacity:
    print(f"{name}: capacity offered {capacity}", flush=True)
    time.sleep(2)
    step = max(16, capacity // 8)
    conc_steps = sorted({*range(step, capacity + 1, step), capacity, capacity + step})
    if quick:
        conc_steps = [capacity // 2, capacity]
    best_c, conc_runs = search("concurrent", conc_steps,
                               lambda n: sipp_load(target, n, 60, int(n / 60 * 1000) + 8000, OUT / name / "c"))
    time.sleep(2)
    rates = list(range(25, 401, 25)) if not quick else [25, 50]
    best_r, rate_runs = search("calls/s", rates,
                               lambda r: sipp_load(target, r * 10, r, 500, OUT / name / "r"))
    return Capacity(best_c, best_r, next((r.cpu for r in conc_runs if r.calls == best_c), None),
                    {"concurrent": [r.__dict__ for r in conc_runs], "rate": [r.__dict__ for r in rate_runs]})


def machine() -> dict[str, str]:
    import pjsua2 as pj

    ep = pj.Endpoint()
    ep.libCreate()
    pjv = ep.libVersion().full
    ep.libDestroy()

    def version(cmd: list[str]) -> str:
        try:
            r = subprocess.run(cmd, capture_output=True, text=True)
            return (r.stdout + r.stderr).strip().splitlines()[0].strip()
        except (OSError, IndexError):
            return "?"

    return {**base_machine(), "pjsua2": pjv, "kamailio": version(["kamailio", "-v"]),
            "sipp": version(["sipp", "-v"])[:60]}


def workers_up(http_port: int, api_key: str) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{http_port}/healthz",
                                 headers={"Authorization": f"Bearer {api_key}"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return int(json.loads(r.read())["workers"]["up"])
    except (OSError, ValueError, KeyError):
        return 0


async def _read_key(db_url: str) -> str:
    """A read-only key for the benchmark's health polling."""
    conn = await asyncpg.connect(db_url)
    try:
        await migrate(conn)
        return await create_key(conn, "bench", ["read"])
    finally:
        await conn.close()


def start_bare(n: int, prompt: str, logdir: Path) -> list[subprocess.Popen[bytes]]:
    logdir.mkdir(parents=True, exist_ok=True)
    procs = []
    for i in range(n):
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "bench.bare_answer", "--sip-port", str(WORKER_SIP + i), "--rtp-port",
             str(RTP_BASE + i * 40), "--prompt", prompt], cwd=ROOT, stdout=subprocess.PIPE,
            stderr=open(logdir / f"bare{i}.log", "wb")))
    for p in procs:
        assert p.stdout is not None
        for line in p.stdout:
            if line.strip() == b"ready":
                break
    return procs


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            print(f"  bare process {p.pid} did not stop on SIGTERM; killed", flush=True)
            p.kill()
            p.wait()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--processes", type=int, default=64, help="media processes for both systems")
    ap.add_argument("--quick", action="store_true", help="two steps each (smoke run)")
    a = ap.parse_args()
    for tool in ("sipp", "kamailio"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            sys.exit(f"{tool} is not installed (apt-get install sip-tester kamailio)")
    OUT.mkdir(parents=True, exist_ok=True)
    info = machine()
    print("machine:", json.dumps(info), flush=True)
    prompt = ROOT / "var" / "prompts" / "hold_loop.wav"
    if not prompt.exists():
        subprocess.run([sys.executable, "-m", "callcenter.cli", "prompts"], cwd=ROOT, check=True)
    target = f"127.0.0.1:{SIP_PORT}"
    n = a.processes

    # Baseline: bare pjsua2 processes behind the same front door configuration.
    bare = start_bare(n, str(prompt), OUT / "bare-logs")

    async def bare_phase() -> Capacity:
        fd = FrontDoor(ROOT / "sip_config" / "kamailio.cfg", OUT / "kamailio-bare", "127.0.0.1", SIP_PORT,
                       policy=Policy(trusted_sources=("127.0.0.1",)))  # the load generator plays the trunk
        await fd.start([Destination(f"sip:127.0.0.1:{WORKER_SIP + i}", f"b{i}", 4) for i in range(n)])
        try:
            return await asyncio.to_thread(measure, "bare", target, 4 * n, a.quick)
        finally:
            await fd.stop()

    try:
        bare_res = asyncio.run(bare_phase())
    finally:
        stop_all(bare)

    # The platform: same number of media processes. The loop workload never originates a leg, so no
    # slot is kept back for one (media.outbound_reserve = 0) and both systems offer 4 calls per process.
    shutil.rmtree(OUT / "redis", ignore_errors=True)  # each run from empty: its AOF grew run after run
    pg, rd = EmbeddedPostgres(OUT / "pgdata"), EmbeddedRedis(OUT / "redis")
    admin = pg.start()
    db_url = asyncio.run(pg.ensure_database(admin, "bench"))
    api_key = asyncio.run(_read_key(db_url))
    redis_url = rd.start()
    cfg = OUT / "callcenter.toml"
    http_port = free_port()
    cfg.write_text(f"""
[http]
host = "127.0.0.1"
port = {http_port}
[sip]
port = {SIP_PORT}
front_door = "kamailio"
trusted_sources = ["127.0.0.1"]
[media]
workers = {n}
worker_sip_port = {WORKER_SIP}
rtp_port = {RTP_BASE}
outbound_reserve = 0
[paths]
var_dir = "{OUT / 'platform-var'}"
[log]
level = "WARNING"
""")
    (OUT / "platform-var").mkdir(exist_ok=True)
    if not (OUT / "platform-var" / "prompts").exists():
        shutil.copytree(prompt.parent, OUT / "platform-var" / "prompts")
    env = {**os.environ, "DATABASE_URL": db_url, "REDIS_URL": redis_url}
    plat = subprocess.Popen([sys.executable, "-m", "callcenter.cli", "--config", str(cfg), "run",
                             "--demo-customers", "0"], cwd=ROOT, env=env,
                            stdout=open(OUT / "platform.log", "wb"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while workers_up(http_port, api_key) < n:
            if plat.poll() is not None or time.monotonic() > deadline:
                sys.exit("platform did not start all workers; see var/bench/platform.log")
            time.sleep(0.5)
        plat_res = measure("platform", target, 4 * n, a.quick)
    finally:
        plat.send_signal(signal.SIGINT)
        plat.wait(60)
        rd.stop()
        pg.stop()

    ratio_c = plat_res.concurrent / max(1, bare_res.concurrent)
    ratio_r = plat_res.setup_rate / max(1, bare_res.setup_rate)
    result = {"machine": info, "processes": n, "bare": bare_res.__dict__, "platform": plat_res.__dict__,
              "ratio": {"concurrent": round(ratio_c, 3), "setup_rate": round(ratio_r, 3)},
              "at": time.strftime("%Y-%m-%d %H:%M:%S")}
    (OUT / "sip_capacity.json").write_text(json.dumps(result, indent=2))
    print()
    print(f"{'':24}{'bare pjsua2':>14}{'platform':>12}{'ratio':>8}")
    print(f"{'concurrent calls':24}{bare_res.concurrent:>14}{plat_res.concurrent:>12}{ratio_c:>8.2f}")
    print(f"{'call setups per second':24}{bare_res.setup_rate:>14}{plat_res.setup_rate:>12}{ratio_r:>8.2f}")
    print(f"{'CPU at peak (machine %)':24}{bare_res.cpu_at_peak or 0:>14.0f}{plat_res.cpu_at_peak or 0:>12.0f}")


if __name__ == "__main__":
    main()
