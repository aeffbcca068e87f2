"""What benchmarks that run the whole platform share: an empty database per run, and waiting for
the media workers."""

from __future__ import annotations

import json
import urllib.request

import asyncpg

from callcenter.embedded import EmbeddedPostgres


def workers_up(http_port: int, api_key: str) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{http_port}/healthz",
                                 headers={"Authorization": f"Bearer {api_key}"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return int(json.loads(r.read())["workers"]["up"])
    except (OSError, ValueError, KeyError):
        return 0


async def fresh_database(pg: EmbeddedPostgres, admin: str, name: str = "bench") -> str:
    """An empty database each round: records piling up over runs made later rounds slower."""
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
    return await pg.ensure_database(admin, name)
