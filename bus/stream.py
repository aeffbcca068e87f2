"""The event stream's writer: a notifier sink that appends every event to the Redis stream
``cc:events`` (bus/keys.py) in emission order, without ever making the emitter wait.

``add`` only appends to memory. A writer loop sends what is pending in one pipeline per wake-up,
so a burst costs one round trip. While Redis is unreachable the events stay in memory; past
``memory_bound`` they are spooled to ``<spool_dir>/events-<ns>.jsonl``. Spooled events are older
than those in memory, so the spool is always sent first, and a node that stopped while Redis was
away sends its spool at its next start. Delivery is at least once (a pipeline cut off mid-way is
sent again); every event carries a unique ``id`` by which subscribers recognise a repeat.

Each send is one stream entry: the event, or a JSON array of the events pending (at most BATCH), in
order. The stream is trimmed by length on every append (approximately, which costs Redis nothing)
and by age once a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from collections import deque
from pathlib import Path
from typing import Protocol

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from bus.events import Event
from bus.keys import EVENTS
from bus.redis import REDIS_DOWN

log = logging.getLogger("bus.stream")

MAXLEN = 200_000  # entries, each an event or a batch of them (at most BATCH)
RETENTION = 24 * 3600.0  # seconds an event stays in the stream at most
BATCH = 500  # events per pipeline
MEMORY_BOUND = 20_000  # events held in memory while Redis is away, before they are spooled
# Seconds between two sends at least: when busy, the events of 20 ms go in one send (a call's events
# come one media event at a time, and a send per event cost the control plane a tenth of a core at
# 50 calls/s, py-spy); when idle, an event goes at once (waiting 20 ms for company was most of an
# event's way to a socket.io client: bench/cti).
LINGER = 0.02
TRIM_EVERY = 60.0
FIELD = "e"  # the one field of a stream entry: the event's JSON (bus.events.Event.encode)


class Piggyback(Protocol):
    """Writes that ride along in the writer's pipeline (the call sessions' mirror)."""

    def stage(self, pipe: Pipeline) -> object: ...  # add commands; the token is given back to sent()

    def sent(self, token: object) -> None: ...


class StreamWriter:
    def __init__(self, redis: aioredis.Redis, spool_dir: Path, *, memory_bound: int = MEMORY_BOUND,
                 maxlen: int = MAXLEN, retention: float = RETENTION):
        self.redis = redis
        self.spool_dir = spool_dir
        self.memory_bound = memory_bound
        self.maxlen = maxlen
        self.retention = retention
        self._pending: deque[str] = deque()
        self._wake = asyncio.Event()
        self._trimmed_at = 0.0
        self.piggyback: list[Piggyback] = []
        self._spool_checked = False  # the spool directory was found empty and nothing spooled since
        self.sent = 0
        self.spooled = 0
        self.failures = 0
        self.failing = False  # the last send failed: events are held
        self._sent_at = 0.0  # monotonic time of the last send

    @property
    def backlog(self) -> int:
        """Events not in the stream yet: in memory and in the spool."""
        return len(self._pending) + sum(len(p.read_text().splitlines()) for p in self._spool_files())

    def status(self) -> dict[str, object]:
        return {"ok": not self.failing, "sent": self.sent, "held": len(self._pending), "spooled": self.spooled}

    def add(self, event: Event) -> None:
        self._pending.append(event.encode())
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        backoff = 0.0
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                # After a failure, wait out the back-off whatever is added meanwhile; else until
                # something is added (looking at ``stop`` twice a second).
                await asyncio.wait_for(stop.wait() if backoff else self._wake.wait(), backoff or 0.5)
            if self._wake.is_set():  # at most one send per LINGER: idle, an event goes out at once
                wait = LINGER - (time.monotonic() - self._sent_at)
                if wait > 0:
                    await asyncio.sleep(wait)
            self._wake.clear()
            try:
                self._sent_at = time.monotonic()
                await self.send()
                if backoff:
                    log.info("event stream: Redis is back; the backlog is sent")
                backoff, self.failing = 0.0, False
                await self._trim()
            except REDIS_DOWN as exc:
                self.failures += 1
                self.failing = True
                if not backoff:
                    log.warning("event stream: Redis unreachable (%s); %d events held", exc, len(self._pending))
                if len(self._pending) > self.memory_bound:
                    self._spool()
                backoff = min(max(backoff * 2, 0.1), 2.0)

    async def send(self) -> None:
        """The spool, then what is pending now, in one pipeline (events added meanwhile wait for the
        next send); raises a REDIS_DOWN error with what is left kept."""
        for path in self._spool_files():
            await self._send_file(path)
        n = len(self._pending)
        if n:
            await self._xadd(list(itertools.islice(self._pending, n)))
            for _ in range(n):
                self._pending.popleft()

    async def close(self, timeout: float = 5.0) -> None:
        """Send what is left; if Redis does not take it in time, spool it for the next start."""
        try:
            async with asyncio.timeout(timeout):
                while self._pending or self._spool_files():
                    await self.send()
        except (TimeoutError, RedisError, OSError) as exc:
            log.warning("event stream: final send failed (%s); spooling %d events", exc, len(self._pending))
            self._spool()

    async def _xadd(self, lines: list[str]) -> None:
        """One stream entry per BATCH events (a JSON array), all in one pipeline: a call's handful of
        events a second would otherwise cost Redis and this process a command each."""
        pipe = self.redis.pipeline(transaction=False)
        for i in range(0, len(lines), BATCH):
            chunk = lines[i:i + BATCH]
            pipe.xadd(EVENTS, {FIELD: chunk[0] if len(chunk) == 1 else "[" + ",".join(chunk) + "]"},
                      maxlen=self.maxlen, approximate=True)
        tokens = [(p, p.stage(pipe)) for p in self.piggyback]
        await pipe.execute()
        self.sent += len(lines)
        for p, token in tokens:
            p.sent(token)

    async def _trim(self) -> None:
        now = time.time()
        if now - self._trimmed_at < TRIM_EVERY:
            return
        self._trimmed_at = now
        await self.redis.xtrim(EVENTS, minid=f"{int((now - self.retention) * 1000)}-0", approximate=True)

    # ------------------------------------------------------------------ spool
    def _spool_files(self) -> list[Path]:
        if self._spool_checked:  # not a directory listing per send
            return []
        files = sorted(self.spool_dir.glob("events-*.jsonl")) if self.spool_dir.exists() else []
        self._spool_checked = not files
        return files

    def _spool(self) -> None:
        if not self._pending:
            return
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        path = self.spool_dir / f"events-{time.time_ns()}.jsonl"
        _write_lines(path, self._pending)
        self.spooled += len(self._pending)
        self._spool_checked = False
        log.warning("event stream: spooled %d events to %s", len(self._pending), path)
        self._pending.clear()

    async def _send_file(self, path: Path) -> None:
        lines = path.read_text().splitlines()
        sent = 0
        try:
            while sent < len(lines):  # a bounded pipeline at a time: a spool can be large
                await self._xadd(lines[sent:sent + BATCH * 20])
                sent += BATCH * 20
        except BaseException:
            if sent:  # keep exactly what is not sent yet, under the same name (its place in the order)
                _write_lines(path, lines[sent:])
            raise
        path.unlink()
        log.info("event stream: sent %d spooled events from %s", len(lines), path.name)


def _write_lines(path: Path, lines: deque[str] | list[str]) -> None:
    """Write whole or not at all: a crash mid-write must not leave half an event."""
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        f.writelines(line + "\n" for line in lines)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
