"""Interactions left open by a control-plane node that died (killed, crashed, its machine lost):
any live node — the restarted one included — closes them with the cause ``control_plane_lost``,
ended when the dead node was last alive (its last heartbeat, or the call's last event if later),
and a HANGUP event, so that no record stays open forever and reports keep true durations."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import UTC, datetime

import asyncpg
import redis.asyncio as aioredis

from bus import events as ev
from callcenter import nodes, records
from callcenter.http_guard import UNAVAILABLE
from callcenter.nodes import NodeHeartbeat

log = logging.getLogger("callcenter.orphans")

CAUSE = "control_plane_lost"


class OrphanCloser:
    def __init__(self, pool: asyncpg.Pool, redis: aioredis.Redis, heartbeat: NodeHeartbeat, interval: float = 5.0):
        self.pool = pool
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
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT i.id, greatest(i.arrived_at, (SELECT max(e.at) FROM interaction_events e "
                "WHERE e.interaction_id = i.id), $2::timestamptz) AS ended FROM interactions i "
                "WHERE i.node = $1 AND i.ended_at IS NULL FOR UPDATE OF i SKIP LOCKED", node, last_seen)
            if not rows:
                return 0
            await conn.executemany(
                "UPDATE interactions SET ended_at = $2, disconnect_reason = $3, disconnect_side = 'system' "
                "WHERE id = $1 AND ended_at IS NULL", [(r["id"], r["ended"], CAUSE) for r in rows])
            ends = [ev.Hangup(interaction=str(r["id"]), at=r["ended"].timestamp(), cause=CAUSE, side="lost",
                                 node=node) for r in rows]
            await conn.copy_records_to_table(
                "interaction_events", columns=("interaction_id", "at", "event", "data"),
                records=[(r["id"], r["ended"], e.NAME, json.dumps(records.data(e)))
                         for r, e in zip(rows, ends, strict=True)])
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
