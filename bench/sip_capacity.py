"""SIP capacity: the platform (Kamailio + media workers + control plane) against bare pjsua2 answering
processes behind the same Kamailio configuration, measured in the same run.

For each system: the most concurrent answered calls hearing a looping prompt with no failed call,
and the highest call-setup rate (short calls) with no failed call. SIPp (Debian sip-tester) is the
caller. Prints the machine, both figures and their ratio.

CPU is sampled per component too (psutil: the media processes, the control plane, Kamailio, Redis,
PostgreSQL, SIPp), so the figures say where the platform's extra CPU per call goes. ``--rounds N``
measures the two systems N times in turn (bare, platform, bare, ...) and reports each round and the
median ratios: on a VM whose speed drifts, one round can differ from the next by more than any change.

    python -m bench.sip_capacity [--processes 64] [--rounds 1] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from bench.machine import CpuMeter
from bench.machine import machine as base_machine
from bench.platform import fresh_database, workers_up, write_config
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
TARGET = f"127.0.0.1:{SIP_PORT}"


@dataclass
class Run:
    calls: int
    answered: int
    refused: int
    cpu: float  # machine CPU busy % while the calls were up (steal included: the VM had no use of it)
    steal: float  # of which the hypervisor gave to other guests: a busy neighbour, not our calls
    components: dict[str, float]  # CPU-seconds per second (1.0 = one core busy) of each component

    @property
    def ok(self) -> bool:
        return self.answered == self.calls


# Which processes make up each component, by a word of their command line (Redis rewrites its own).
COMPONENTS = (("media", ("bench.bare_answer", "media.worker")), ("control plane", ("callcenter.cli",)),
              ("kamailio", ("kamailio",)), ("redis", ("redis-server",)), ("postgresql", ("postgres",)),
              ("sipp", ("sipp",)))


def component_times() -> dict[int, tuple[str, float]]:
    """pid -> (component, CPU seconds so far) for every process of a component."""
    out = {}
    for proc in psutil.process_iter(["cmdline", "name"]):
        try:
            line = " ".join(proc.info["cmdline"] or [proc.info["name"] or ""])
            component = next((c for c, words in COMPONENTS if any(w in line for w in words)), None)
            if component is not None:
                t = proc.cpu_times()
                out[proc.pid] = (component, t.user + t.system)
        except psutil.Error:
            continue
    return out


def component_rates(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]],
                    seconds: float) -> dict[str, float]:
    rates: dict[str, float] = {}
    for pid, (component, t1) in after.items():
        if pid in before:
            rates[component] = rates.get(component, 0.0) + (t1 - before[pid][1]) / seconds
    return {c: round(v, 3) for c, v in sorted(rates.items())}


def sipp_load(target: str, calls: int, rate: int, hold_ms: int, workdir: Path) -> Run:
    workdir.mkdir(parents=True, exist_ok=True)
    for f in workdir.glob("*"):
        f.unlink()
    args = ["sipp", "-sf", str(SCENARIO), "-s", "300", "-m", str(calls), "-r", str(rate), "-l", str(calls),
            "-d", str(hold_ms), "-i", "127.0.0.1", "-p", str(free_port()), "-mp", "45000", "-nostdin",
            "-trace_logs", "-trace_err", "-recv_timeout", "8000",
            "-timeout", f"{int(calls / rate + hold_ms / 1000 + 60)}s", "-timeout_error", target]
    proc = subprocess.Popen(args, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Sample CPU in the steady state: while every call is up (long calls) or mid-way through the
    # stream of short calls (setup-rate runs).
    ramp, hold = calls / rate, hold_ms / 1000
    start, end = (ramp + 0.5, ramp + max(1.0, hold / 2)) if hold > ramp else (ramp * 0.3, ramp * 0.8)
    time.sleep(start)
    meter, c0, w0 = CpuMeter(), component_times(), time.monotonic()
    time.sleep(end - start)
    (cpu, steal), c1, w1 = meter.read(), component_times(), time.monotonic()
    proc.wait()
    text = "".join(p.read_text() for p in workdir.glob("*_logs.log"))
    return Run(calls, text.count("ANSWERED "), text.count("REFUSED "), cpu, steal, component_rates(c0, c1, w1 - w0))


def search(label: str, steps: list[int], attempt: Callable[[int], Run], refine: int = 0) -> tuple[int, list[Run]]:
    """The highest step with no failed call. ``refine``: after the first failure, try the steps
    between the last pass and it, ``refine`` apart (a coarse grid turns a few % of CPU into a whole
    step, 20 % of the ratio)."""
    best, runs = 0, []

    def one(n: int) -> bool:
        r = attempt(n)
        runs.append(r)
        parts = ", ".join(f"{c} {v:.2f}" for c, v in r.components.items())
        print(f"  {label} {n:>5}: answered {r.answered}/{r.calls}, refused {r.refused}, cpu {r.cpu:.0f}% "
              f"(steal {r.steal:.0f}%; cores: {parts})", flush=True)
        return r.ok

    for n in steps:
        if not one(n):
            for m in range(best + refine, n, refine) if refine else ():
                if not one(m):
                    break
                best = m
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
    # Every step keeps its SIPp logs (var/bench/<system>/c<N>, r<rate>; the last round's): a single
    # failed call must be explainable afterwards.
    best_c, conc_runs = search("concurrent", conc_steps,
                               lambda n: sipp_load(target, n, 60, int(n / 60 * 1000) + 8000, OUT / name / f"c{n}"))
    time.sleep(2)
    rates = list(range(25, 401, 25)) if not quick else [25, 50]
    best_r, rate_runs = search("calls/s", rates,
                               lambda r: sipp_load(target, r * 10, r, 500, OUT / name / f"r{r}"), refine=5)
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


def cpu_per_call(bare: Capacity, plat: Capacity) -> dict[str, float] | None:
    """Machine CPU per call set up (steal left out), at the highest rate both systems passed: on a
    machine whose setup rate is bound by CPU, this is what the rate ratio comes from, measured at
    equal load."""
    passed = [{int(str(r["calls"])): float(str(r["cpu"])) - float(str(r["steal"])) for r in c.runs["rate"]
               if r["answered"] == r["calls"]}
              for c in (bare, plat)]
    common = sorted(set(passed[0]) & set(passed[1]))
    if not common:
        return None
    calls = common[-1]
    rate = calls // 10  # each rate step places 10 s of calls
    cores = os.cpu_count() or 1
    ms = [p[calls] / 100 * cores / rate * 1000 for p in passed]
    return {"rate": rate, "bare": round(ms[0], 2), "platform": round(ms[1], 2)}


def run_bare(n: int, prompt: Path, quick: bool) -> Capacity:
    """Baseline: bare pjsua2 processes behind the same front door configuration."""
    bare = start_bare(n, str(prompt), OUT / "bare-logs")

    async def phase() -> Capacity:
        fd = FrontDoor(ROOT / "sip_config" / "kamailio.cfg", OUT / "kamailio-bare", "127.0.0.1", SIP_PORT,
                       policy=Policy(trusted_sources=("127.0.0.1",)))  # the load generator plays the trunk
        await fd.start([Destination(f"sip:127.0.0.1:{WORKER_SIP + i}", f"b{i}", 4) for i in range(n)])
        try:
            return await asyncio.to_thread(measure, "bare", TARGET, 4 * n, quick)
        finally:
            await fd.stop()

    try:
        return asyncio.run(phase())
    finally:
        stop_all(bare)


def run_platform(n: int, prompt: Path, quick: bool) -> Capacity:
    """The platform: same number of media processes. The loop workload never originates a leg, so no
    slot is kept back for one (media.outbound_reserve = 0) and both systems offer 4 calls per process."""
    shutil.rmtree(OUT / "redis", ignore_errors=True)  # from empty: its AOF grew run after run
    pg, rd = EmbeddedPostgres(OUT / "pgdata"), EmbeddedRedis(OUT / "redis")
    admin = pg.start()
    db_url = asyncio.run(fresh_database(pg, admin))
    api_key = asyncio.run(_read_key(db_url))
    redis_url = rd.start()
    cfg = OUT / "callcenter.toml"
    http_port = free_port()
    write_config(cfg, http_port=http_port, sip_port=SIP_PORT, workers=n, worker_sip=WORKER_SIP, rtp_port=RTP_BASE,
                 outbound_reserve=0, var_dir=OUT / "platform-var")
    (OUT / "platform-var").mkdir(exist_ok=True)
    if not (OUT / "platform-var" / "prompts").exists():
        shutil.copytree(prompt.parent, OUT / "platform-var" / "prompts")
    env = {**os.environ, "DATABASE_URL": db_url, "REDIS_URL": redis_url}
    plat = subprocess.Popen([sys.executable, "-m", "callcenter.cli", "--config", str(cfg), "run",
                             "--demo-customers", "0"], cwd=ROOT, env=env,
                            stdout=open(OUT / "platform.log", "ab"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while workers_up(http_port, api_key) < n:
            if plat.poll() is not None or time.monotonic() > deadline:
                sys.exit("platform did not start all workers; see var/bench/platform.log")
            time.sleep(0.5)
        return measure("platform", TARGET, 4 * n, quick)
    finally:
        plat.send_signal(signal.SIGINT)
        plat.wait(60)
        rd.stop()
        pg.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--processes", type=int, default=64, help="media processes for both systems")
    ap.add_argument("--rounds", type=int, default=1, help="measure both systems this many times, in turn")
    ap.add_argument("--quick", action="store_true", help="two steps each (smoke run)")
    a = ap.parse_args()
    for tool in ("sipp", "kamailio"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            sys.exit(f"{tool} is not installed (apt-get install sip-tester kamailio)")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "platform.log").write_bytes(b"")  # every round of this run appends to it
    info = machine()
    print("machine:", json.dumps(info), flush=True)
    prompt = ROOT / "var" / "prompts" / "hold_loop.wav"
    if not prompt.exists():
        subprocess.run([sys.executable, "-m", "callcenter.cli", "prompts"], cwd=ROOT, check=True)
    rounds: list[dict[str, Any]] = []
    for i in range(a.rounds):
        print(f"round {i + 1} of {a.rounds}", flush=True)
        bare, plat = run_bare(a.processes, prompt, a.quick), run_platform(a.processes, prompt, a.quick)
        rounds.append({"bare": bare.__dict__, "platform": plat.__dict__,
                       "ratio": {"concurrent": round(plat.concurrent / max(1, bare.concurrent), 3),
                                 "setup_rate": round(plat.setup_rate / max(1, bare.setup_rate), 3)},
                       "cpu_ms_per_call": cpu_per_call(bare, plat)})
    median = {k: statistics.median(r["ratio"][k] for r in rounds) for k in ("concurrent", "setup_rate")}
    result = {"machine": info, "processes": a.processes, "rounds": rounds, "median_ratio": median,
              "at": time.strftime("%Y-%m-%d %H:%M:%S")}
    (OUT / "sip_capacity.json").write_text(json.dumps(result, indent=2))
    print()
    print(f"{'round':<6}{'':24}{'bare pjsua2':>14}{'platform':>12}{'ratio':>8}")
    for i, r in enumerate(rounds, 1):
        b, p = r["bare"], r["platform"]
        print(f"{i:<6}{'concurrent calls':24}{b['concurrent']:>14}{p['concurrent']:>12}"
              f"{r['ratio']['concurrent']:>8.2f}")
        print(f"{'':<6}{'call setups per second':24}{b['setup_rate']:>14}{p['setup_rate']:>12}"
              f"{r['ratio']['setup_rate']:>8.2f}")
        print(f"{'':<6}{'CPU at peak (machine %)':24}{b['cpu_at_peak'] or 0:>14.0f}{p['cpu_at_peak'] or 0:>12.0f}")
        per_call = r["cpu_ms_per_call"]
        if per_call:
            print(f"{'':<6}{'CPU ms per call set up':24}{per_call['bare']:>14.1f}{per_call['platform']:>12.1f}"
                  f"{per_call['platform'] / per_call['bare']:>8.2f}  (at {per_call['rate']} calls/s)")
    print(f"median ratio over {len(rounds)} round(s): concurrent {median['concurrent']:.2f}, "
          f"setup rate {median['setup_rate']:.2f}")


if __name__ == "__main__":
    main()
