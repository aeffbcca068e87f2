"""PostgreSQL frozen (every postgres process SIGSTOPped), on the platform's own embedded server as
`make run` starts it: the API answers a JSON 503 within its time limit instead of hanging, /healthz
says which store is away, a call dialed meanwhile is answered and hears its prompt (its record is
held and written once the database answers again), and nothing is lost."""

from __future__ import annotations

import asyncio
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import psutil
import pytest
from pgserver.utils import PostmasterInfo

from callcenter.auth import SCOPES, create_key
from tests.conftest import Platform, Stores, require, sipp, start_platform
from tests.faults.helpers import figure


@pytest.fixture
def platform(stores: Stores, tmp_path: Path) -> Iterator[Platform]:
    require("sipp")
    p = start_platform(stores, tmp_path, front_door="none", workers=1, redis_db=9, own_database=True)
    yield p
    if p.proc.poll() is None:
        assert p.stop() == 0


def postgres(p: Platform) -> tuple[str, list[psutil.Process]]:
    info = PostmasterInfo.read_from_pgdata(p.var_dir / "pgdata")
    assert info is not None
    master = psutil.Process(info.pid)
    return info.get_uri(database="callcenter"), [master, *master.children()]


async def test_frozen_database_503_in_time_calls_answered_nothing_lost(platform: Platform, tmp_path: Path) -> None:
    p = platform
    uri, procs = postgres(p)
    conn = await asyncpg.connect(uri)
    try:
        p.api_key = await create_key(conn, "faults", SCOPES)  # the same code as `callcenter api-key create`
    finally:
        await conn.close()
    assert p.get("/api/queues")[0] == 200
    since = time.time()
    for proc in procs:
        proc.send_signal(signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        status, body = p.get("/api/interactions", timeout=15)
        answered_in = time.monotonic() - t0
        assert status == 503 and "error" in body, (status, body)  # type: ignore[operator]
        assert answered_in < 7, answered_in  # the request time limit (5 s), not a hang
        with pytest.raises(urllib.error.HTTPError) as health:
            urllib.request.urlopen(p.http + "/healthz", timeout=10)
        assert health.value.code == 503
        # A caller dials in meanwhile: answered, hears the looped prompt, hangs up after 3 s.
        res = await asyncio.to_thread(sipp, "load_call.xml", f"127.0.0.1:{p.sip_port}", calls=1, service="300",
                                      cwd=tmp_path, extra=["-d", "3000", "-trace_logs"], timeout=30)
        assert "ANSWERED" in "".join(x.read_text() for x in tmp_path.glob("*_logs.log")), res.stdout[-1500:]
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGCONT)
    thawed = time.time()
    p.wait(lambda: p.get("/healthz")[0] == 200, timeout=20, what="healthy again")
    recovered = time.time() - thawed
    conn = await asyncpg.connect(uri)
    try:
        row = None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and row is None:
            row = await conn.fetchrow("SELECT * FROM interactions WHERE arrived_at >= to_timestamp($1) "
                                      "AND ended_at IS NOT NULL", since)
            await asyncio.sleep(0.2)
        assert row is not None, "the call made while the database was frozen left no record"
        assert row["answered_at"] is not None and row["disconnect_side"] == "caller", dict(row)
        events = await conn.fetchval("SELECT count(*) FROM interaction_events WHERE interaction_id = $1", row["id"])
        assert events >= 3  # DID, ANSWER, HANGUP at least
    finally:
        await conn.close()
    figure("PostgreSQL frozen (SIGSTOP, every process)", api_503_in_s=round(answered_in, 2), call_answered=True,
           calls_dropped=0, records_lost=0, healthy_after_thaw_s=round(recovered, 2))
