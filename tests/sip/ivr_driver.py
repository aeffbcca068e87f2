"""Following a real call through the IVR: the platform's event stream (Redis ``cc:events``) is read
as the CTI's subscribers read it, so a test presses keys when the flow reaches a node, and then
checks the record in PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from bus import events as ev
from bus.keys import EVENTS
from bus.stream import FIELD


class Stream:
    """The events of one caller's newest call, from when the watch began."""

    def __init__(self, redis_url: str, caller: str):
        self.redis = aioredis.from_url(redis_url)
        self.caller = caller
        self.last = "$"
        self.interaction = ""
        self.seen: list[ev.Event] = []
        self._taken: dict[str, int] = {}  # entries into each node returned by ``node``

    async def __aenter__(self) -> Stream:
        newest = await self.redis.xrevrange(EVENTS, count=1)
        self.last = newest[0][0].decode() if newest else "0-0"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.redis.aclose()

    async def _read(self) -> None:
        resp = await self.redis.xread({EVENTS: self.last}, block=200, count=500)
        for _stream, entries in resp or []:
            for entry_id, fields in entries:
                self.last = entry_id.decode()
                events, _ = ev.decode_all(fields[FIELD.encode()])
                for e in events:
                    if isinstance(e, ev.CallArrived) and e.caller_number == self.caller:
                        self.interaction = e.interaction
                    if isinstance(e, ev.CallEvent) and e.interaction == self.interaction and self.interaction:
                        self.seen.append(e)

    async def node(self, node: str, timeout: float = 20) -> ev.IvrNode:
        """The call's next entry into ``node`` that an earlier call of this method has not returned."""
        start = self._taken.get(node, 0)
        self._taken[node] = start + 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [e for e in self.seen if isinstance(e, ev.IvrNode) and e.ivr_node == node]
            if len(found) > start:
                return found[start]
            await self._read()
        raise AssertionError(f"the call never reached node {node!r}; it saw {self.summary()}")

    def summary(self) -> list[str]:
        """What the call did, briefly (a failure's message)."""
        t0 = self.seen[0].at if self.seen else 0.0
        out = []
        for e in self.seen:
            detail = {k: v for k, v in e.body().items() if k in ("ivr_node", "prompt", "reason", "digits", "result",
                                                                  "attempts", "account", "value")}
            if e.NAME not in ("CALLSTATE", "DTMF"):
                out.append(f"{e.at - t0:.2f} {e.NAME} {detail}")
        return out


async def record(pool: asyncpg.Pool, interaction: str,
                 timeout: float = 20) -> tuple[asyncpg.Record, list[dict[str, Any]]]:
    """The closed record of ``interaction`` and its events (data merged in), once written."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = await pool.fetchrow("SELECT * FROM interactions WHERE id = $1 AND ended_at IS NOT NULL", interaction)
        if row is not None:
            rows = await pool.fetch("SELECT event, data FROM interaction_events WHERE interaction_id = $1 ORDER BY id",
                                    interaction)
            if any(r["event"] == "HANGUP" for r in rows):
                return row, [{"event": r["event"], **json.loads(r["data"])} for r in rows]
        await asyncio.sleep(0.2)
    raise AssertionError(f"interaction {interaction} was not closed in {timeout:.0f} s")


def prompts(events: list[dict[str, Any]]) -> list[str]:
    """The prompts the caller heard, in order (a value read out is one joined prompt: 'said')."""
    out = []
    for e in events:
        if e["event"] == "PROMPT":
            name = e["prompt"].removesuffix(".wav")
            out.append("said" if re.fullmatch(r"j?[0-9a-f]{20}", name) else name)
    return out


def nodes(events: list[dict[str, Any]]) -> list[str]:
    return [e["ivr_node"] for e in events if e["event"] == "IVR_NODE"]
