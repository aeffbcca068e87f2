"""PostgreSQL NOTIFY channels that every node listens on, so that a change made on one node or
from the command line (a revoked API key, a new phone password) takes effect everywhere at once.
A notice sent while a node's listening connection is down is lost: on every (re)connection each
handler runs as if notified, and what they keep still expires on its own."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import asyncpg

log = logging.getLogger("callcenter.notices")

API_KEYS = "api_keys"
SIP_CREDENTIALS = "sip_credentials"


async def notify(conn: asyncpg.Connection, channel: str) -> None:
    """Sent when the surrounding transaction (if any) commits."""
    await conn.execute("SELECT pg_notify($1, '')", channel)


def _closed(conn: asyncpg.pool.PoolConnectionProxy) -> bool:
    try:
        return conn.is_closed()
    except asyncpg.InterfaceError:  # the pool has already taken the lost connection back
        return True


class Notices:
    def __init__(self, pool: asyncpg.Pool, check_every: float = 1.0):
        self.pool = pool
        self.check_every = check_every
        self._handlers: dict[str, list[Callable[[], None]]] = {}

    def on(self, channel: str, handler: Callable[[], None]) -> None:
        self._handlers.setdefault(channel, []).append(handler)

    def _dispatch(self, _conn: object, _pid: int, channel: str, _payload: str) -> None:
        for handler in self._handlers.get(channel, ()):
            handler()

    async def run(self, stop: asyncio.Event) -> None:
        """Listen until ``stop``; a lost connection raises, and the supervisor (callcenter.tasks)
        starts this again with back-off."""
        async with self.pool.acquire(timeout=5) as conn:
            for channel in self._handlers:
                await conn.add_listener(channel, self._dispatch)
            try:
                for handlers in self._handlers.values():  # whatever happened while not listening
                    for handler in handlers:
                        handler()
                while not stop.is_set() and not _closed(conn):
                    try:
                        await asyncio.wait_for(stop.wait(), self.check_every)
                    except TimeoutError:
                        pass
                if _closed(conn):
                    raise ConnectionError("the listening connection to PostgreSQL was lost")
            finally:
                if not _closed(conn):
                    for channel in self._handlers:
                        await conn.remove_listener(channel, self._dispatch)
