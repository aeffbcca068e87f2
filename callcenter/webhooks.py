"""Webhooks: the event stream delivered to outside systems (a CRM) by HTTP POST.

A subscription (table ``webhooks``) names a URL, the events it wants (names or ``fnmatch`` patterns,
none: all) and the API key that owns it: events are delivered only while that key is valid and has
the ``read`` scope. Each subscription is its own consumer group of the stream (``webhook:<id>``,
created where the stream ends when the subscription is made), read by one node at a time
(bus/consumer.py), so a receiver that is slow or down delays only itself.

Delivery, per subscription:

- the events of one call (or, for agent events, of one agent) are POSTed in the order they were
  emitted, up to ``BATCH`` per request; different calls are sent concurrently;
- the body is ``{"webhook": <id>, "events": [<event JSON of docs/events.md>, …]}``, signed with the
  subscription's secret: ``X-Callcenter-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of
  "<t>.<body>">``; ``X-Callcenter-Delivery`` names the attempt's request (the same across retries);
- any 2xx is delivered. A network error, a timeout, 408, 429 or a 5xx is tried again after 1, 2, 4,
  … seconds (``backoff``), ``attempts`` times in all; any other answer, or the last failure, puts the
  request's events in the dead-letter table ``webhook_dead_letters`` (with the error), and the call's
  next events follow. ``POST /api/webhooks/<id>/redeliver`` marks the dead letters for sending again:
  the node reading the subscription sends them, oldest first, within ``refresh`` seconds;
- the batch is acknowledged on the stream once every request in it is delivered or dead-lettered:
  a node that dies meanwhile leaves it to the next reader, which sends it again. Receivers recognise
  a repeat by the event's ``id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import functools
import hashlib
import hmac
import logging
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass

import aiohttp
import asyncpg
import redis.asyncio as aioredis

from bus import events as ev
from bus.consumer import StreamConsumer
from bus.keys import EVENTS
from callcenter.config import Config

log = logging.getLogger("callcenter.webhooks")

BATCH = 100  # events per request
RETRY_STATUS = frozenset({408, 429})
GROUP = "webhook:{id}"
STOP_WAIT = 1.0  # seconds a stopping consumer may take to finish a delivery in progress


@dataclass(frozen=True)
class Subscription:
    id: int
    url: str
    secret: str
    events: tuple[str, ...]  # names or patterns; empty: every event

    def wants(self, e: ev.Event) -> bool:
        return not self.events or any(fnmatch.fnmatchcase(e.NAME, p) for p in self.events)


def order_key(e: ev.Event) -> str:
    """What a subscriber's events are ordered by: the call, or the agent."""
    if isinstance(e, ev.CallEvent):
        return e.interaction
    if isinstance(e, ev.AgentEvent):
        return f"agent:{e.agent_id}"
    return ""


def sign(secret: str, at: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={at},v1={digest}"


_ACTIVE = (
    "SELECT w.id, w.url, w.secret, w.events FROM webhooks w JOIN api_keys k ON k.id = w.api_key_id "
    "WHERE w.active AND k.revoked_at IS NULL AND 'read' = ANY(k.scopes) ORDER BY w.id"
)


class WebhookSender:
    def __init__(self, redis: aioredis.Redis, pool: asyncpg.Pool, node: str, *, attempts: int = 6,
                 backoff: float = 1.0, timeout: float = 5.0, refresh: float = 5.0):
        self.redis = redis
        self.pool = pool
        self.node = node
        self.attempts = attempts
        self.backoff = backoff
        self.timeout = timeout
        self.refresh = refresh
        # A batch's retries may last this long: the reading node keeps its lease meanwhile.
        self.hold_for = sum(min(60.0, backoff * 2 ** n) for n in range(attempts)) + attempts * timeout + 10
        self._http: aiohttp.ClientSession | None = None
        self._running: dict[int, tuple[Subscription, StreamConsumer, asyncio.Event, asyncio.Task[None]]] = {}
        self.delivered = 0
        self.dead = 0

    def status(self) -> dict[str, object]:
        return {"subscriptions": len(self._running), "delivered": self.delivered, "dead_letters": self.dead,
                "reading": sorted(i for i, (_s, c, _e, _t) in self._running.items() if c.reading)}

    async def run(self, stop: asyncio.Event) -> None:
        """Keep one consumer per active subscription, following the table."""
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        try:
            while not stop.is_set():
                try:
                    rows = await self.pool.fetch(_ACTIVE)
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    log.warning("webhooks: subscriptions not read (%s); keeping the ones running", exc)
                else:
                    self._follow([Subscription(r["id"], r["url"], r["secret"], tuple(r["events"])) for r in rows])
                    await self._redeliver()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.refresh)
        finally:
            await asyncio.gather(*(self._stop(i) for i in list(self._running)))
            await self._http.close()

    def _follow(self, subs: list[Subscription]) -> None:
        wanted = {s.id: s for s in subs}
        for sid in [i for i, (s, *_rest) in self._running.items() if wanted.get(i) != s]:
            asyncio.create_task(self._stop(sid))
        for sid, sub in wanted.items():
            if sid in self._running:
                continue
            consumer = StreamConsumer(self.redis, GROUP.format(id=sid), self.node, functools.partial(self.deliver, sub),
                                      start="0", hold_for=self.hold_for)
            stopping = asyncio.Event()
            self._running[sid] = (sub, consumer, stopping, asyncio.create_task(consumer.run(stopping)))

    async def _stop(self, sid: int) -> None:
        """Stop a subscription's consumer. One waiting out a receiver that is down is not waited for:
        its batch stays unacknowledged, and the next reader sends it again (a receiver that is down
        must not hold up a node's shutdown)."""
        entry = self._running.pop(sid, None)
        if entry is not None:
            entry[2].set()
            _done, late = await asyncio.wait({entry[3]}, timeout=STOP_WAIT)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=1.0)

    async def _redeliver(self) -> None:
        """Send again the dead letters marked for it, of the subscriptions this node reads."""
        for sub, consumer, *_rest in list(self._running.values()):
            if not consumer.reading:
                continue
            try:
                rows = await self.pool.fetch("SELECT id, event FROM webhook_dead_letters WHERE webhook_id = $1 AND "
                                             "redeliver ORDER BY id LIMIT $2", sub.id, BATCH)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("webhook %d: dead letters not read (%s)", sub.id, exc)
                return
            if not rows:
                continue
            events = [ev.decode(r["event"]) for r in rows]
            error = await self._post(sub, events)
            ids = [r["id"] for r in rows]
            if error is None:
                await self.pool.execute("DELETE FROM webhook_dead_letters WHERE id = ANY($1)", ids)
                self.delivered += len(events)
            else:
                await self.pool.execute("UPDATE webhook_dead_letters SET redeliver = false, error = $2, "
                                        "attempts = attempts + $3, failed_at = now() WHERE id = ANY($1)",
                                        ids, error, self.attempts)

    async def deliver(self, sub: Subscription, events: list[ev.Event]) -> None:
        """Send one stream batch's events to one subscription: per call in order, calls at once."""
        running = self._running.get(sub.id)
        if running is None or running[0] != sub:
            return  # revoked or deleted a moment ago: its consumer is stopping, nothing more goes out
        by_key: defaultdict[str, list[ev.Event]] = defaultdict(list)
        for e in events:
            if sub.wants(e):
                by_key[order_key(e)].append(e)
        await asyncio.gather(*(self._in_order(sub, chunk) for chunk in by_key.values()))

    async def _in_order(self, sub: Subscription, events: list[ev.Event]) -> None:
        for n in range(0, len(events), BATCH):
            chunk = events[n:n + BATCH]
            error = await self._post(sub, chunk)
            if error is None:
                self.delivered += len(chunk)
            else:
                await self._dead_letter(sub, chunk, error)

    async def _post(self, sub: Subscription, events: list[ev.Event]) -> str | None:
        """POST with retries; None once delivered, else the last error."""
        assert self._http is not None
        body = f'{{"webhook":{sub.id},"events":[{",".join(e.encode() for e in events)}]}}'.encode()
        delivery = uuid.uuid4().hex
        error = ""
        for attempt in range(self.attempts):
            if attempt:
                await asyncio.sleep(min(60.0, self.backoff * 2 ** (attempt - 1)))
            headers = {"Content-Type": "application/json", "X-Callcenter-Delivery": delivery,
                       "X-Callcenter-Webhook": str(sub.id), "X-Callcenter-Signature": sign(sub.secret,
                                                                                           int(time.time()), body)}
            try:
                async with self._http.post(sub.url, data=body, headers=headers, allow_redirects=False) as resp:
                    if 200 <= resp.status < 300:
                        return None
                    error = f"HTTP {resp.status}"
                    if resp.status < 500 and resp.status not in RETRY_STATUS:
                        return error  # the receiver refuses these events: asking again changes nothing
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                error = f"{type(exc).__name__}: {exc}"[:300]
        return error

    async def _dead_letter(self, sub: Subscription, events: list[ev.Event], error: str) -> None:
        """Keep the events the receiver never took (PostgreSQL away: raise, and the batch comes again)."""
        await self.pool.executemany(
            "INSERT INTO webhook_dead_letters (webhook_id, event_id, event, attempts, error) "
            "VALUES ($1, $2, $3, $4, $5)",
            [(sub.id, e.id, e.encode(), self.attempts, error) for e in events])
        self.dead += len(events)
        log.warning("webhook %d: %d events dead-lettered: %s", sub.id, len(events), error)


async def create_group(redis: aioredis.Redis, sid: int) -> None:
    """A new subscription's group, where the stream ends now: it gets the events from now on."""
    with contextlib.suppress(aioredis.ResponseError):
        await redis.xgroup_create(EVENTS, GROUP.format(id=sid), id="$", mkstream=True)


async def drop_group(redis: aioredis.Redis, sid: int) -> None:
    with contextlib.suppress(aioredis.ResponseError):
        await redis.xgroup_destroy(EVENTS, GROUP.format(id=sid))


def webhook_sender(cfg: Config, redis: aioredis.Redis, pool: asyncpg.Pool, node: str) -> WebhookSender:
    w = cfg.webhooks
    return WebhookSender(redis, pool, node, attempts=w.attempts, backoff=w.backoff, timeout=w.timeout)
