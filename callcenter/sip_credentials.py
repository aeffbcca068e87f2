"""Digest credentials of the agents' phones: the platform makes the password, keeps only its HA1
(MD5 of extension:realm:password, what SIP digest needs and all it needs), and keeps the front
door's table of them in step with PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg

from callcenter.http_guard import UNAVAILABLE
from callcenter.notices import SIP_CREDENTIALS, notify

log = logging.getLogger("callcenter.sip_credentials")

MIN_PASSWORD = 12


def ha1(extension: str, realm: str, password: str) -> str:
    return hashlib.md5(f"{extension}:{realm}:{password}".encode()).hexdigest()


def new_password() -> str:
    """96 bits, typeable into a softphone; never starting with "-", which a command line (ours
    included: `sip-password --password P`) would take for an option."""
    while True:
        password = secrets.token_urlsafe(12)
        if not password.startswith("-"):
            return password


class CredentialError(ValueError):
    pass


async def set_password(conn: asyncpg.Connection, login: str, realm: str,
                       password: str | None = None) -> tuple[str, str]:
    """Give the agent's phone a new password (made here unless given); returns (extension, password)."""
    row = await conn.fetchrow("SELECT extension FROM agents WHERE login = $1", login)
    if row is None:
        raise CredentialError(f"no agent {login!r}")
    if row["extension"] is None:
        raise CredentialError(f"agent {login!r} has no extension: only registering phones have a password")
    password = password or new_password()
    if len(password) < MIN_PASSWORD or not password.isprintable():
        raise CredentialError(f"a phone password has at least {MIN_PASSWORD} printable characters")
    await conn.execute("UPDATE agents SET sip_ha1 = $2 WHERE login = $1", login, ha1(row["extension"], realm, password))
    await notify(conn, SIP_CREDENTIALS)
    return str(row["extension"]), password


Push = Callable[[dict[str, str], list[str]], Awaitable[None]]


class CredentialSync:
    """Keeps the front door's extension -> HA1 table equal to the agents table: at once when told
    (``changed()``, and on ``notices.SIP_CREDENTIALS`` from any node or the CLI), and every
    ``interval`` seconds in case a notice was lost."""

    def __init__(self, pool: asyncpg.Pool, push: Push, interval: float = 15.0):
        self.pool = pool
        self.push = push
        self.interval = interval
        self.pushed: dict[str, str] = {}
        self._wake = asyncio.Event()

    def changed(self) -> None:
        self._wake.set()

    def reset(self) -> None:
        """The front door restarted with an empty table: push everything next time."""
        self.pushed = {}
        self._wake.set()

    async def sync_once(self) -> int:
        rows = await self.pool.fetch("SELECT extension, sip_ha1 FROM agents "
                                     "WHERE extension IS NOT NULL AND sip_ha1 IS NOT NULL AND active")
        want = {str(r["extension"]): str(r["sip_ha1"]) for r in rows}
        sets = {ext: h for ext, h in want.items() if self.pushed.get(ext) != h}
        gone = sorted(set(self.pushed) - set(want))
        if sets or gone:
            await self.push(sets, gone)
            self.pushed = want
        return len(sets) + len(gone)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._wake.clear()
            try:
                n = await self.sync_once()
                if n:
                    log.info("front door credentials: %d changed", n)
            except UNAVAILABLE as exc:
                log.warning("front door credentials not synced: %s", exc)
            waits = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
            await asyncio.wait(waits, timeout=self.interval, return_when=asyncio.FIRST_COMPLETED)
            for w in waits:
                w.cancel()


async def demo_passwords(conn: asyncpg.Connection, realm: str, path: Path) -> int:
    """Passwords for the demo agents' phones that have none yet, written to ``path`` (mode 0600) for
    the person trying the demo. Returns how many were made."""
    rows = await conn.fetch("SELECT login FROM agents WHERE extension IS NOT NULL AND sip_ha1 IS NULL "
                            "ORDER BY extension")
    lines = []
    for r in rows:
        ext, password = await set_password(conn, r["login"], realm, None)
        lines.append(f"{ext} {r['login']} {password}\n")
    if lines:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as f:
            f.writelines(lines)
    return len(lines)
