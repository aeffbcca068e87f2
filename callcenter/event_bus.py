"""A node's side of the event bus (docs/events.md): the notifier, whose sinks are the stream writer
and the node's call sessions (mirrored through the writer), and the interaction log as the stream's
subscriber ``interactions``.

Events reach PostgreSQL only through the stream, so the record can be rebuilt from it; the log
reads in batches (a pause after each), so a busy node writes one transaction per ``pause``.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import asyncpg
import redis.asyncio as aioredis

from bus import events as ev
from bus.consumer import StreamConsumer
from bus.keys import EVENTS
from bus.notifier import Notifier
from bus.stream import FIELD, StreamWriter
from callcenter import interactions
from callcenter.interactions import InteractionLog
from callcenter.sessions import SessionTracker
from callcenter.tasks import Loops


class EventBus:
    def __init__(self, node: str, redis: aioredis.Redis, pool: asyncpg.Pool | None, spool_dir: Path,
                 pause: float = 0.2):
        self.notifier = Notifier(node)
        self.writer = StreamWriter(redis, spool_dir)
        self.notifier.sinks.append(self.writer.add)
        self.sessions = SessionTracker(self.notifier)  # after the writer: CALLSTATE follows its cause
        self.notifier.sinks.append(self.sessions.on_event)
        self.writer.piggyback.append(self.sessions)
        self.log = InteractionLog(pool, spool_dir)
        self.record = StreamConsumer(redis, interactions.GROUP, node, self.log.write, pause=pause)

    def start(self, loops: Loops) -> None:
        loops.start("events.writer", self.writer.run)
        loops.start("events.interactions", self.record.run)
        loops.start("interactions.spool", self.log.run)

    def status(self) -> dict[str, object]:
        """For /healthz: not ok while this node cannot put its events on the stream."""
        writer = self.writer.status()
        return {"ok": writer["ok"], "stream": writer,
                "interactions": {**self.record.status(), "written": self.log.written_events,
                                 "refused": self.log.rejected, "database_away": self.log.failing}}

    async def close(self) -> None:
        """After the loops stopped and the last event was emitted: send what is left (or spool it)
        and let the interaction log take this node's last events before it goes."""
        await self.writer.close()
        await self.record.drain()


async def rebuild(redis: aioredis.Redis, log: InteractionLog, chunk: int = 1000) -> tuple[int, int]:
    """Write the interaction record from what is still in the stream, oldest first (``callcenter
    records rebuild``): events the database holds already are skipped by their id, so this fills a
    database emptied of records, or the gaps of one. Returns (events read, events not readable)."""
    start, read, bad = "-", 0, 0
    while True:
        entries = cast(list[tuple[bytes, dict[bytes, bytes]]], await redis.xrange(EVENTS, min=start, count=chunk))
        if not entries:
            return read, bad
        batch: list[ev.Event] = []
        for _entry_id, fields in entries:
            got, problems = ev.decode_all(fields.get(FIELD.encode(), b"null"))
            batch += got
            bad += len(problems)
        await log.write(batch)
        read += len(batch)
        start = "(" + entries[-1][0].decode()
