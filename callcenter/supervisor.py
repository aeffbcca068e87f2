"""Supervision of media workers: start them, watch process exit and Redis heartbeats, close the
calls of a dead worker with a cause, restart it with back-off, keep the front door in step."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bus.keys import MEDIA_ALIVE_KEY, MEDIA_SUPERVISED, MEDIA_WORKERS
from bus.redis import REDIS_DOWN, connect
from callcenter.config import Config
from callcenter.procs import die_with_parent
from media import protocol as mp
from media.client import MediaClient

log = logging.getLogger("callcenter.supervisor")



@dataclass(frozen=True)
class WorkerSpec:
    worker_id: str
    host: str
    sip_port: int
    rtp_port: int


@dataclass
class _Slot:
    spec: WorkerSpec
    proc: asyncio.subprocess.Process | None = None
    up: bool = False
    capacity: int = 0
    max_calls: int = 0
    restarts: int = 0
    next_start: float = 0.0
    started_at: float = 0.0


def plan_workers(cfg: Config, count: int, single_on_sip_port: bool) -> list[WorkerSpec]:
    m = cfg.media
    if single_on_sip_port:
        return [WorkerSpec("w1", cfg.sip.host, cfg.sip.port, m.rtp_port)]
    return [WorkerSpec(f"w{i + 1}", cfg.sip.host, m.worker_sip_port + i, m.rtp_port + i * m.rtp_ports_per_worker)
            for i in range(count)]


class Supervisor:
    def __init__(self, cfg: Config, redis_url: str, client: MediaClient, specs: list[WorkerSpec],
                 log_dir: Path, on_change: Callable[[], Coroutine[Any, Any, None]] | None = None,
                 front_door: str = "", on_dead: Callable[[WorkerSpec], Coroutine[Any, Any, int]] | None = None,
                 speech: str = ""):
        self.cfg = cfg
        self.speech = speech  # host:port of the speech service the workers stream to ("": none)
        self.on_dead = on_dead  # ends the dead worker's dialogs at the front door; returns how many
        self.front_door = front_door  # host:port the workers take calls from and originate through
        self.redis_url = redis_url
        self.redis = connect(redis_url)
        self.client = client
        self.slots = {s.worker_id: _Slot(s) for s in specs}
        self.log_dir = log_dir
        self.on_change = on_change
        self.deaths: list[tuple[str, str, int]] = []  # (worker, why, calls closed)
        # Since when Redis has answered without a break (None: it is away now).
        self.redis_since: float | None = time.monotonic()
        self._trust_after = cfg.media.heartbeat_ttl + cfg.media.heartbeat_interval
        self._marked = False  # MEDIA_SUPERVISED written by this supervisor
        self._stopping = False
        self._checking = asyncio.Lock()  # held by the watch loop while it acts on one check
        client.listeners.append(self._on_event)

    def _on_event(self, ev: mp.Event, _handle: object) -> None:
        slot = self.slots.get(ev.worker_id)
        if slot is None:
            return
        if isinstance(ev, mp.WorkerUp):
            slot.up, slot.capacity, slot.max_calls = True, ev.capacity, ev.max_calls
            self._changed()
        elif isinstance(ev, mp.WorkerDown):
            slot.up = False
            self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            asyncio.get_running_loop().create_task(self.on_change())

    def live(self) -> list[tuple[WorkerSpec, int]]:
        """Workers that are up, with the inbound calls each accepts."""
        return [(s.spec, s.capacity) for s in self.slots.values() if s.up]

    async def _spawn(self, slot: _Slot) -> None:
        s, m = slot.spec, self.cfg.media
        self.log_dir.mkdir(parents=True, exist_ok=True)
        logf = open(self.log_dir / f"{s.worker_id}.log", "ab")
        slot.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "media.worker", "--id", s.worker_id, "--host", s.host,
            "--sip-port", str(s.sip_port), "--rtp-port", str(s.rtp_port),
            "--rtp-port-count", str(m.rtp_ports_per_worker), "--redis-url", self.redis_url,
            "--outbound-reserve", str(m.outbound_reserve), "--answer-timeout", str(m.answer_timeout),
            "--heartbeat-interval", str(m.heartbeat_interval), "--heartbeat-ttl", str(m.heartbeat_ttl),
            "--front-door", self.front_door, "--ack-timeout", str(m.ack_timeout), "--speech", self.speech,
            stdout=logf, stderr=logf, start_new_session=True, preexec_fn=die_with_parent,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        logf.close()
        slot.up = False
        slot.started_at = time.monotonic()

    async def start(self, wait_up: float = 20.0) -> None:
        for slot in self.slots.values():
            await self._spawn(slot)
        deadline = time.monotonic() + wait_up
        while time.monotonic() < deadline and not all(s.up for s in self.slots.values()):
            await asyncio.sleep(0.05)
        missing = [w for w, s in self.slots.items() if not s.up]
        if missing:
            log.error("workers not up after %.0f s: %s (see %s)", wait_up, missing, self.log_dir)

    async def _beating(self) -> set[str] | None:
        """The workers whose heartbeat key exists, or None when heartbeats say nothing: Redis is
        away, or came back less than a heartbeat TTL ago (its keys expired during the outage and
        the workers have not beaten again yet). A Redis outage is never taken for dead workers."""
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.set(MEDIA_SUPERVISED, "1", get=True)  # no TTL: its absence means Redis lost its data
            alive = [MEDIA_ALIVE_KEY.format(worker_id=wid) for wid in self.slots]
            if alive:
                pipe.mget(alive)  # one command for all the workers, not one each
            kept, *rest = await pipe.execute()
            found = rest[0] if rest else []
        except REDIS_DOWN:
            self.redis_since = None
            return None
        now = time.monotonic()
        if kept is None and self._marked:  # Redis came back empty (or was flushed): no heartbeat is there yet
            self.redis_since = None
        self._marked = True
        if self.redis_since is None:
            self.redis_since = now
            log.warning("Redis reachable again: heartbeats are judged again in %.0f s", self._trust_after)
        if now - self.redis_since < self._trust_after:
            return None
        return {wid for wid, pid in zip(self.slots, found, strict=True) if pid is not None}

    async def watch(self, stop: asyncio.Event) -> None:
        """Find dead workers and start them again: a supervised loop (callcenter/tasks.py), so that
        an error here is logged and the loop restarted, never a silently dead supervisor."""
        while not self._stopping and not stop.is_set():
            await asyncio.sleep(0.2)
            async with self._checking:
                if not self._stopping:
                    await self._check()

    async def _check(self) -> None:
        ttl = self.cfg.media.heartbeat_ttl
        now = time.monotonic()
        beating = await self._beating()
        for wid, slot in self.slots.items():
            if slot.proc is None:
                if now >= slot.next_start and not self._stopping:
                    await self._spawn(slot)
                continue
            why = ""
            if slot.proc.returncode is not None:
                why = f"exited with {slot.proc.returncode}"  # a dead process is known without Redis
            elif beating is not None and wid not in beating and (slot.up or now - slot.started_at > max(ttl, 15.0)):
                why = "heartbeat lost"
            if why:
                await self._dead(slot, why)

    async def _dead(self, slot: _Slot, why: str) -> None:
        wid = slot.spec.worker_id
        proc, slot.proc = slot.proc, None
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
        slot.up = False
        ended = 0
        if self.on_dead is not None:
            try:
                ended = await self.on_dead(slot.spec)
            except OSError as exc:
                log.error("could not end the dialogs of %s at the front door: %s", wid, exc)
        closed = self.client.fail_worker(wid)
        self.deaths.append((wid, why, closed))
        log.error("media worker %s %s: %d calls closed, %d dialogs ended with a BYE; restarting", wid, why,
                  closed, ended)
        try:
            await self.redis.hdel(MEDIA_WORKERS, wid)
        except REDIS_DOWN:
            pass
        slot.restarts += 1
        slot.next_start = time.monotonic() + min(0.5 * 2 ** min(slot.restarts - 1, 6),
                                                 self.cfg.media.restart_backoff_max)
        self._changed()

    async def status(self) -> list[dict[str, object]]:
        try:
            raw = await self.redis.hgetall(MEDIA_WORKERS)
        except REDIS_DOWN:
            raw = {}
        out = []
        for wid, slot in self.slots.items():
            info = json.loads(raw[wid.encode()]) if wid.encode() in raw else {}
            out.append({"worker_id": wid, "up": slot.up, "sip_port": slot.spec.sip_port,
                        "pid": slot.proc.pid if slot.proc else None, "restarts": slot.restarts,
                        "calls": info.get("calls"), "capacity": slot.capacity, "max_calls": slot.max_calls})
        return out

    async def stop(self, timeout: float = 8.0) -> None:
        """Ask every worker to hang up and exit; their final events still reach the log."""
        self._stopping = True
        async with self._checking:  # a check in progress (a worker being started) ends first
            pass
        procs = [s.proc for s in self.slots.values() if s.proc is not None and s.proc.returncode is None]
        for p in procs:
            try:
                p.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        try:
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs)), timeout)
        except TimeoutError:
            for p in procs:
                if p.returncode is None:
                    p.kill()
            await asyncio.gather(*(p.wait() for p in procs))
        for s in self.slots.values():
            s.up = False
        await self.redis.aclose()
