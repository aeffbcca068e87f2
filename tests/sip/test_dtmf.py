"""SIPp calls one media worker directly (no front door): the prompt plays, the platform hears the
caller's keys (RFC 4733 from SIPp's own pcaps, and SIP INFO), hangs up, and the interaction and its
events are in PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.conftest import Platform, Stores, dtmf_keys, sipp, start_platform


@pytest.fixture(scope="module")
def platform(stores: Stores, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    p = start_platform(stores, tmp_path_factory.mktemp("dtmf"), front_door="none")
    yield p
    assert p.stop() == 0


async def _interaction(pool: asyncpg.Pool, caller: str) -> tuple[asyncpg.Record, list[asyncpg.Record]]:
    row = await pool.fetchrow("SELECT * FROM interactions WHERE caller_number = $1 ORDER BY arrived_at DESC "
                              "LIMIT 1", caller)
    assert row is not None, f"no interaction for {caller}"
    events = await pool.fetch("SELECT event, data FROM interaction_events WHERE interaction_id = $1 "
                              "ORDER BY at, id", row["id"])
    return row, events


async def _wait_closed(pool: asyncpg.Pool, caller: str, platform: Platform) -> tuple[asyncpg.Record, list]:
    import asyncio

    for _ in range(50):
        n = await pool.fetchval("SELECT count(*) FROM interactions WHERE caller_number = $1 AND ended_at IS NOT "
                                "NULL", caller)
        if n:
            break
        await asyncio.sleep(0.1)
    return await _interaction(pool, caller)


async def test_rfc4733_digits_reach_the_platform_and_the_record(platform: Platform, pool: asyncpg.Pool,
                                                                 tmp_path: Path) -> None:
    caller = "+15550104733"
    res = sipp("dtmf_call.xml", f"127.0.0.1:{platform.sip_port}", keys={"caller": caller, **dtmf_keys("1234")},
               cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    row, events = await _wait_closed(pool, caller, platform)
    assert row["digits"] == "1234"
    assert row["dialed_number"] == "100" and row["route"] == "hotline"
    assert row["answered_at"] is not None and row["ended_at"] is not None
    assert row["disconnect_side"] == "platform" and row["worker_id"] == "w1"
    names = [e["event"] for e in events]
    assert names[:2] == ["DID", "ANSWER"] and names[-1] == "HANGUP"
    dtmf = [json.loads(e["data"]) for e in events if e["event"] == "DTMF"]
    assert [d["digit"] for d in dtmf] == ["1", "2", "3", "4"]
    assert {d["method"] for d in dtmf} == {"rfc4733"}
    prompts = [json.loads(e["data"]) for e in events if e["event"] == "PROMPT"]
    # The first key cut the greeting short; the thank-you prompt then played to its end.
    assert prompts[0]["prompt"] == "welcome.wav" and prompts[0]["reason"] == "interrupted"
    assert prompts[0]["digit"] == "1"
    assert prompts[-1]["prompt"] == "thanks.wav" and prompts[-1]["reason"] == "eof"


async def test_sip_info_digits(platform: Platform, pool: asyncpg.Pool, tmp_path: Path) -> None:
    caller = "+15550100005"
    res = sipp("info_dtmf_call.xml", f"127.0.0.1:{platform.sip_port}",
               keys={"caller": caller, "d1": "9", "d2": "8", "d3": "#", "d4": "7"}, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    row, events = await _wait_closed(pool, caller, platform)
    dtmf = [json.loads(e["data"]) for e in events if e["event"] == "DTMF"]
    assert [d["digit"] for d in dtmf][:3] == ["9", "8", "#"]
    assert {d["method"] for d in dtmf} == {"info"}
    # '#' ends the entry: two digits collected, the terminator not included.
    assert row["digits"] == "98"
    collected = [json.loads(e["data"]) for e in events if e["event"] == "DIGITS"]
    assert collected == [{"digits": "98", "reason": "terminator"}]


async def test_unknown_number_gets_the_not_in_service_route(platform: Platform, pool: asyncpg.Pool,
                                                           tmp_path: Path) -> None:
    caller = "+15550100404"
    res = sipp("dtmf_call.xml", f"127.0.0.1:{platform.sip_port}", service="999",
               keys={"caller": caller, **dtmf_keys("1111")}, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    row, _ = await _wait_closed(pool, caller, platform)
    assert row["route"] == "not-in-service" and row["dialed_number"] == "999"
    assert row["digits"] is None


async def test_interactions_api_pages_and_rejects_bad_queries(platform: Platform) -> None:
    status, body = platform.get("/api/interactions?since=2000-01-01T00:00:00Z&limit=1")
    assert status == 200
    assert len(body["items"]) == 1 and body["next"]  # type: ignore[index]
    status, page2 = platform.get(body["next"])  # type: ignore[index]
    assert status == 200 and page2["items"][0]["id"] != body["items"][0]["id"]  # type: ignore[index]
    for bad, word in [("?since=yesterday", "since"), ("?limit=0", "limit"), ("?limit=x", "limit"),
                      ("?colour=red", "unknown")]:
        status, err = platform.get("/api/interactions" + bad)
        assert status == 400 and word in err["error"], (bad, err)  # type: ignore[index]
    status, err = platform.get("/api/interactions/not-a-uuid")
    assert status == 400
