"""ACD routing decisions through Redis with 100, 1,000 and 10,000 agents logged in across 50 queues
and 200 skills, and 5,000 waiting calls.

A decision is one call of the distributor's Lua script (acd/distributor.py): walk the queue's idle
index, check skills, reserve the agent, claim the call, publish the offer. Measured per size:

- cost of one decision that places a call: client round trip (median, p99) and Redis server time
  for that call (INFO commandstats), with a PING round trip measured alongside; each size lives in
  its own database of one Redis server and the rounds alternate between sizes;
- decisions per second: many decisions in flight from several client processes.

After each batch the reserved agents are released and their calls put back (not timed), so every
batch decides against the same population. Needs only Python: it starts an embedded Redis.

    python -m bench.acd_routing [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import random
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import redis.asyncio as aioredis

from acd.agent_store import AgentStore
from acd.directory import AgentEntry, Directory
from acd.distributor import CallInfo, Distributor, steps_of
from acd.models import QueueSettings, RoutingStep
from acd.routing import requirements
from acd.strategies import Strategy
from acd.waiting import Head, Waiting, order_key
from bench.machine import machine
from callcenter.embedded import EmbeddedRedis

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "var" / "bench"
QUEUES = 50
SKILLS = 200
LANGUAGES = [f"lang{i}" for i in range(8)]  # 8 of the 200 skills are languages the IVR attaches
WAITING = 5000
STRATEGIES = [Strategy.LONGEST_IDLE, Strategy.FEWEST_CALLS, Strategy.LEAST_TALK_TIME, Strategy.LINEAR,
              Strategy.ROUND_ROBIN, Strategy.RANDOM]


@dataclass
class Call:
    call_id: str
    queue: str
    require: dict[str, int]
    key: float


async def populate(r: aioredis.Redis, agents: int, rng: random.Random) -> list[Call]:
    await r.flushdb()
    directory, store, waiting = Directory(r), AgentStore(r), Waiting(r)
    dist = Distributor(r, directory)
    skills = LANGUAGES + [f"skill{i}" for i in range(SKILLS - len(LANGUAGES))]
    queues: dict[str, QueueSettings] = {}
    for i in range(QUEUES):
        # each queue has a home skill; its first routing step asks for it at level 3, then 1
        home = skills[len(LANGUAGES) + i]
        s = QueueSettings.model_validate({
            "strategy": STRATEGIES[i % len(STRATEGIES)].value,
            "routing": [RoutingStep(after=0, require={home: 3}), RoutingStep(after=30, require={home: 1})]},
            strict=False)
        queues[f"q{i}"] = s
        await directory.put_queue(f"q{i}", s)
    names = list(queues)
    for aid in range(1, agents + 1):
        mine = rng.sample(range(QUEUES), 3)
        own = {skills[len(LANGUAGES) + q]: rng.randint(1, 5) for q in mine}  # the home skills of its queues
        own.update({s: rng.randint(1, 5) for s in rng.sample(skills[len(LANGUAGES):], 2)})
        own.update({lang: 5 for lang in rng.sample(LANGUAGES, rng.choice((1, 2)))})
        await directory.put_agent(AgentEntry(aid, {f"q{q}": n for n, q in enumerate(mine)}, own, ""))
        await store.transition(aid, "login", now=rng.uniform(0, 1000))
    calls = []
    now = time.time()
    for n in range(WAITING):
        q = names[n % QUEUES]
        at = now - rng.uniform(0, 60)
        prio = rng.choice((0, 0, 0, 5))
        attached = {rng.choice(LANGUAGES): 1} if rng.random() < 0.3 else {}
        cid = f"c{n}"
        await dist.put_call(cid, CallInfo(q, at, prio, attached, "bench"))
        await waiting.enqueue(q, cid, prio, at)
        req = requirements(steps_of(queues[q]), now - at, attached)
        calls.append(Call(cid, q, req, order_key(prio, at)))
    return calls


async def release(r: aioredis.Redis, store: AgentStore, waiting: Waiting, placed: list[tuple[Call, list[int]]]) -> None:
    for call, agents in placed:
        for aid in agents:
            await store.transition(aid, "release", expect_call=call.call_id)
        await waiting.requeue(Head(call.queue, call.call_id, call.key))


async def server_usec(r: aioredis.Redis) -> tuple[int, float]:
    stats = cast(dict[str, dict[str, float]], await r.info("commandstats"))
    s = stats.get("cmdstat_evalsha", {"calls": 0, "usec": 0})
    return int(s["calls"]), float(s["usec"])


async def latency(url: str, calls: list[Call], decisions: int, seed: int) -> dict[str, float]:
    """One decision at a time, each with the server's own time for it (commandstats reset before);
    the reserved agent is released after each, so every decision sees the full population."""
    r = aioredis.from_url(url)
    dist, store, waiting = Distributor(r, Directory(r)), AgentStore(r), Waiting(r)
    rng = random.Random(seed)
    placed: list[tuple[float, float]] = []  # (client s, server us) of decisions that placed the call
    empty: list[tuple[float, float]] = []  # … that found no qualified free agent
    pings: list[float] = []
    for c in rng.sample(calls, decisions):
        await r.config_resetstat()
        t0 = time.perf_counter()
        got = await dist.decide(c.queue, c.call_id, c.require, 30.0)
        took = time.perf_counter() - t0
        _n, us = await server_usec(r)
        (placed if got else empty).append((took, us))
        if got:
            await release(r, store, waiting, [(c, got)])
        t0 = time.perf_counter()
        await r.ping()
        pings.append(time.perf_counter() - t0)
    await r.aclose()
    client = sorted(t for t, _ in placed)
    return {"median_us": statistics.median(client) * 1e6, "p99_us": client[int(len(client) * 0.99)] * 1e6,
            "server_us": statistics.median(us for _, us in placed),
            "empty_server_us": statistics.median(us for _, us in empty) if empty else 0.0,
            "ping_us": statistics.median(pings) * 1e6, "placed": len(placed) / decisions, "decisions": decisions}


def _throughput_proc(url: str, calls: list[Call], seconds: float, seed: int, inflight: int,
                     q: "mp.Queue[tuple[int, float]]") -> None:
    async def main() -> tuple[int, float]:
        r = aioredis.from_url(url, max_connections=inflight + 4)
        dist, store, waiting = Distributor(r, Directory(r)), AgentStore(r), Waiting(r)
        rng = random.Random(seed)
        done, timed = 0, 0.0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            picked = rng.sample(calls, inflight)
            t0 = time.perf_counter()
            got = await asyncio.gather(*(dist.decide(c.queue, c.call_id, c.require, 30.0) for c in picked))
            timed += time.perf_counter() - t0
            done += len(picked)
            await release(r, store, waiting, [(c, a) for c, a in zip(picked, got, strict=True) if a])
        await r.aclose()
        return done, timed
    q.put(asyncio.run(main()))


def throughput(url: str, calls: list[Call], procs: int, seconds: float, inflight: int) -> float:
    """Decisions per second of decision time, summed over client processes running at once."""
    ctx = mp.get_context("fork")
    results: mp.Queue[tuple[int, float]] = ctx.Queue()
    ps = [ctx.Process(target=_throughput_proc, args=(url, calls, seconds, i, inflight, results))
          for i in range(procs)]
    for p in ps:
        p.start()
    got = [results.get(timeout=seconds + 120) for _ in ps]
    for p in ps:
        p.join()
    return sum(done / timed for done, timed in got if timed > 0)


async def measure(base_url: str, sizes: list[int], quick: bool) -> list[dict[str, float]]:
    """Each size in its own Redis database of one server, all populated first; then the latency rounds
    alternate between sizes so that drift on the machine touches every size alike."""
    urls = {n: f"{base_url}/{db}" for db, n in enumerate(sizes)}
    setup: dict[int, float] = {}
    calls: dict[int, list[Call]] = {}
    for n in sizes:
        r = aioredis.from_url(urls[n])
        t0 = time.monotonic()
        calls[n] = await populate(r, n, random.Random(n))
        setup[n] = time.monotonic() - t0
        await r.aclose()
        print(f"  {n:>6} agents: populated in {setup[n]:.1f} s", flush=True)
    rounds: dict[int, list[dict[str, float]]] = {n: [] for n in sizes}
    for k in range(4 if quick else 10):
        for n in sizes:
            rounds[n].append(await latency(urls[n], calls[n], decisions=100 if quick else 300, seed=k))
    out = []
    for n in sizes:
        rs = rounds[n]
        lat = {key: statistics.median(r[key] for r in rs) for key in rs[0]}
        rate = throughput(urls[n], calls[n], procs=2, seconds=3 if quick else 10, inflight=16)
        out.append({"agents": n, **lat, "decisions_per_s": rate, "setup_s": setup[n]})
        print(f"  {n:>6} agents: decision placing a call: median {lat['median_us']:.0f} us "
              f"(p99 {lat['p99_us']:.0f} us), Redis server {lat['server_us']:.0f} us; PING {lat['ping_us']:.0f} us; "
              f"{lat['placed']:.0%} placed (no agent: server {lat['empty_server_us']:.0f} us); "
              f"{rate:,.0f} decisions/s", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sizes", default="100,1000,10000")
    a = ap.parse_args()
    info = machine()
    print("machine:", json.dumps(info))
    shutil.rmtree(OUT / "acd-redis", ignore_errors=True)  # each run from empty
    rd = EmbeddedRedis(OUT / "acd-redis")
    base_url = rd.start().rsplit("/", 1)[0]
    try:
        results = asyncio.run(measure(base_url, [int(n) for n in a.sizes.split(",")], a.quick))
    finally:
        rd.stop()
    base = results[0]
    print(f"baseline: {base['agents']} agents")
    for res in results:
        rate = res["decisions_per_s"] / base["decisions_per_s"]
        print(f"  {res['agents']:>6} agents: cost {res['median_us'] / base['median_us']:.2f}x (client), "
              f"{res['server_us'] / base['server_us']:.2f}x (server); rate {rate:.2f}x")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "acd_routing.json").write_text(json.dumps({"machine": info, "results": results}, indent=1))


if __name__ == "__main__":
    main()
