"""A subscriber of the event stream: one consumer group per subscriber (the interaction log, the
socket.io gateway, webhooks …), read by one node at a time.

Every node runs the consumer; a lease in Redis (``cc:events:lease:<group>``) says which one reads.
One reader per group keeps the stream's order, so each subscriber sees the events of a call in the
order they were emitted; the other nodes stand by and take over within ``lease_ttl`` of a reader's
death, adopting the entries it had read but not acknowledged. A batch is acknowledged only after the
handler returns (for the interaction log: written to PostgreSQL or spooled to disk); a handler that
raises gets the same entries again after a pause. Delivery is therefore at least once: handlers
recognise a repeat by the event's ``id``.

A slow or dead subscriber costs calls nothing: the writer never waits for readers, and the stream is
trimmed by length and age whatever a group has read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from bus import events as ev
from bus.keys import EVENTS, EVENTS_LEASE_KEY
from bus.redis import REDIS_DOWN
from bus.stream import FIELD

log = logging.getLogger("bus.consumer")

Handler = Callable[[list[ev.Event]], Awaitable[None]]

BLOCK = 0.5  # seconds a read blocks (redis-py pitfall: a longer blocked read is hard to stop)
LEASE_TTL = 6.0  # seconds after a reader's last renewal that another node may take over

# KEYS: lease. ARGV: me, ttl ms. 2: taken now, 1: still mine (renewed), 0: another holds it.
_LEASE = """
local holder = redis.call('GET', KEYS[1])
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 2
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


class StreamConsumer:
    def __init__(self, redis: aioredis.Redis, group: str, consumer: str, handler: Handler, *,
                 start: str = "0", count: int = 500, pause: float = 0.0, lease_ttl: float = LEASE_TTL,
                 hold_for: float = 0.0):
        """``start``: where a new group begins ("0": everything still in the stream, "$": what comes
        next). ``pause``: seconds to wait after a batch, so that a busy stream is read in larger ones.
        ``hold_for``: seconds the lease is renewed while one batch's handler runs (webhook retries
        take long); past that, or by default, a handler that does not return loses the lease within
        ``lease_ttl`` and another node takes the batch over (a frozen node's)."""
        self.redis = redis
        self.group = group
        self.consumer = consumer
        self.handler = handler
        self.start = start
        self.count = count
        self.pause = pause
        self.lease_ttl = lease_ttl
        self.hold_for = hold_for
        self._lease_key = EVENTS_LEASE_KEY.format(group=group)
        self._lease = redis.register_script(_LEASE)
        self._release = redis.register_script(_RELEASE)
        self._renewed = 0.0  # monotonic time of the last renewal; 0: not holding the lease
        self._own_pending = True  # read our own unacknowledged entries before new ones
        self.handled = 0
        self.skipped = 0  # entries that are not events of the catalogue, or were trimmed before read

    @property
    def reading(self) -> bool:
        return bool(self._renewed) and time.monotonic() - self._renewed < self.lease_ttl

    def status(self) -> dict[str, object]:
        return {"reading": self.reading, "handled": self.handled, "skipped": self.skipped}

    async def run(self, stop: asyncio.Event) -> None:
        backoff = 0.0
        try:
            while not stop.is_set():
                try:
                    if not await self._hold_lease():
                        await _wait(stop, self.lease_ttl / 3)
                        continue
                    n = await self.read_once()
                    backoff = 0.0
                    if n and self.pause:
                        await _wait(stop, self.pause)
                except REDIS_DOWN as exc:
                    if not backoff:
                        log.warning("%s: Redis unreachable (%s)", self.group, exc)
                    self._renewed = 0.0
                    backoff = min(max(backoff * 2, 0.1), 2.0)
                    await _wait(stop, backoff)
                except Exception:  # noqa: BLE001 - the handler failed: its entries come again
                    log.exception("%s: handler failed; the batch is read again", self.group)
                    self._own_pending = True
                    await _wait(stop, 1.0)
        finally:
            if self._renewed:
                with contextlib.suppress(*REDIS_DOWN):
                    await self._release(keys=[self._lease_key], args=[self.consumer])
                self._renewed = 0.0

    async def drain(self, timeout: float = 5.0) -> None:
        """Handle everything up to the stream's end now (at shutdown: the last events of this node
        reach the subscriber before it goes), if this node holds the lease or can take it."""
        deadline = time.monotonic() + timeout
        with contextlib.suppress(*REDIS_DOWN):
            if await self._hold_lease():
                while time.monotonic() < deadline:
                    was_pending = self._own_pending  # an empty read of our pending entries is not the end
                    if not await self.read_once(block=False) and not was_pending:
                        break

    async def read_once(self, block: bool = True) -> int:
        """Read one batch (our pending entries first), hand it over, acknowledge it."""
        pending = self._own_pending
        try:
            resp: Any = await self.redis.xreadgroup(self.group, self.consumer, {EVENTS: "0" if pending else ">"},
                                                    count=self.count,
                                                    block=None if pending or not block else int(BLOCK * 1000))
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self._create_group()  # the stream or group is gone (Redis lost its data)
            return 0
        entries: list[tuple[bytes, dict[bytes, bytes] | None]] = resp[0][1] if resp else []
        if pending and not entries:
            self._own_pending = False
            return 0
        events: list[ev.Event] = []
        for entry_id, fields in entries:
            raw = (fields or {}).get(FIELD.encode())
            got, problems = ev.decode_all(raw) if raw is not None else ([], ["trimmed before it was read"])
            events += got
            for problem in problems:
                self.skipped += 1
                log.error("%s: entry %s: skipped: %s", self.group, entry_id.decode(), problem)
        if events and self.hold_for:
            keeper = asyncio.create_task(self._keep_lease())
            try:
                await self.handler(events)
            finally:
                keeper.cancel()
        elif events:
            await self.handler(events)
        if entries:
            await self.redis.xack(EVENTS, self.group, *[e[0] for e in entries])
        self.handled += len(events)
        return len(entries)

    async def _hold_lease(self) -> bool:
        now = time.monotonic()
        if self._renewed and now - self._renewed < self.lease_ttl / 3:
            return True
        state = await self._lease(keys=[self._lease_key], args=[self.consumer, int(self.lease_ttl * 1000)])
        if not state:
            self._renewed = 0.0
            return False
        if state == 2 or not self._renewed:
            await self._create_group()
            await self._adopt()
        self._renewed = now
        return True

    async def _keep_lease(self) -> None:
        """Renew the lease while the handler runs (``hold_for`` at most), so that no other node
        takes the group over meanwhile."""
        until = time.monotonic() + self.hold_for
        while time.monotonic() < until:
            await asyncio.sleep(self.lease_ttl / 3)
            with contextlib.suppress(*REDIS_DOWN):
                if await self._lease(keys=[self._lease_key], args=[self.consumer, int(self.lease_ttl * 1000)]):
                    self._renewed = time.monotonic()

    async def _create_group(self) -> None:
        try:
            await self.redis.xgroup_create(EVENTS, self.group, id=self.start, mkstream=True)
            log.info("%s: consumer group created at %s", self.group, self.start)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._own_pending = True

    async def _adopt(self) -> None:
        """Take over what earlier readers of the group read and did not acknowledge, in order, and
        forget readers that hold nothing any more."""
        cursor: Any = "0-0"
        while True:
            # Whole entries: redis-py drops the cursor of a JUSTID reply.
            cursor, *_ = await self.redis.xautoclaim(EVENTS, self.group, self.consumer, 0, cursor, count=self.count)
            if cursor in (b"0-0", "0-0"):
                break
        for c in await self.redis.xinfo_consumers(EVENTS, self.group):
            name = c["name"].decode() if isinstance(c["name"], bytes) else c["name"]
            if name != self.consumer and not c["pending"]:
                await self.redis.xgroup_delconsumer(EVENTS, self.group, name)
        self._own_pending = True


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
