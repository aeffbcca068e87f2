"""SIP access control at the real front door, attacked with real packets: agent phones register only
with their digest password; nothing unauthenticated (a wildcard Contact included) touches a
binding; a scan cannot tell existing extensions from missing ones; a source that keeps failing, or
floods, is ignored while others are served; media workers take calls only from the front door."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.conftest import Platform, Stores, require, sipp, start_platform
from tests.faults.helpers import figure
from tests.faults.sip_raw import Client

WORKERS = 2


@pytest.fixture(scope="module")
def platform(stores: Stores, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    require("kamailio")
    p = start_platform(stores, tmp_path_factory.mktemp("sipaccess"), front_door="kamailio", workers=WORKERS,
                       redis_db=11)
    p.wait(lambda: p.health()["workers"]["up"] == WORKERS, what="workers up")
    for login, ext in (("sipa", "401"), ("sipb", "402")):
        st, _ = p.send("POST", "/api/agents", {"login": login, "name": login.title(), "extension": ext})
        assert st in (201, 409)
    yield p
    assert p.stop() == 0


def password(p: Platform, login: str) -> str:
    st, body = p.send("POST", f"/api/agents/{login}/sip-password", {})
    assert st == 200, body
    return body["password"]  # type: ignore[index,no-any-return]


def bindings(p: Platform) -> str:
    out = subprocess.run(["kamcmd", "-s", f"unix:{p.var_dir / 'kamailio' / 'kamailio_ctl'}", "ul.dump"],
                         capture_output=True, text=True, timeout=10).stdout
    return out


def bound(p: Platform, ext: str) -> list[str]:
    """Contacts bound to the extension (from Kamailio's own location table)."""
    dump = bindings(p)
    out, current = [], None
    for line in dump.splitlines():
        line = line.strip()
        if line.startswith("AoR:"):
            current = line.split(":", 1)[1].strip()
        elif line.startswith("Address:") and current == ext:
            out.append(line.split(":", 1)[1].strip())
    return out


def wait_synced(p: Platform, ext: str, pw: str, source: str) -> None:
    """The front door learns a new password within a moment (the credential sync)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        c = Client(("127.0.0.1", p.sip_port), source)
        try:
            last = c.register(ext, pw, expires=0)[-1]  # expires=0: a check that leaves no binding
        finally:
            c.close()
        if last is not None and last.code == 200:
            return
        time.sleep(0.3)
    raise AssertionError("the new password never reached the front door")


def test_registration_needs_the_password_and_nothing_else_binds(platform: Platform) -> None:
    target = ("127.0.0.1", platform.sip_port)
    pw = password(platform, "sipa")
    wait_synced(platform, "401", pw, "127.0.0.20")
    phone = Client(target, "127.0.0.21")
    attacker = Client(target, "127.0.0.22")
    try:
        # No credentials, wrong credentials: challenged, nothing bound, the failure logged.
        assert [r.code for r in attacker.register("401")] == [401]  # type: ignore[union-attr]
        assert [r.code for r in attacker.register("401", "wrong-password")] == [401, 401]  # type: ignore[union-attr]
        assert bound(platform, "401") == []
        # The real phone registers.
        assert [r.code for r in phone.register("401", pw)] == [401, 200]  # type: ignore[union-attr]
        assert bound(platform, "401") == [f"sip:401@127.0.0.21:{phone.port}"]
        # An unauthenticated wildcard un-REGISTER (Contact: *) removes nothing.
        assert [r.code for r in attacker.register("401", contact="*", expires=0)] == [401]  # type: ignore[union-attr]
        assert len(bound(platform, "401")) == 1
        # Nor does an unauthenticated REGISTER of another contact add one.
        attacker.register("401", contact=f"<sip:401@127.0.0.22:{attacker.port}>")
        assert bound(platform, "401") == [f"sip:401@127.0.0.21:{phone.port}"]
    finally:
        phone.close()
        attacker.close()
    log = (platform.var_dir / "kamailio" / "kamailio.log").read_text()
    assert "SECURITY: REGISTER for 401 refused: bad credentials from 127.0.0.22" in log


def test_a_scan_learns_nothing_and_binds_nothing(platform: Platform) -> None:
    target = ("127.0.0.1", platform.sip_port)
    scanner = Client(target, "127.0.0.23")
    try:
        existing = scanner.register("402", "guess-password-1")  # exists, wrong password
        missing = [scanner.register(ext, "guess-password-1") for ext in ("403", "499", "4020")]
    finally:
        scanner.close()

    def shape(rs: list) -> list[tuple[int, list[str]]]:  # type: ignore[type-arg]
        return [(r.code, sorted(r.headers)) for r in rs]

    assert shape(existing) == [(401, shape(existing)[0][1])] * 2
    assert all(shape(m) == shape(existing) for m in missing), (shape(existing), [shape(m) for m in missing])
    assert 'realm="callcenter"' in existing[-1].headers["www-authenticate"]  # type: ignore[union-attr]
    for ext in ("402", "403", "499", "4020"):
        assert bound(platform, ext) == []


def test_repeated_failures_ban_the_source_not_the_others(platform: Platform) -> None:
    target = ("127.0.0.1", platform.sip_port)
    pw = password(platform, "sipb")
    wait_synced(platform, "402", pw, "127.0.0.30")
    brute = Client(target, "127.0.0.31", timeout=1.0)
    try:
        codes = [brute.register("402", f"guess-{n:04d}-xx")[-1] for n in range(12)]
        answered = [r for r in codes if r is not None]
        assert len(answered) < len(codes) and codes[-1] is None, [r and r.code for r in codes]
        # Banned: even the right password gets no answer from this address now.
        assert brute.register("402", pw) == [None]
    finally:
        brute.close()
    other = Client(target, "127.0.0.32")
    try:
        assert [r.code for r in other.register("402", pw, expires=0)] == [401, 200]  # type: ignore[union-attr]
    finally:
        other.close()
    log = (platform.var_dir / "kamailio" / "kamailio.log").read_text()
    assert "SECURITY: 127.0.0.31 failed authentication" in log


async def test_unacked_invite_flood_does_not_keep_callers_out(platform: Platform, pool: asyncpg.Pool,
                                                              tmp_path: Path) -> None:
    target = ("127.0.0.1", platform.sip_port)
    flood = Client(target, "127.0.0.40", timeout=0.01)
    since = time.time()
    try:
        for n in range(300):
            flood.invite("300", n)
            if n % 50 == 0:
                await asyncio.sleep(0.01)
        t0 = time.monotonic()
        # A legitimate caller (the trunk's address) dials in during the flood and is answered.
        res = await asyncio.to_thread(sipp, "load_call.xml", f"127.0.0.1:{platform.sip_port}", calls=1,
                                      service="300", cwd=tmp_path, extra=["-d", "1000", "-trace_logs"], timeout=20)
        waited = time.monotonic() - t0
    finally:
        flood.close()
    assert "ANSWERED" in "".join(p.read_text() for p in tmp_path.glob("*_logs.log")), res.stdout[-2000:]
    assert waited < 5, waited
    # The flood took at most the per-source share of the capacity, each for the ACK timeout only.
    rows = await pool.fetch("SELECT disconnect_reason, ended_at - arrived_at AS held FROM interactions "
                            "WHERE caller_number LIKE 'flood%' AND arrived_at >= to_timestamp($1)", since)
    assert 0 < len(rows) <= 5, len(rows)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        rows = await pool.fetch("SELECT disconnect_reason, ended_at - arrived_at AS held FROM interactions "
                                "WHERE caller_number LIKE 'flood%' AND arrived_at >= to_timestamp($1)", since)
        if all(r["disconnect_reason"] for r in rows):
            break
        await asyncio.sleep(0.2)
    assert {r["disconnect_reason"] for r in rows} == {"no_ack"}, [dict(r) for r in rows]
    assert max(r["held"].total_seconds() for r in rows) < 7  # the answer, then the 4 s ACK timeout
    log = (platform.var_dir / "kamailio" / "kamailio.log").read_text()
    assert "SECURITY: 127.0.0.40" in log
    figure("300 un-ACKed INVITEs from one source", trunk_caller_answered_s=round(waited, 2),
           flood_calls_held=len(rows), longest_held_s=round(max(r["held"].total_seconds() for r in rows), 2))


async def test_workers_take_calls_only_from_the_front_door(platform: Platform, pool: asyncpg.Pool) -> None:
    worker_port = platform.workers()[0]["sip_port"]
    direct = Client(("127.0.0.1", worker_port), "127.0.0.41")
    since = time.time()
    try:
        direct.invite("300", 1)
        resp = direct.recv()
    finally:
        direct.close()
    assert resp is not None and resp.code == 403, resp and resp.raw
    await asyncio.sleep(0.5)
    n = await pool.fetchval("SELECT count(*) FROM interactions WHERE arrived_at >= to_timestamp($1) "
                            "AND caller_number LIKE 'flood%'", since)
    assert n == 0
