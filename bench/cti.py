"""CTI: how fast the platform's events reach their subscribers, and a command's round trip, under
load. The whole platform runs (Kamailio, media workers, control plane, embedded PostgreSQL and
Redis); SIPp callers dial a queue whose agents are answered by a SIPp UAS, so every call is a real
queue call connected to an agent.

- ``--calls`` concurrent calls (placed at ``--rate`` per second, each held until the end);
- ``--subscribers`` socket.io clients: each follows one agent's room (the agent console), and
  ``--supervisors`` of them follow ``all`` (a wallboard);
- one webhook subscription for every event, to a receiver in this process.

Figures: event latency from emission (the event's ``at``, stamped by the control plane on the same
clock) to the socket.io client and to the webhook receiver, p50 / p99 / max; the command round trip
(REST hold, then resume → the CALLSTATE held / connected at the agent's console) for every call,
p50 / p99. The baseline, measured in the same run on the same Redis: one PUBLISH to a subscriber,
the floor under every socket.io delivery; the report gives each figure's ratio to it.

    python -m bench.cti [--calls 200] [--subscribers 200] [--supervisors 5] [--rate 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import redis.asyncio as aioredis
import socketio
from aiohttp import web

from bench.machine import CpuMeter, machine
from bench.platform import stores, workers_up, write_config
from callcenter.embedded import free_port

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "var" / "bench" / "cti"
SCENARIO = ROOT / "tests" / "sip" / "scenarios" / "load_call.xml"
SIP_PORT, WORKER_SIP, RTP_BASE = 26999, 26000, 36000


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50_ms": round(pct(values, 0.50) * 1000, 2),
            "p99_ms": round(pct(values, 0.99) * 1000, 2), "max_ms": round(max(values, default=float("nan")) * 1000, 2)}


# Events whose ``at`` the worker stamped (a media event's time, before it crossed to the control
# plane), and CALLSTATE changes they caused: their latency includes the media event's own trip.
FROM_MEDIA = {"DID", "ANSWER", "DTMF", "DIGITS", "PROMPT", "DIAL_RINGING", "DIAL_ANSWER", "DIAL_HANGUP", "BRIDGE",
              "UNBRIDGE", "TRANSFER", "MEDIA_ERROR", "HANGUP"}
FROM_MEDIA_TRANSITIONS = {"answer", "hangup"}


def from_media(e: dict[str, Any]) -> bool:
    return e["name"] in FROM_MEDIA or e["name"] == "CALLSTATE" and e["transition"] in FROM_MEDIA_TRANSITIONS


@dataclass
class Feeds:
    socket: list[float] = field(default_factory=list)  # latency of each delivery to a client
    socket_media: list[float] = field(default_factory=list)  # the same, for events stamped by a worker
    hook: list[float] = field(default_factory=list)
    hook_media: list[float] = field(default_factory=list)
    rest: list[float] = field(default_factory=list)  # a command's HTTP answer
    hook_events: int = 0
    slowest: list[tuple[float, float, str]] = field(default_factory=list)  # (latency, at, event) of socket.io
    calls: dict[int, str] = field(default_factory=dict)  # agent id -> the interaction connected to them
    waiting: dict[tuple[str, str], asyncio.Future[float]] = field(default_factory=dict)  # (call, state) -> arrival


async def start(calls: int) -> tuple[subprocess.Popen[bytes], str, str, Any, Any, str, str]:
    pg, rd, db_url, redis_url, key = await stores(OUT, "bench_cti")
    workers = (calls + 1) // 2 + 2  # two callers and their agents' legs per four-call process
    http_port = free_port()
    (OUT / "dialplan.toml").write_text('[[route]]\nnumber = "700"\nname = "bench"\naction = "queue"\n'
                                       'prompt = "connecting"\nqueue = "bench"\n')
    cfg = OUT / "callcenter.toml"
    write_config(cfg, http_port=http_port, sip_port=SIP_PORT, workers=workers, worker_sip=WORKER_SIP,
                 rtp_port=RTP_BASE, outbound_reserve=2, var_dir=OUT / "var", dialplan=OUT / "dialplan.toml")
    prompts = ROOT / "var" / "prompts"
    if prompts.exists() and not (OUT / "var" / "prompts").exists():
        shutil.copytree(prompts, OUT / "var" / "prompts")
    env = {**os.environ, "DATABASE_URL": db_url, "REDIS_URL": redis_url}
    proc = subprocess.Popen([sys.executable, "-m", "callcenter.cli", "--config", str(cfg), "run", "--demo-customers",
                             "0"], cwd=ROOT, env=env, stdout=open(OUT / "platform.log", "wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while workers_up(http_port, key) < workers:
        if proc.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"the platform did not start {workers} workers; see {OUT / 'platform.log'}")
        await asyncio.sleep(0.5)
    return proc, f"http://127.0.0.1:{http_port}", key, pg, rd, redis_url, db_url


async def api(http: aiohttp.ClientSession, base: str, method: str, path: str, body: Any) -> Any:
    async with http.request(method, base + path, json=body) as resp:
        out = await resp.json()
        if resp.status >= 300:
            raise RuntimeError(f"{method} {path}: {resp.status} {out}")
        return out


async def baseline(redis_url: str, n: int = 500) -> list[float]:
    """One PUBLISH to one subscriber on the same Redis: the transport under every socket.io emit."""
    r = aioredis.from_url(redis_url)
    sub = r.pubsub()
    await sub.subscribe("bench:floor")
    await sub.get_message(timeout=1)
    out = []
    for _ in range(n):
        t = time.time()
        await r.publish("bench:floor", repr(t))
        while (m := await sub.get_message(timeout=1)) is None or m["type"] != "message":
            pass
        out.append(time.time() - t)
    await sub.aclose()
    await r.aclose()
    return out


def _cores(since: tuple[float, float]) -> float:
    """CPU this process used since ``since`` (process time, monotonic), in cores."""
    return round((time.process_time() - since[0]) / max(1e-9, time.monotonic() - since[1]), 2)


def _late(slow: list[tuple[float, float, str]], t0: float) -> dict[str, Any]:
    """When the socket.io deliveries over 100 ms were emitted (seconds into the run), by second, and
    which events they were: a tail is a moment or a steady cost."""
    by_second: dict[int, int] = {}
    names: dict[str, int] = {}
    for _latency, at, name in slow:
        by_second[int(at - t0)] = by_second.get(int(at - t0), 0) + 1
        names[name] = names.get(name, 0) + 1
    return {"count": len(slow), "by_second": dict(sorted(by_second.items())),
            "by_event": dict(sorted(names.items(), key=lambda kv: -kv[1]))}


async def run(a: argparse.Namespace) -> dict[str, Any]:
    proc, base, key, pg, rd, redis_url, db_url = await start(a.calls)
    t_start = time.time()
    marks: dict[str, float] = {}  # seconds into the run each phase began
    feeds = Feeds()
    clients: list[socketio.AsyncClient] = []
    runner: web.AppRunner | None = None
    sipp_uas = sipp_uac = None
    stack = contextlib.AsyncExitStack()
    try:
        floor = await baseline(redis_url)
        http = aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"})
        stack.push_async_callback(http.close)
        uas_port = free_port()
        sipp_uas = subprocess.Popen(["sipp", "-sn", "uas", "-i", "127.0.0.1", "-p", str(uas_port), "-nostdin",
                                     "-mp", "47000", "-bg"], cwd=OUT, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
        await api(http, base, "POST", "/api/queues", {"name": "bench", "settings": {
            "ring_timeout": 10, "wrap_up": 0, "announce_every": 0, "max_wait": 600, "max_callers": 10000}})
        for i in range(a.calls):
            await api(http, base, "POST", "/api/agents", {"login": f"a{i}", "name": f"Agent {i}",
                                                          "sip_uri": f"sip:a{i}@127.0.0.1:{uas_port}"})
        conn = await asyncpg.connect(db_url)
        by_login = {r["login"]: r["id"] for r in await conn.fetch("SELECT id, login FROM agents")}
        await conn.close()
        ids = [int(by_login[f"a{i}"]) for i in range(a.calls)]
        await api(http, base, "PUT", "/api/queues/bench/members", {"members": [{"agent": f"a{i}"}
                                                                               for i in range(a.calls)]})
        # the webhook receiver
        async def hook(request: web.Request) -> web.Response:
            now = time.time()
            body = json.loads(await request.read())
            for e in body["events"]:
                (feeds.hook_media if from_media(e) else feeds.hook).append(now - e["at"])
            feeds.hook_events += len(body["events"])
            return web.Response(status=204)

        app = web.Application()
        app.router.add_post("/hook", hook)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        hook_port = free_port()
        await web.TCPSite(runner, "127.0.0.1", hook_port).start()
        sub = await api(http, base, "POST", "/api/webhooks", {"name": "bench",
                                                               "url": f"http://127.0.0.1:{hook_port}/hook"})
        while sub["id"] not in (await api(http, base, "GET", "/healthz", None))["webhooks"]["reading"]:
            await asyncio.sleep(0.2)  # the sender takes new subscriptions up within seconds
        # the subscribers
        for n in range(a.subscribers):
            agent = ids[n % len(ids)]
            supervisor = n >= a.subscribers - a.supervisors
            sio = socketio.AsyncClient(reconnection=False)

            def on_event(e: dict[str, Any], agent: int = agent,
                         watcher: bool = n < len(ids) and not supervisor) -> None:
                now = time.time()
                (feeds.socket_media if from_media(e) else feeds.socket).append(now - e["at"])
                if now - e["at"] > 0.1:
                    feeds.slowest.append((now - e["at"], e["at"], e["name"]))
                if watcher and e["name"] == "CALLSTATE":
                    if e["state"] == "connected":
                        feeds.calls[agent] = e["interaction"]
                    waiter = feeds.waiting.pop((e["interaction"], e["state"]), None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(now)

            sio.on("event", on_event, namespace="/cti")
            await sio.connect(base, auth={"token": key}, namespaces=["/cti"], transports=["websocket"])
            room = {"all": True} if supervisor else {"agent": agent}
            assert (await sio.call("subscribe", room, namespace="/cti"))["ok"]
            clients.append(sio)
        marks["subscribed"] = round(time.time() - t_start, 1)
        for i in range(a.calls):
            await api(http, base, "POST", f"/api/agents/a{i}/status", {"status": "available"})
        marks["agents_available"] = round(time.time() - t_start, 1)
        # the calls: placed at --rate, held until the commands are done
        hold_ms = int((a.calls / a.rate + 60 + a.calls * 0.2 * a.command_rounds) * 1000)
        sipp_uac = subprocess.Popen(
            ["sipp", "-sf", str(SCENARIO), "-s", "700", "-m", str(a.calls), "-r", str(a.rate), "-l", str(a.calls),
             "-d", str(hold_ms), "-i", "127.0.0.1", "-p", str(free_port()), "-mp", "46000", "-nostdin",
             "-recv_timeout", "20000", f"127.0.0.1:{SIP_PORT}"], cwd=OUT, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        setup_cpu, setup_self = CpuMeter(), (time.process_time(), time.monotonic())
        marks["calls_placed"] = round(time.time() - t_start, 1)
        deadline = time.monotonic() + a.calls / a.rate + 60
        while len(feeds.calls) < a.calls and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        connected = len(feeds.calls)
        marks["connected"] = round(time.time() - t_start, 1)
        print(f"  {connected}/{a.calls} calls connected to agents; {len(feeds.socket)} deliveries so far", flush=True)
        setup_socket, setup_hook = list(feeds.socket), list(feeds.hook)
        cpu = {"setup": setup_cpu.read()}
        me = {"setup": _cores(setup_self)}
        # the commands: every connected call held, then resumed, ten at a time
        rtt: list[float] = []
        refused: list[str] = []

        async def command(agent: int, name: str, state: str) -> None:
            iid = feeds.calls[agent]
            arrival = feeds.waiting[(iid, state)] = asyncio.get_running_loop().create_future()
            t0 = time.time()
            try:
                await api(http, base, "POST", f"/api/calls/{iid}/{name}", {})
            except RuntimeError as exc:  # the call ended meanwhile (an overloaded machine drops calls)
                refused.append(str(exc)[:200])
                feeds.waiting.pop((iid, state), None)
                return
            feeds.rest.append(time.time() - t0)
            with contextlib.suppress(TimeoutError):
                rtt.append(await asyncio.wait_for(arrival, 10) - t0)

        agents_on_call = list(feeds.calls)
        commands_cpu, commands_self = CpuMeter(), (time.process_time(), time.monotonic())
        for _ in range(a.command_rounds):
            for name, state in (("hold", "held"), ("resume", "connected")):
                for n in range(0, len(agents_on_call), 10):
                    await asyncio.gather(*(command(ag, name, state) for ag in agents_on_call[n:n + 10]))
        cpu["commands"] = commands_cpu.read()
        me["commands"] = _cores(commands_self)
        await asyncio.sleep(2.0)
        return {
            "calls": a.calls, "connected": connected, "subscribers": a.subscribers, "supervisors": a.supervisors,
            "baseline_publish": summary(floor),
            "socketio_during_setup": summary(setup_socket), "socketio_all": summary(feeds.socket),
            "webhook_during_setup": summary(setup_hook), "webhook_all": summary(feeds.hook),
            "webhook_events": feeds.hook_events, "command_round_trip": summary(rtt),
            "command_rest": summary(feeds.rest), "socketio_media_stamped": summary(feeds.socket_media),
            "webhook_media_stamped": summary(feeds.hook_media), "commands_refused": len(refused),
            "refusals": refused[:5],
            "socketio_over_100ms": _late(feeds.slowest, t_start), "phases_began_at": marks,
            "machine_cpu": {phase: {"busy_pct": b, "steal_pct": st, "benchmark_cores": me[phase]}
                            for phase, (b, st) in cpu.items()},
        }
    finally:
        await stack.aclose()
        for c in clients:
            await c.disconnect()
        if runner is not None:
            await runner.cleanup()
        for p in (sipp_uac, sipp_uas):
            if p is not None and p.poll() is None:
                p.kill()
        subprocess.run(["pkill", "-f", "sipp -sn uas -i 127.0.0.1"], check=False)
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
        rd.stop()
        pg.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=200, help="concurrent queue calls, each with its agent")
    ap.add_argument("--subscribers", type=int, default=200, help="socket.io clients")
    ap.add_argument("--supervisors", type=int, default=5, help="of the subscribers, those following every event")
    ap.add_argument("--rate", type=float, default=10.0, help="calls placed per second")
    ap.add_argument("--command-rounds", type=int, default=3, help="times every call is held and resumed")
    a = ap.parse_args()
    for tool in ("sipp", "kamailio"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            sys.exit(f"{tool} is not installed (apt-get install sip-tester kamailio)")
    print("machine:", json.dumps(machine()), flush=True)
    result = asyncio.run(run(a))
    result["at"] = time.strftime("%Y-%m-%d %H:%M:%S")
    (OUT / "cti.json").write_text(json.dumps(result, indent=2))
    floor = result["baseline_publish"]
    print(f"\n{'':34}{'n':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'p99 / floor':>13}")
    for label, k in (("Redis PUBLISH (the floor)", "baseline_publish"),
                     ("socket.io, calls being set up", "socketio_during_setup"),
                     ("socket.io, whole run", "socketio_all"), ("webhook, calls being set up", "webhook_during_setup"),
                     ("webhook, whole run", "webhook_all"),
                     ("socket.io, worker-stamped events", "socketio_media_stamped"),
                     ("webhook, worker-stamped events", "webhook_media_stamped"),
                     ("REST hold/resume: HTTP answer", "command_rest"),
                     ("REST hold/resume -> CALLSTATE", "command_round_trip")):
        s = result[k]
        ratio = s["p99_ms"] / floor["p99_ms"] if floor["p99_ms"] else float("nan")
        print(f"{label:34}{s['n']:>8}{s['p50_ms']:>9.2f}{s['p99_ms']:>9.2f}{s['max_ms']:>9.2f}{ratio:>13.1f}")
    print(f"{result['connected']}/{result['calls']} calls connected, {result['subscribers']} subscribers "
          f"({result['supervisors']} on every event), {result['webhook_events']} webhook events, "
          f"{result['commands_refused']} commands refused")
    print(f"phases began (s into the run): {result['phases_began_at']}; socket.io deliveries over 100 ms: "
          f"{json.dumps(result['socketio_over_100ms'])}")
    for phase, c in result["machine_cpu"].items():
        print(f"machine CPU while {phase}: {c['busy_pct']:.0f}% busy, of which {c['steal_pct']:.0f}% steal; "
              f"this benchmark's own process (the 200 clients, the receiver) {c['benchmark_cores']:.2f} cores")
    print("targets: socket.io p99 <= 50 ms, command round trip p99 <= 100 ms")


if __name__ == "__main__":
    main()
