"""Webhook delivery (callcenter/webhooks.py) from the real event stream to a real HTTP receiver:
every event once, in order per call, signed; filters; retries with backoff; dead letters and their
redelivery; a subscription whose key is revoked gets nothing."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest_asyncio
import redis.asyncio as aioredis
from aiohttp import web

from bus import events as ev
from bus.stream import StreamWriter
from callcenter import webhooks
from callcenter.auth import create_key
from callcenter.embedded import free_port
from tests.conftest import Stores, fresh_redis

DB = 0
CALL_A = "00000000-0000-0000-0000-00000000000a"
CALL_B = "00000000-0000-0000-0000-00000000000b"


@dataclass
class Receiver:
    """An HTTP receiver that checks signatures and can be told to fail."""

    secret: str = ""
    got: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0
    fail_next: int = 0  # answer this many requests with ``fail_status``
    fail_status: int = 500
    bad_signatures: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        body = await request.read()
        t, v1 = (part.split("=", 1)[1] for part in request.headers["X-Callcenter-Signature"].split(","))
        expected = hmac.new(self.secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, v1):
            self.bad_signatures += 1
            return web.Response(status=401)
        if self.fail_next:
            self.fail_next -= 1
            return web.Response(status=self.fail_status)
        self.got += json.loads(body)["events"]
        return web.Response(status=204)

    def of(self, call: str) -> list[int]:
        return [e["digit"] for e in self.got if e.get("interaction") == call]


@pytest_asyncio.fixture
async def redis(stores: Stores) -> AsyncIterator[aioredis.Redis]:
    async with fresh_redis(stores, DB) as r:
        yield r


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/hook", rec.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield rec, f"http://127.0.0.1:{port}/hook"
    finally:
        await runner.cleanup()


async def _subscribe(pool: asyncpg.Pool, redis: aioredis.Redis, rec: Receiver, url: str,
                     events: list[str] | None = None, scopes: tuple[str, ...] = ("read",)) -> tuple[int, str]:
    async with pool.acquire() as conn:
        token = await create_key(conn, "crm", scopes)
    key_id = token.split("_")[1]
    rec.secret = "s3cret-" + key_id
    sid = await pool.fetchval("INSERT INTO webhooks (name, url, secret, events, api_key_id) VALUES "
                              "('crm', $1, $2, $3, $4) RETURNING id", url, rec.secret, events or [], key_id)
    await webhooks.create_group(redis, sid)
    return int(sid), key_id


@dataclass
class Running:
    sender: webhooks.WebhookSender
    writer: StreamWriter
    stop: asyncio.Event
    tasks: list[asyncio.Task[None]]

    def emit(self, *events: ev.Event) -> None:
        for e in events:
            self.writer.add(e)


@pytest_asyncio.fixture
async def running(redis: aioredis.Redis, pool: asyncpg.Pool, tmp_path: Path) -> AsyncIterator[Running]:
    await pool.execute("DELETE FROM webhooks")
    sender = webhooks.WebhookSender(redis, pool, "node-t", attempts=3, backoff=0.1, timeout=2.0, refresh=0.2)
    writer = StreamWriter(redis, tmp_path)
    stop = asyncio.Event()
    r = Running(sender, writer, stop, [])
    try:
        yield r
    finally:
        stop.set()
        await asyncio.wait(r.tasks, timeout=10)
        await writer.close()
        await pool.execute("DELETE FROM webhooks")


def _start(r: Running) -> None:
    r.tasks = [asyncio.create_task(r.sender.run(r.stop)), asyncio.create_task(r.writer.run(r.stop))]


async def _until(cond: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def _digits(call: str, n: int, start: int = 0) -> list[ev.Dtmf]:
    return [ev.Dtmf(interaction=call, digit=str(i)) for i in range(start, start + n)]


async def test_every_event_once_in_order_per_call_and_signed(running: Running, redis: aioredis.Redis,
                                                              pool: asyncpg.Pool,
                                                              receiver: tuple[Receiver, str]) -> None:
    rec, url = receiver
    await _subscribe(pool, redis, rec, url)
    running.emit(ev.Dtmf(interaction=CALL_A, digit="before"))  # before the sender runs: still delivered
    _start(running)
    a, b = _digits(CALL_A, 150), _digits(CALL_B, 150)
    for x, y in zip(a, b, strict=True):
        running.emit(x, y)
        if x.digit == "70":
            await asyncio.sleep(0.1)  # in several stream batches
    await _until(lambda: len(rec.got) == 301)
    assert rec.of(CALL_A) == ["before", *[str(i) for i in range(150)]]
    assert rec.of(CALL_B) == [str(i) for i in range(150)]
    assert len({e["id"] for e in rec.got}) == 301 and rec.bad_signatures == 0
    assert rec.requests < 20  # batched: up to 100 events of a call per request


async def test_a_filter_and_a_revoked_key(running: Running, redis: aioredis.Redis, pool: asyncpg.Pool,
                                          receiver: tuple[Receiver, str]) -> None:
    rec, url = receiver
    await _subscribe(pool, redis, rec, url, events=["HANGUP", "DIAL_*"])
    _start(running)
    running.emit(*_digits(CALL_A, 3), ev.DialRinging(interaction=CALL_A, call="o-1"),
                 ev.Hangup(interaction=CALL_A, cause="normal_clearing"))
    await _until(lambda: len(rec.got) == 2)
    assert [e["name"] for e in rec.got] == ["DIAL_RINGING", "HANGUP"]
    await pool.execute("UPDATE api_keys SET revoked_at = now() WHERE id = (SELECT api_key_id FROM webhooks)")
    await _until(lambda: running.sender.status()["subscriptions"] == 0)
    running.emit(ev.Hangup(interaction=CALL_B, cause="normal_clearing"))
    await asyncio.sleep(0.5)
    assert len(rec.got) == 2


async def test_failures_are_retried_with_backoff_then_dead_lettered_and_redelivered(
        running: Running, redis: aioredis.Redis, pool: asyncpg.Pool, receiver: tuple[Receiver, str]) -> None:
    rec, url = receiver
    sid, _key = await _subscribe(pool, redis, rec, url)
    _start(running)
    rec.fail_next = 2  # two 500s, then it takes them: nothing lost, nothing twice
    running.emit(*_digits(CALL_A, 5))
    await _until(lambda: len(rec.got) == 5)
    assert rec.of(CALL_A) == ["0", "1", "2", "3", "4"] and rec.requests == 3
    # A receiver that refuses (400): no retry, the events are dead letters, the next ones still go.
    rec.fail_next, rec.fail_status = 1, 400
    running.emit(*_digits(CALL_A, 2, start=5))
    await _until(lambda: running.sender.dead == 2)
    running.emit(*_digits(CALL_A, 1, start=7))
    await _until(lambda: len(rec.got) == 6)
    rows = await pool.fetch("SELECT event, attempts, error FROM webhook_dead_letters WHERE webhook_id = $1 "
                            "ORDER BY id", sid)
    assert [json.loads(r["event"])["digit"] for r in rows] == ["5", "6"] and rows[0]["error"] == "HTTP 400"
    # Down for longer than the retries last (500 each time): dead letters after `attempts` tries.
    rec.fail_next, rec.fail_status = 10, 500
    before = rec.requests
    running.emit(*_digits(CALL_B, 1))
    await _until(lambda: running.sender.dead == 3)
    assert rec.requests - before == 3
    rec.fail_next = 0
    await pool.execute("UPDATE webhook_dead_letters SET redeliver = true WHERE webhook_id = $1", sid)
    await _until(lambda: len(rec.got) == 9)
    assert rec.of(CALL_A)[-2:] == ["5", "6"] and rec.of(CALL_B) == ["0"]
    for _ in range(100):  # the sender deletes them once the receiver's answer is in
        if not await pool.fetchval("SELECT count(*) FROM webhook_dead_letters WHERE webhook_id = $1", sid):
            break
        await asyncio.sleep(0.05)
    assert await pool.fetchval("SELECT count(*) FROM webhook_dead_letters WHERE webhook_id = $1", sid) == 0


async def test_a_receiver_that_is_down_does_not_hold_up_a_stop_and_its_events_come_again(
        running: Running, redis: aioredis.Redis, pool: asyncpg.Pool, receiver: tuple[Receiver, str]) -> None:
    rec, url = receiver
    await _subscribe(pool, redis, rec, url)
    running.sender.backoff = 30.0  # retries far apart: the stop comes in the middle of them
    _start(running)
    rec.fail_next, rec.fail_status = 1000, 503
    running.emit(*_digits(CALL_A, 2))
    await _until(lambda: rec.requests >= 1)
    asked = time.monotonic()
    running.stop.set()
    await asyncio.wait({running.tasks[0]}, timeout=10)
    assert running.tasks[0].done() and time.monotonic() - asked < 3
    assert running.sender.dead == 0  # not dead letters: not delivered yet
    rec.fail_next = 0
    after = webhooks.WebhookSender(redis, pool, "node-t2", attempts=3, backoff=0.1, timeout=2.0, refresh=0.2)
    stop = asyncio.Event()
    task = asyncio.create_task(after.run(stop))
    try:
        await _until(lambda: len(rec.got) == 2, timeout=15)  # the next reader sends the batch again
        assert rec.of(CALL_A) == ["0", "1"]
    finally:
        stop.set()
        await task
