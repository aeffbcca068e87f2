"""Schema and migrations against the real PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import asyncpg
import pytest

from callcenter.db import migrate
from tests.conftest import ROOT


async def test_migrations_are_idempotent(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        assert await migrate(conn) == []
        names = await conn.fetch("SELECT name FROM schema_migrations")
    files = sorted(f.stem for f in (ROOT / "callcenter" / "migrations").glob("*.sql"))
    assert len(files) >= 4 and sorted(r["name"] for r in names) == files  # every file applied, once


async def test_interaction_events_are_append_only(pool: asyncpg.Pool) -> None:
    iid = uuid.uuid4()
    now = datetime.now(UTC)
    await pool.execute("INSERT INTO interactions (id, arrived_at) VALUES ($1, $2)", iid, now)
    await pool.execute("INSERT INTO interaction_events (interaction_id, at, event) VALUES ($1, $2, 'DID')", iid, now)
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await pool.execute("UPDATE interaction_events SET event = 'X' WHERE interaction_id = $1", iid)


async def test_phone_numbers_must_be_e164(pool: asyncpg.Pool) -> None:
    cid = await pool.fetchval("INSERT INTO customers (kind, last_name, display_name) VALUES ('individual', 'Doe', "
                              "'Jane Doe') RETURNING id")
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute("INSERT INTO customer_phones (customer_id, e164) VALUES ($1, '555-1234')", cid)
    await pool.execute("INSERT INTO customer_phones (customer_id, e164) VALUES ($1, '+15555551234')", cid)
