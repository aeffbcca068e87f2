"""The interaction log: one contact record per call and its append-only events in PostgreSQL,
derived from the event stream alone. It is the stream's subscriber ``interactions``
(bus/consumer.py), so it runs off the call path on whichever node reads for the group.

``write`` gets a batch of events in stream order and returns once it is durable: written in one
transaction, or, while the database is unreachable, spooled to ``var/spool/interactions-*.jsonl``
(the events themselves, one JSON per line), which is written before anything newer once the
database answers. An event the database refuses is set aside with the reason in
``rejected-*.jsonl`` (``callcenter spool replay``) and the rest of its batch is written. Events
come at least once; a repeat is recognised by its id (unique in both event tables) and skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from bus import events as ev
from callcenter import records
from callcenter.records import ts

log = logging.getLogger("callcenter.interactions")

COLUMNS = (
    "direction", "caller_number", "caller_name", "caller_uri", "dialed_number", "dialed_uri",
    "sip_call_id", "customer_id", "route", "worker_id", "media_call_id", "arrived_at", "answered_at",
    "queued_at", "queue_id", "agent_offered_at", "agent_answered_at", "agent_id", "ended_at",
    "disconnect_reason", "disconnect_side", "sip_code", "digits", "node", "hold_count", "hold_seconds",
    "hold_longest", "call_data", "transfer_count", "transfers", "conference_seconds", "ivr_flow", "ivr_exit",
    "ivr_exit_node",
)
TIME_COLUMNS = {c for c in COLUMNS if c.endswith("_at")}
# The database is away (retry later) as opposed to refusing the data (REFUSED).
UNREACHABLE = (TimeoutError, OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
               asyncpg.CannotConnectNowError)
# The data cannot be stored as it is: refused by PostgreSQL, or by asyncpg encoding it (text that
# is not UTF-8, a value of the wrong type). Only the items at fault are set aside.
REFUSED = (asyncpg.PostgresError, asyncpg.exceptions.DataError, ValueError, TypeError)

_INSERT = (
    f"INSERT INTO interactions (id, {', '.join(COLUMNS)}) VALUES ($1, "
    + ", ".join(f"${i + 2}" for i in range(len(COLUMNS)))
    + ") ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{c} = COALESCE(EXCLUDED.{c}, interactions.{c})" for c in COLUMNS)
)
_UPDATE = (
    "UPDATE interactions SET "
    + ", ".join(f"{c} = COALESCE(${i + 2}, {c})" for i, c in enumerate(COLUMNS))
    + " WHERE id = $1"
)


GROUP = "interactions"  # its consumer group on the event stream

_EVENT_INSERT = (
    "INSERT INTO interaction_events (interaction_id, at, event, queue_id, agent_id, data, event_id) "
    "SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::bigint[], $5::bigint[], $6::jsonb[], "
    "$7::text[]) ON CONFLICT (event_id) DO NOTHING"
)
_SURVEY_INSERT = (
    "INSERT INTO survey_answers (event_id, interaction_id, at, survey, question, answer, how, customer_id, agent_id, "
    "queue) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (event_id) DO NOTHING"
)
_AGENT_INSERT = (
    "INSERT INTO agent_events (agent_id, at, event, queue_id, data, event_id) "
    "SELECT * FROM unnest($1::bigint[], $2::timestamptz[], $3::text[], $4::bigint[], $5::jsonb[], $6::text[]) "
    "ON CONFLICT (event_id) DO NOTHING"
)


@dataclass
class _Pending:
    new: bool
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Batch:
    """What a batch of events writes: record rows (merged per interaction) and the two event logs."""

    rows: dict[uuid.UUID, _Pending] = field(default_factory=dict)
    calls: list[tuple[Any, ...]] = field(default_factory=list)  # interaction_events, queue by name
    agents: list[tuple[Any, ...]] = field(default_factory=list)  # agent_events, queue by name
    surveys: list[tuple[Any, ...]] = field(default_factory=list)  # survey_answers

    def add(self, e: ev.Event) -> None:
        if isinstance(e, ev.AgentEvent):
            self.agents.append((e.agent_id, ts(e.at), e.NAME, getattr(e, "queue", None) or None,
                                json.dumps(records.data(e), default=str), e.id))
            return
        if not isinstance(e, ev.CallEvent):
            return
        iid = uuid.UUID(e.interaction)
        if isinstance(e, ev.CallArrived):
            self.rows[iid] = _Pending(new=True, fields=records.opened(e))
        elif changed := records.changes(e):
            pending = self.rows.setdefault(iid, _Pending(new=False))
            pending.fields.update((k, v) for k, v in changed.items() if v is not None)
        if isinstance(e, ev.SurveyAnswer):
            self.surveys.append((e.id, iid, ts(e.at), e.survey, e.question, e.answer, e.how, e.customer_id,
                                 e.agent_id, e.queue or None))
        if isinstance(e, ev.CallStateChanged):
            return  # its totals are on the record; the change itself follows from the event before it
        queue, agent_id = (e.queue, e.agent_id) if isinstance(e, ev.QueueEvent) else (None, None)
        self.calls.append((iid, ts(e.at), e.NAME, queue, agent_id, json.dumps(records.data(e), default=str), e.id))

    def queues(self) -> set[str]:
        names = {r[3] for r in self.calls if r[3]} | {r[3] for r in self.agents if r[3]}
        return names | {q for p in self.rows.values() if (q := p.fields.get("queue_id"))}


class InteractionLog:
    def __init__(self, pool: asyncpg.Pool | None, spool_dir: Path, retry: float = 1.0):
        self.pool = pool
        self.spool_dir = spool_dir
        self.retry = retry
        self._lock = asyncio.Lock()  # one writer at a time: the spool is written before newer events
        self._down_until = 0.0  # while the database is known to be away, batches go straight to the spool
        self._backoff = retry
        self.written_events = 0
        self.failures = 0
        self.rejected = 0  # events the database refused, set aside in rejected-*.jsonl
        self._queue_ids: dict[str, int] = {}  # queue name -> id: events name their queue, rows hold its id

    # ------------------------------------------------------------------ the subscriber
    async def write(self, events: list[ev.Event]) -> None:
        """Make a batch durable: in PostgreSQL, or spooled to disk. Raises only if neither works."""
        async with self._lock:
            if time.monotonic() >= self._down_until:
                try:
                    await self._replay_spool()
                    await self._store(events)
                    self._backoff = self.retry
                    return
                except UNREACHABLE as exc:
                    self.failures += 1
                    log.warning("interaction log: database unreachable (%s); spooling", exc)
                    self._down_until = time.monotonic() + self._backoff
                    self._backoff = min(self._backoff * 2, 10.0)
            self._write_spool("interactions", [e.encode() for e in events])

    async def run(self, stop: asyncio.Event) -> None:
        """Write the spool once the database is back, even if no new event comes."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.retry)
            if self._spool_files("interactions") and time.monotonic() >= self._down_until:
                await self.write([])

    @property
    def failing(self) -> bool:
        """The database is known to be away: batches are being spooled."""
        return time.monotonic() < self._down_until

    # ------------------------------------------------------------------ writing
    async def _store(self, events: list[ev.Event]) -> None:
        """Write the events in one transaction; if the database refuses it, event by event."""
        if not events:
            return
        batch = _Batch()
        for e in events:
            batch.add(e)
        try:
            await self._write(batch)
        except REFUSED as exc:
            self.failures += 1
            log.error("interaction log: batch refused (%s); writing it event by event", exc)
            await self._isolate(events)

    async def _write(self, b: _Batch) -> None:
        if self.pool is None:
            raise OSError("no database pool")
        async with self.pool.acquire() as conn, conn.transaction():
            # Queues are named in events until written: a queue created a moment ago resolves too.
            if missing := b.queues() - self._queue_ids.keys():
                found = await conn.fetch("SELECT name, id FROM queues WHERE name = ANY($1)", sorted(missing))
                self._queue_ids.update((r["name"], r["id"]) for r in found)
            inserts = [self._params(i, p.fields) for i, p in b.rows.items() if p.new]
            updates = [self._params(i, p.fields) for i, p in b.rows.items() if not p.new]
            if inserts:
                await conn.executemany(_INSERT, inserts)
            if updates:
                await conn.executemany(_UPDATE, updates)
            written = 0
            if b.calls:
                cols = list(zip(*[(*r[:3], self._queue_ids.get(r[3]) if r[3] else None, *r[4:]) for r in b.calls],
                                strict=True))
                written += int((await conn.execute(_EVENT_INSERT, *cols)).split()[-1])
            if b.agents:
                cols = list(zip(*[(*r[:3], self._queue_ids.get(r[3]) if r[3] else None, *r[4:]) for r in b.agents],
                                strict=True))
                written += int((await conn.execute(_AGENT_INSERT, *cols)).split()[-1])
            if b.surveys:  # after the records they belong to
                await conn.executemany(_SURVEY_INSERT, b.surveys)
        self.written_events += written

    async def _isolate(self, events: list[ev.Event]) -> None:
        """Write the events one at a time; set aside each one that is refused, with the reason."""
        rejected: list[str] = []
        try:
            for n, e in enumerate(events):
                batch = _Batch()
                batch.add(e)
                try:
                    await self._write(batch)
                except REFUSED as exc:
                    rejected.append(json.dumps({"event": e.encode(), "reason": str(exc)[:500]}))
                except UNREACHABLE:
                    del events[:n]  # what is left is the caller's to spool
                    raise
        finally:
            if rejected:
                path = self._write_spool("rejected", rejected)
                self.rejected += len(rejected)
                log.error("interaction log: %d events refused by the database, kept with the reason in %s",
                          len(rejected), path)

    def _params(self, iid: uuid.UUID, fields: dict[str, Any]) -> tuple[Any, ...]:
        queue = fields.get("queue_id")
        return (iid, *(self._queue_ids.get(queue) if c == "queue_id" and queue else fields.get(c) for c in COLUMNS))

    # ------------------------------------------------------------------ spool
    def _spool_files(self, kind: str) -> list[Path]:
        return sorted(self.spool_dir.glob(f"{kind}-*.jsonl")) if self.spool_dir.exists() else []

    def _write_spool(self, kind: str, lines: list[str]) -> Path:
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        path = self.spool_dir / f"{kind}-{time.time_ns()}.jsonl"
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            f.writelines(line + "\n" for line in lines)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)  # whole or not at all
        return path

    async def _replay_spool(self) -> None:
        for path in self._spool_files("interactions"):
            events = self._read_spool(path, lambda line: line)
            await self._store(events)
            path.unlink()
            log.info("interaction log: wrote %d spooled events from %s", len(events), path.name)

    def _read_spool(self, path: Path, event_of: Any) -> list[ev.Event]:
        events: list[ev.Event] = []
        unreadable: list[str] = []
        for line in path.read_text().splitlines():
            try:
                events.append(ev.decode(event_of(line)))
            except (ev.EventError, ValueError, KeyError, TypeError) as exc:
                unreadable.append(json.dumps({"line": line, "reason": f"not an event: {exc}"[:500]}))
        if unreadable:
            self._write_spool("rejected", unreadable)
            self.rejected += len(unreadable)
        return events

    async def replay_rejected(self) -> tuple[int, int]:
        """Try once more the events the database refused (after a fix); those still refused are
        kept in a new file. Returns (events written, events still refused)."""
        total, before = 0, self.rejected
        for path in self._spool_files("rejected"):
            events = self._read_spool(path, lambda line: json.loads(line)["event"])
            total += len(path.read_text().splitlines())
            await self._store(events)
            path.unlink()
        still = self.rejected - before
        return total - still, still
