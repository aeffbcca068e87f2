"""Interactions left open by a control-plane node that died (killed, crashed, its machine lost):
any live node — the restarted one included — closes them with the cause ``control_plane_lost``,
ended when the dead node was last alive (its last heartbeat, or the call's last event if later),
and a HANGUP event, so that no record stays open forever and reports keep true durations.

The HANGUP goes out on the event stream like any other (subscribers learn that the call ended),
and the interaction log closes the record from it. A claim in Redis makes one node, once, close
each interaction: the record stays open until the log has written the event."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

import asyncpg
import redis.asyncio as aioredis

from bus import events as ev
from bus.keys import ORPHAN_CLAIM_KEY
from bus.notifier import Notifier
from callcenter import nodes
from callcenter.http_guard import UNAVAILABLE
from callcenter.nodes import NodeHeartbeat

log = logging.getLogger("callcenter.orphans")

CAUSE = "control_plane_lost"
CLAIM_TTL = 3600  # seconds: far longer than the log takes to write the HANGUP


class OrphanCloser:
    def __init__(self, pool: asyncpg.Pool, redis: aioredis.Redis, heartbeat: NodeHeartbeat, notifier: Notifier,
                 interval: float = 5.0):
        self.pool = pool
        self.notifier = notifier
        self.redis = redis
        self.heartbeat = heartbeat
        self.interval = interval
        self.closed = 0

    async def run_once(self) -> int:
        if not self.heartbeat.judging:
            return 0  # our own view of Redis is too fresh to call anyone dead
        owners = [r["node"] for r in await self.pool.fetch(
            "SELECT DISTINCT node FROM interactions WHERE ended_at IS NULL AND node IS NOT NULL AND node <> $1",
            self.heartbeat.node)]
        done = 0
        for node in owners:
            if await nodes.alive(self.redis, node):
                continue
            seen = await nodes.last_seen(self.redis, node)
            done += await self._close(node, datetime.fromtimestamp(seen, UTC) if seen else None)
        self.closed += done
        return done

    async def _close(self, node: str, last_seen: datetime | None) -> int:
        rows = await self.pool.fetch(
            "SELECT i.id, greatest(i.arrived_at, (SELECT max(e.at) FROM interaction_events e "
            "WHERE e.interaction_id = i.id), $2::timestamptz) AS ended FROM interactions i "
            "WHERE i.node = $1 AND i.ended_at IS NULL", node, last_seen)
        if not rows:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        for r in rows:
            pipe.set(ORPHAN_CLAIM_KEY.format(interaction=r["id"]), self.heartbeat.node, nx=True, ex=CLAIM_TTL)
        claimed = [r for r, mine in zip(rows, await pipe.execute(), strict=True) if mine]
        for r in claimed:
            # Emitted in the dead node's name: it is that node's call that ended.
            self.notifier.emit(ev.Hangup(interaction=str(r["id"]), at=r["ended"].timestamp(), cause=CAUSE,
                                         side="lost", node=node))
        if not claimed:
            return 0
        rows = claimed
        log.warning("closed %d interactions left open by node %s (dead since %s)", len(rows), node,
                    last_seen.isoformat() if last_seen else "an unknown time")
        return len(rows)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.run_once()
            except UNAVAILABLE as exc:
                log.warning("open interactions of dead nodes not checked: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)
