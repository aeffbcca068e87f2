"""API keys in the real PostgreSQL, managed with the real CLI: created once and shown once, stored as
a hash, listed without their secret, revoked; the development key survives restarts in its file."""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from callcenter.auth import SCOPES, ApiKeys, BadCredentials, check_scopes, development_key
from tests.conftest import ROOT, Stores


def cli(stores: Stores, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": stores.database_url, "REDIS_URL": stores.redis_url}
    return subprocess.run([sys.executable, "-m", "callcenter.cli", "api-key", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


async def test_cli_creates_lists_and_revokes(stores: Stores, pool: asyncpg.Pool) -> None:
    made = await asyncio.to_thread(cli, stores, "create", "--name", "crm", "--scope", "read,control")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip().splitlines()[-1]
    key_id = token.split("_")[1]
    stored = await pool.fetchrow("SELECT secret_hash, scopes FROM api_keys WHERE id = $1", key_id)
    assert stored["scopes"] == ["control", "read"]
    assert token not in str(dict(stored)) and bytes(stored["secret_hash"]) == hashlib.sha256(
        token.split("_", 2)[2].encode()).digest()
    keys = ApiKeys(pool, cache_ttl=0)
    principal = await keys.verify(token)
    assert principal.name == "crm" and principal.allows("control") and not principal.allows("configure")

    listed = await asyncio.to_thread(cli, stores, "list")
    line = next(ln for ln in listed.stdout.splitlines() if ln.startswith(key_id))
    assert "crm" in line and "active" in line and token.split("_", 2)[2] not in listed.stdout

    assert (await asyncio.to_thread(cli, stores, "revoke", key_id)).returncode == 0
    with pytest.raises(BadCredentials):
        await keys.verify(token)
    again = await asyncio.to_thread(cli, stores, "revoke", key_id)
    assert again.returncode == 1 and "no active key" in again.stderr
    bad = await asyncio.to_thread(cli, stores, "create", "--name", "x", "--scope", "admin")
    assert bad.returncode == 2 and "scopes must be some of" in bad.stderr


def test_scopes_are_checked() -> None:
    assert check_scopes(["read", "read", "configure"]) == ["configure", "read"]
    for bad in ([], ["root"], ["read", "*"]):
        with pytest.raises(ValueError):
            check_scopes(bad)


async def test_development_key_is_kept_in_its_file(pool: asyncpg.Pool, tmp_path: Path) -> None:
    path = tmp_path / "dev-api-key"
    async with pool.acquire() as conn:
        first = await development_key(conn, path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert await development_key(conn, path) == first  # a restart prints the same key
        principal = await ApiKeys(pool).verify(first)
        assert principal.scopes == frozenset(SCOPES)
        path.write_text("cc_garbage\n")  # edited or lost: a new key, the old development key revoked
        second = await development_key(conn, path)
        assert second != first and path.read_text().strip() == second
    with pytest.raises(BadCredentials):
        await ApiKeys(pool, cache_ttl=0).verify(first)
