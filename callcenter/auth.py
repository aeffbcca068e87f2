"""API access control: who is calling (a ``Principal``) and what they may do (scopes).

Programs (a CRM, scripts) present an API key: ``Authorization: Bearer cc_<id>_<secret>``. The agent
console's people will sign in with a login and get a session: another ``Authenticator`` that yields
a ``Principal`` with the same scopes plus their agent login, checked by the same middleware
(callcenter/http_guard.py). A route declares the scope it needs with ``@requires``.

API keys carry 256 random bits, so a fast hash (SHA-256) is the right way to store them: a slow KDF
(argon2) exists to protect low-entropy passwords and would cost tens of milliseconds per request.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import asyncpg
from aiohttp import web

from callcenter.notices import API_KEYS, notify

log = logging.getLogger("callcenter.auth")

SCOPES = ("read", "control", "configure")
PUBLIC = "public"  # a route anyone may call (the health probe's summary)
_TOKEN = re.compile(r"^cc_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")

H = TypeVar("H", bound=Callable[..., Awaitable[web.StreamResponse]])


def requires(scope: str) -> Callable[[H], H]:
    """Declare the scope a handler needs. Every route must declare one (make_app checks)."""
    if scope not in (*SCOPES, PUBLIC):
        raise ValueError(f"unknown scope {scope!r}")

    def mark(handler: H) -> H:
        setattr(handler, "required_scope", scope)  # noqa: B010 - an attribute the guard reads
        return handler

    return mark


def required_scope(handler: object) -> str | None:
    return getattr(handler, "required_scope", None)


@dataclass(frozen=True)
class Principal:
    kind: Literal["api_key", "user"]
    name: str
    scopes: frozenset[str]
    agent: str | None = None  # a signed-in agent's login (console): limits them to their own calls
    key_id: str = ""  # an API key's public part (what owns its webhook subscriptions)

    def allows(self, scope: str) -> bool:
        return scope == PUBLIC or scope in self.scopes


class BadCredentials(Exception):
    """Credentials were given but are not valid (a 401, whatever the reason: no oracle)."""


class Authenticator(Protocol):
    async def authenticate(self, request: web.Request) -> Principal | None:
        """The principal, None when the request carries no credentials of this kind, or
        BadCredentials when it carries wrong ones."""


def check_scopes(scopes: Iterable[str]) -> list[str]:
    out = sorted(set(scopes))
    bad = [s for s in out if s not in SCOPES]
    if bad or not out:
        raise ValueError(f"scopes must be some of {', '.join(SCOPES)} (got {', '.join(out) or 'none'})")
    return out


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class ApiKeys:
    """API keys in PostgreSQL. Verified keys are cached for ``cache_ttl`` seconds, so that a busy API
    does not query the database per request; a revocation (``notices.API_KEYS``) empties the cache
    at once, and the TTL bounds a revocation whose notice was lost."""

    def __init__(self, pool: asyncpg.Pool, cache_ttl: float = 10.0):
        self.pool = pool
        self.cache_ttl = cache_ttl
        self._cache: dict[bytes, tuple[float, Principal]] = {}

    def forget(self) -> None:
        self._cache.clear()

    async def authenticate(self, request: web.Request) -> Principal | None:
        header = request.headers.get("Authorization", "")
        if not header:
            return None
        kind, _, token = header.partition(" ")
        if kind.lower() != "bearer":
            raise BadCredentials()
        return await self.verify(token.strip())

    async def verify(self, token: str) -> Principal:
        m = _TOKEN.match(token)
        if m is None:
            raise BadCredentials()
        key_id, secret = m.groups()
        digest = hashlib.sha256(token.encode()).digest()
        hit = self._cache.get(digest)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            return hit[1]
        row = await self.pool.fetchrow(
            "UPDATE api_keys SET last_used_at = now() WHERE id = $1 AND revoked_at IS NULL "
            "RETURNING name, secret_hash, scopes", key_id)
        if row is None or not hmac.compare_digest(bytes(row["secret_hash"]), _hash(secret)):
            raise BadCredentials()
        principal = Principal("api_key", str(row["name"]), frozenset(row["scopes"]), key_id=key_id)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (now + self.cache_ttl, principal)
        return principal


async def create_key(conn: asyncpg.Connection, name: str, scopes: Iterable[str]) -> str:
    """A new key; the returned token is shown once and never stored."""
    key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    await conn.execute("INSERT INTO api_keys (id, name, secret_hash, scopes) VALUES ($1, $2, $3, $4)",
                       key_id, name, _hash(secret), check_scopes(scopes))
    return f"cc_{key_id}_{secret}"


async def list_keys(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    rows = await conn.fetch("SELECT id, name, scopes, created_at, last_used_at, revoked_at FROM api_keys "
                            "ORDER BY created_at")
    return [dict(r) for r in rows]


async def revoke_key(conn: asyncpg.Connection, key_id: str) -> bool:
    done = await conn.execute("UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL",
                              key_id)
    await notify(conn, API_KEYS)
    return not done.endswith(" 0")


async def development_key(conn: asyncpg.Connection, path: Path) -> str:
    """The demo's all-scopes key, kept in ``path`` (mode 0600) so that it survives restarts and the
    README's examples can read it; a new one replaces it when the file is gone or the key revoked."""
    if path.exists():
        token = path.read_text().strip()
        m = _TOKEN.match(token)
        if m and await conn.fetchval("SELECT secret_hash FROM api_keys WHERE id = $1 AND revoked_at IS NULL",
                                     m.group(1)) == _hash(m.group(2)):
            return token
    await conn.execute("UPDATE api_keys SET revoked_at = now() WHERE name = 'development' AND revoked_at IS NULL")
    await notify(conn, API_KEYS)
    token = await create_key(conn, "development", SCOPES)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token
