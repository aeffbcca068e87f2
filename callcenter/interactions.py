"""The interaction log: one contact record per call and its append-only events, written to
PostgreSQL in batches off the call path.

Calls only ever append to in-memory buffers (no awaits); a writer task flushes them. When the
database is unreachable the buffers are kept and retried; past a bound, or at shutdown, they are
spooled to var/spool/*.jsonl and replayed once the database answers again, so nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
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
    "disconnect_reason", "disconnect_side", "sip_code", "digits", "node",
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


@dataclass
class _Pending:
    new: bool
    fields: dict[str, Any] = field(default_factory=dict)


class InteractionLog:
    def __init__(self, pool: asyncpg.Pool | None, spool_dir: Path, flush_interval: float = 0.2,
                 max_buffer: int = 50_000):
        self.pool = pool
        self.spool_dir = spool_dir
        self.flush_interval = flush_interval
        self.max_buffer = max_buffer
        self._rows: dict[uuid.UUID, _Pending] = {}
        # (interaction, at, name, queue name, or its id in a spool written before names, agent, data)
        self._events: list[tuple[uuid.UUID, datetime, str, str | int | None, int | None, str]] = []
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self.written_events = 0
        self.failures = 0
        self.rejected = 0  # items the database refused, set aside in rejected-*.jsonl
        self._queue_ids: dict[str, int] = {}  # queue name -> id: events name their queue, rows hold its id

    # ------------------------------------------------------------------ appending (never blocks)
    def add(self, e: ev.Event) -> None:
        """Record a call or queue event: its row in the log, and what it changes on the record
        (callcenter/records.py). Other events are not the interaction log's."""
        if not isinstance(e, ev.CallEvent):
            return
        iid = uuid.UUID(e.interaction)
        if isinstance(e, ev.CallArrived):
            self._open(iid, **records.opened(e))
        elif fields := records.changes(e):
            self._update(iid, **fields)
        queue, agent_id = (e.queue, e.agent_id) if isinstance(e, ev.QueueEvent) else (None, None)
        self._event(iid, e.NAME, e.at, queue, agent_id, records.data(e))

    def _open(self, interaction_id: uuid.UUID, **fields: Any) -> None:
        fields.setdefault("direction", "inbound")
        self._rows[interaction_id] = _Pending(new=True, fields=fields)
        self._wake.set()

    def _update(self, interaction_id: uuid.UUID, **fields: Any) -> None:
        pending = self._rows.setdefault(interaction_id, _Pending(new=False))
        for k, v in fields.items():
            if k not in COLUMNS:
                raise KeyError(f"not an interaction column: {k}")
            if v is not None:
                pending.fields[k] = v
        self._wake.set()

    def _event(self, interaction_id: uuid.UUID, name: str, at: float, queue: str | None, agent_id: int | None,
               data: dict[str, Any]) -> None:
        self._events.append((interaction_id, ts(at), name, queue, agent_id, json.dumps(data, default=str)))
        self._wake.set()

    @property
    def backlog(self) -> int:
        return len(self._rows) + len(self._events)

    # ------------------------------------------------------------------ writing
    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        """Write what is appended: the first item after a quiet spell at once, then at most one
        batch per ``flush_interval`` (a transaction per record change cost PostgreSQL and the
        control plane a round trip per call event under load); after a failure, on a back-off."""
        backoff = self.flush_interval
        await self._replay_spool()
        while not self._stopping:
            await self._wake.wait()
            self._wake.clear()
            pause = self.flush_interval
            try:
                await self.flush()
                if backoff > self.flush_interval:
                    await self._replay_spool()
                backoff = self.flush_interval
            except UNREACHABLE as exc:
                self.failures += 1
                log.warning("interaction log: database unreachable (%s); %d items held", exc, self.backlog)
                if self.backlog > self.max_buffer:
                    self._spool()
                backoff = min(backoff * 2, 5.0)
            except REFUSED as exc:
                # The database answered but refused this batch: find the items at fault, write the
                # others, and keep those on disk with the reason (``callcenter spool replay``).
                self.failures += 1
                log.error("interaction log: batch refused (%s); writing it item by item", exc)
                rows, events = self._rows, self._events
                self._rows, self._events = {}, []
                try:
                    await self._isolate(rows, events)
                except UNREACHABLE:
                    self._rows, self._events = {**rows, **self._rows}, events + self._events
                    backoff = min(backoff * 2, 5.0)
            if self.backlog or backoff > self.flush_interval:
                # Items held, or a spool to replay after a failure: try again after the pause even
                # if nothing new is appended.
                pause = backoff
                self._wake.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), pause)

    async def flush(self) -> None:
        if not self._rows and not self._events:
            return
        if self.pool is None:
            raise OSError("no database pool")
        rows, events = self._rows, self._events
        self._rows, self._events = {}, []
        try:
            await self._write(rows, events)
        except BaseException:
            # Put everything back in front of what arrived meanwhile; nothing is dropped.
            for iid, p in self._rows.items():
                if iid in rows:
                    rows[iid].fields.update(p.fields)
                else:
                    rows[iid] = p
            self._rows = rows
            self._events = events + self._events
            raise
        self.written_events += len(events)

    async def _write(self, rows: dict[uuid.UUID, _Pending], events: list[tuple[Any, ...]]) -> None:
        assert self.pool is not None
        async with self.pool.acquire() as conn, conn.transaction():
            # Queues are named in events and rows until written: a queue created a moment ago resolves too.
            names = {e[3] for e in events if isinstance(e[3], str)}
            names |= {q for p in rows.values() if isinstance(q := p.fields.get("queue_id"), str)}
            if missing := names - self._queue_ids.keys():
                found = await conn.fetch("SELECT name, id FROM queues WHERE name = ANY($1)", sorted(missing))
                self._queue_ids.update((r["name"], r["id"]) for r in found)
            inserts = [self._params(i, p.fields) for i, p in rows.items() if p.new]
            updates = [self._params(i, p.fields) for i, p in rows.items() if not p.new]
            events = [(*e[:3], self._queue_id(e[3]), *e[4:]) for e in events]
            if inserts:
                await conn.executemany(_INSERT, inserts)
            if updates:
                await conn.executemany(_UPDATE, updates)
            if events:
                await conn.copy_records_to_table(
                    "interaction_events", records=events,
                    columns=("interaction_id", "at", "event", "queue_id", "agent_id", "data"),
                )

    async def _isolate(self, rows: dict[uuid.UUID, _Pending], events: list[tuple[Any, ...]]) -> None:
        """Write rows and events one at a time; set aside each one that is refused, with the reason.
        Items are removed from ``rows`` and ``events`` as they are dealt with, so that on an
        interruption (the database went away) the caller still holds exactly what is left."""
        rejected: list[dict[str, Any]] = []
        try:
            while rows:
                iid, pending = next(iter(rows.items()))
                try:
                    await self._write({iid: pending}, [])
                except REFUSED as exc:
                    rejected.append({**_row_item(iid, pending), "reason": str(exc)[:500]})
                del rows[iid]
            while events:
                try:
                    await self._write({}, events[:1])
                    self.written_events += 1
                except REFUSED as exc:
                    rejected.append({**_event_item(events[0]), "reason": str(exc)[:500]})
                events.pop(0)
        finally:
            if rejected:
                path = self._write_spool("rejected", rejected)
                self.rejected += len(rejected)
                log.error("interaction log: %d items refused by the database, kept with the reason in %s",
                          len(rejected), path)

    def _queue_id(self, queue: str | int | None) -> int | None:
        return self._queue_ids.get(queue) if isinstance(queue, str) else queue

    def _params(self, iid: uuid.UUID, fields: dict[str, Any]) -> tuple[Any, ...]:
        return (iid, *(self._queue_id(fields.get(c)) if c == "queue_id" else fields.get(c) for c in COLUMNS))

    # ------------------------------------------------------------------ spool
    def _spool(self, kind: str = "interactions") -> Path | None:
        if not self._rows and not self._events:
            return None
        items = [_row_item(iid, p) for iid, p in self._rows.items()] + [_event_item(e) for e in self._events]
        path = self._write_spool(kind, items)
        log.warning("interaction log: spooled %d rows and %d events to %s", len(self._rows),
                    len(self._events), path)
        self._rows, self._events = {}, []
        return path

    def _write_spool(self, kind: str, items: list[dict[str, Any]]) -> Path:
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        path = self.spool_dir / f"{kind}-{time.time_ns()}.jsonl"
        with open(path, "w") as f:
            for item in items:
                f.write(json.dumps(item, default=_enc) + "\n")
        return path

    async def _replay_spool(self) -> None:
        if self.pool is None or not self.spool_dir.exists():
            return
        for path in sorted(self.spool_dir.glob("interactions-*.jsonl")):
            await self._replay_file(path)
            log.info("interaction log: replayed %s", path.name)

    async def _replay_file(self, path: Path) -> None:
        rows, events = _read_spool(path)
        try:
            await self._write(rows, events)
            self.written_events += len(events)
        except REFUSED:
            try:
                await self._isolate(rows, events)
            except UNREACHABLE:  # keep exactly what was not written yet
                self._write_spool(path.name.split("-", 1)[0], [_row_item(i, p) for i, p in rows.items()]
                                  + [_event_item(e) for e in events])
                path.unlink()
                raise
        path.unlink()

    async def replay_rejected(self) -> tuple[int, int]:
        """Try once more the items the database refused (after a fix); those still refused are
        kept in a new file. Returns (items written, items still refused)."""
        files = sorted(self.spool_dir.glob("rejected-*.jsonl")) if self.spool_dir.exists() else []
        total, before = 0, self.rejected
        for path in files:
            total += len(path.read_text().splitlines())
            await self._replay_file(path)
        still = self.rejected - before
        return total - still, still

    async def close(self) -> None:
        """Flush everything; if the database is gone, spool to disk. Loses nothing."""
        self._stopping = True
        self._closing.set()
        self._wake.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        try:
            await asyncio.wait_for(self.flush(), 10)
        except Exception as exc:  # noqa: BLE001 - whatever failed, keep the data
            log.warning("interaction log: final flush failed (%s); spooling", exc)
            self._spool()


def _row_item(iid: uuid.UUID, p: _Pending) -> dict[str, Any]:
    return {"row": str(iid), "new": p.new, "fields": p.fields}


def _event_item(e: tuple[Any, ...]) -> dict[str, Any]:
    return {"event": [str(e[0]), e[1].isoformat(), *e[2:]]}


def _read_spool(path: Path) -> tuple[dict[uuid.UUID, _Pending], list[tuple[Any, ...]]]:
    rows: dict[uuid.UUID, _Pending] = {}
    events: list[tuple[Any, ...]] = []
    for line in path.read_text().splitlines():
        item = json.loads(line)
        if "row" in item:
            f = {k: (datetime.fromisoformat(v) if k in TIME_COLUMNS and v else v) for k, v in item["fields"].items()}
            rows[uuid.UUID(item["row"])] = _Pending(item["new"], f)
        else:
            iid, at, *rest = item["event"]
            events.append((uuid.UUID(iid), datetime.fromisoformat(at), *rest))
    return rows, events


def _enc(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.isoformat()
    return str(v)
