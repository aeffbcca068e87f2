"""NOTIFY channels (callcenter/notices.py) on a real PostgreSQL: a change from another connection
reaches the handlers, a lost listening connection is reported (and a restart catches up)."""

from __future__ import annotations

import asyncio

import asyncpg

from callcenter.notices import API_KEYS, SIP_CREDENTIALS, Notices, notify


async def _until(pred, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    for _ in range(int(timeout / 0.02)):
        if pred():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


async def test_a_notice_from_another_connection_reaches_only_its_handlers(pool: asyncpg.Pool) -> None:
    got: list[str] = []
    notices = Notices(pool)
    notices.on(API_KEYS, lambda: got.append("keys"))
    notices.on(SIP_CREDENTIALS, lambda: got.append("phones"))
    stop = asyncio.Event()
    task = asyncio.create_task(notices.run(stop))
    await _until(lambda: sorted(got) == ["keys", "phones"])  # on connecting: whatever was missed
    got.clear()
    async with pool.acquire() as conn:
        async with conn.transaction():
            await notify(conn, API_KEYS)
            await asyncio.sleep(0.2)
            assert got == []  # not before the change is committed
    await _until(lambda: got == ["keys"])
    stop.set()
    await asyncio.wait_for(task, 2)


async def test_a_lost_listening_connection_raises_for_the_supervisor(pool: asyncpg.Pool) -> None:
    got: list[str] = []
    notices = Notices(pool)
    notices.on(API_KEYS, lambda: got.append("keys"))
    task = asyncio.create_task(notices.run(asyncio.Event()))
    await _until(lambda: got == ["keys"])
    listening = "FROM pg_stat_activity WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()"
    assert await pool.fetch(f"SELECT pid {listening}")
    await pool.execute(f"SELECT pg_terminate_backend(pid) {listening}")
    try:
        await asyncio.wait_for(task, 5)
    except ConnectionError:
        pass
    else:
        raise AssertionError("a lost connection must not end the loop quietly")
