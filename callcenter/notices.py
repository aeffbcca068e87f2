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
IVR_FLOWS = "ivr_flows"  # the IVR's flow files changed (POST /api/ivr/reload): load them again


async def notify(conn: asyncpg.Connection, channel: str) -> None:
    """Sent when the surrounding transaction (if any) commits."""
    await conn.execute("SELECT pg_notify($1, '')", channel)


def _closed(conn: asyncpg.pool.PoolConnectionProxy) -> bool:
    try:
        return conn.is_closed()
    except asyncpg.InterfaceError:  # the pool has already taken the lost connection back
        return True


class Notices:
    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool
        self._handlers: dict[str, list[Callable[[], None]]] = {}

    def on(self, channel: str, handler: Callable[[], None]) -> None:
        self._handlers.setdefault(channel, []).append(handler)

    def _dispatch(self, _conn: object, _pid: int, channel: str, _payload: str) -> None:
        for handler in self._handlers.get(channel, ()):
            handler()

    async def run(self, stop: asyncio.Event) -> None:
        """Listen until ``stop``; a lost connection raises, and the supervisor (callcenter.tasks)
        starts this again with back-off. asyncpg reports the loss itself (a termination listener),
        so nothing polls the connection."""
        lost = asyncio.Event()

        def on_lost(_conn: object) -> None:
            lost.set()

        async with self.pool.acquire(timeout=5) as conn:
            conn.add_termination_listener(on_lost)
            for channel in self._handlers:
                await conn.add_listener(channel, self._dispatch)
            try:
                for handlers in self._handlers.values():  # whatever happened while not listening
                    for handler in handlers:
                        handler()
                waits = {asyncio.create_task(stop.wait()), asyncio.create_task(lost.wait())}
                try:
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for w in waits:
                        w.cancel()
                if lost.is_set() or _closed(conn):
                    raise ConnectionError("the listening connection to PostgreSQL was lost")
            finally:
                if not lost.is_set() and not _closed(conn):  # back to the pool as it came out
                    conn.remove_termination_listener(on_lost)
                    for channel in self._handlers:
                        await conn.remove_listener(channel, self._dispatch)
