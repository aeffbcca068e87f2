"""What benchmarks that run the whole platform share: an empty database per run, and waiting for
the media workers."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

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


def write_config(path: Path, *, http_port: int, sip_port: int, workers: int, worker_sip: int, rtp_port: int,
                 outbound_reserve: int, var_dir: Path, dialplan: Path | None = None) -> None:
    """The platform's configuration for a benchmark: behind Kamailio, the load generator as the
    trusted trunk, quiet logs."""
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
[paths]
var_dir = "{var_dir}"
{plan}[log]
level = "WARNING"
""")
