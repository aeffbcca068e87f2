"""What benchmarks that run the whole platform share: an empty database per run, and waiting for
the media workers."""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path

import asyncpg

from callcenter.auth import SCOPES, create_key
from callcenter.db import migrate
from callcenter.embedded import EmbeddedPostgres, EmbeddedRedis


def workers_up(http_port: int, api_key: str) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{http_port}/healthz",
                                 headers={"Authorization": f"Bearer {api_key}"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return int(json.loads(r.read())["workers"]["up"])
    except (OSError, ValueError, KeyError):
        return 0


async def stores(out: Path, name: str) -> tuple[EmbeddedPostgres, EmbeddedRedis, str, str, str]:
    """A benchmark's embedded stores under ``out``: an empty database with the schema and an API key
    with every scope, and an empty Redis. Returns (pg, redis, database url, redis url, key)."""
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out / "redis", ignore_errors=True)
    pg, rd = EmbeddedPostgres(out / "pgdata"), EmbeddedRedis(out / "redis")
    db_url = await fresh_database(pg, pg.start(), name)
    conn = await asyncpg.connect(db_url)
    try:
        await migrate(conn)
        key = await create_key(conn, "bench", SCOPES)
    finally:
        await conn.close()
    return pg, rd, db_url, rd.start(), key


async def fresh_database(pg: EmbeddedPostgres, admin: str, name: str = "bench") -> str:
    """An empty database each round: records piling up over runs made later rounds slower."""
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
    return await pg.ensure_database(admin, name)


def write_config(path: Path, *, http_port: int, sip_port: int, workers: int, worker_sip: int, rtp_port: int,
                 outbound_reserve: int, var_dir: Path, dialplan: Path | None = None, sections: str = "",
                 paths: str = "") -> None:
    """The platform's configuration for a benchmark: behind Kamailio, the load generator as the
    trusted trunk, quiet logs. ``sections``: more TOML sections; ``paths``: more lines of [paths]."""
    plan = f'dialplan = "{dialplan}"\n' if dialplan is not None else ""
    path.write_text(f"""
[http]
host = "127.0.0.1"
port = {http_port}
[sip]
port = {sip_port}
front_door = "kamailio"
trusted_sources = ["127.0.0.1"]
[media]
workers = {workers}
worker_sip_port = {worker_sip}
rtp_port = {rtp_port}
outbound_reserve = {outbound_reserve}
{sections}
[paths]
var_dir = "{var_dir}"
{plan}{paths}
[log]
level = "WARNING"
""")
