"""Database access: the asyncpg pool and migrations.

Migrations are plain SQL files (callcenter/migrations/NNNN_name.sql) applied in order by asyncpg, each
in its own transaction, recorded in ``schema_migrations`` with a checksum. asyncpg is the only
driver here; Alembic or yoyo would bring SQLAlchemy/psycopg just to run SQL we write by hand anyway.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import asyncpg

log = logging.getLogger("callcenter.db")

MIGRATIONS = Path(__file__).parent / "migrations"
LOCK_ID = 0x43414C4C  # advisory lock: two processes never migrate at once


class MigrationError(Exception):
    pass


def migration_files() -> list[tuple[str, str]]:
    return [(p.stem, p.read_text()) for p in sorted(MIGRATIONS.glob("[0-9][0-9][0-9][0-9]_*.sql"))]


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply pending migrations; returns the names applied. Refuses an edited, applied file."""
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " name text PRIMARY KEY, checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
    )
    applied: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", LOCK_ID)
    try:
        done = {r["name"]: r["checksum"] for r in await conn.fetch("SELECT name, checksum FROM schema_migrations")}
        for name, sql in migration_files():
            digest = hashlib.sha256(sql.encode()).hexdigest()
            if name in done:
                if done[name] != digest:
                    raise MigrationError(f"migration {name} was changed after it was applied")
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (name, checksum) VALUES ($1, $2)", name, digest)
            log.info("applied migration %s", name)
            applied.append(name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_ID)
    return applied


async def create_pool(dsn: str, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, command_timeout=30)
    assert pool is not None
    return pool
