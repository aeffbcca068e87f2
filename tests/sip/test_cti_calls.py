"""Third-party call control of real calls: a pjsua2 caller and two pjsua2 agent phones through
Kamailio, each sending its own tone, every command sent to a second control-plane process (an API
node) that does not run the call. Blind transfer to a second queue (the second agent gets the same
interaction and customer), attended transfer completed, cancelled, and a three-way conference in
which each of the three hears the other two; the record keeps the transfers and the conference."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from callcenter.embedded import free_port
from tests.conftest import Platform, Stores, api_node, reset_acd, start_platform
from tests.sip.audio import rms, tone_power, window
from tests.sip.contact_center import agent, events_of, names, queue, status
from tests.sip.phones import phone, result

PHONE_BASE = 18300 + (os.getpid() % 40) * 12  # ann at +0, bob at +2; RTP at +1000
CALLER = "+15550109393"  # a number no other module uses: the customer stays in the shared database
ANN, BOB, CALLER_TONE = 1000, 1600, 450  # whole cycles in 20 ms: a WAV player's loop shifts no phase


@pytest.fixture(scope="module")
def platform(stores: Stores, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    tmp = tmp_path_factory.mktemp("cti")
    plan = tmp / "dialplan.toml"
    plan.write_text('[[route]]\nnumber = "600"\nname = "support"\naction = "queue"\nprompt = "connecting"\n'
                    'queue = "support"\n')
    reset_acd(stores)
    p = start_platform(stores, tmp, front_door="kamailio", workers=2, dialplan=plan, redis_db=10)
    queue(p, "support", no_agents="wait")
    queue(p, "billing", no_agents="wait")
    for n, login in enumerate(("ann", "bob")):
        st, out = p.send("POST", "/api/agents", {"login": login, "name": login.title(),
                                                 "sip_uri": f"sip:{login}@127.0.0.1:{PHONE_BASE + 2 * n}"})
        assert st == 201, out
    assert p.send("PUT", "/api/queues/support/members", {"members": [{"agent": "ann"}]})[0] == 200
    assert p.send("PUT", "/api/queues/billing/members", {"members": [{"agent": "bob"}]})[0] == 200
    yield p
    assert p.stop() == 0


@pytest.fixture
def node(platform: Platform, tmp_path: Path) -> Iterator[Platform]:
    with api_node(platform, tmp_path / "node2") as other:
        yield other


def _phones(tmp: Path, seconds: float) -> tuple[Any, Any]:
    ann = phone("--port", str(PHONE_BASE), "--agent", "--tone", str(ANN), "--record", str(tmp / "ann"),
                "--seconds", str(seconds))
    bob = phone("--port", str(PHONE_BASE + 2), "--agent", "--tone", str(BOB), "--record", str(tmp / "bob"),
                "--seconds", str(seconds))
    return ann, bob


def _call(platform: Platform, tmp: Path, seconds: float) -> tuple[Any, str]:
    heard = str(tmp / "caller.wav")
    caller = phone("--port", str(free_port()), "--user", CALLER, "--call", f"sip:600@127.0.0.1:{platform.sip_port}",
                   "--tone", str(CALLER_TONE), "--record", heard, "--seconds", str(seconds))
    return caller, heard


def _agents_call(node: Platform, login: str, state: str, timeout: float = 10) -> dict[str, Any]:
    """The session of the call ``login`` is on, once it is in ``state`` (read through ``node``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st, out = node.get(f"/api/agents/{login}/call")
        if st == 200 and out["state"] == state:  # type: ignore[index]
            return out  # type: ignore[return-value]
        time.sleep(0.1)
    raise AssertionError(f"{login} has no {state} call: {node.get(f'/api/agents/{login}/call')}")


def _send(node: Platform, path: str, body: dict[str, Any] | None = None) -> float:
    """POST a command through ``node``; returns when it was answered (done)."""
    st, out = node.send("POST", path, body or {})
    assert st == 200 and out["ok"], (path, st, out)  # type: ignore[index]
    return time.time()


def _hears(rec: str, started: float, start: float, end: float, present: tuple[float, ...],
           absent: tuple[float, ...]) -> None:
    """In that window, each tone of ``present`` is at least 20 times as strong as each of ``absent``."""
    samples, rate = window(rec, started, start, end)
    for hz in present:
        for other in absent:
            ratio = tone_power(samples, rate, hz) / max(tone_power(samples, rate, other), 1e-9)
            assert ratio > 20, (rec, hz, other, round(ratio, 1))


async def _customer(pool: asyncpg.Pool) -> int:
    cid = await pool.fetchval("SELECT customer_id FROM customer_phones WHERE e164 = $1", CALLER)
    if cid is None:
        cid = await pool.fetchval("INSERT INTO customers (kind, first_name, last_name, display_name, value_tier) "
                                  "VALUES ('individual', 'Ada', 'Lovelace', 'Ada Lovelace', 'gold') RETURNING id")
        await pool.execute("INSERT INTO customer_phones (customer_id, e164, is_primary) VALUES ($1, $2, true)",
                           cid, CALLER)
    return int(cid)


async def _record(pool: asyncpg.Pool, iid: str) -> asyncpg.Record:
    for _ in range(75):
        row = await pool.fetchrow("SELECT i.*, a.login, q.name AS queue FROM interactions i "
                                  "LEFT JOIN agents a ON a.id = i.agent_id LEFT JOIN queues q ON q.id = i.queue_id "
                                  "WHERE i.id = $1", uuid.UUID(iid))
        if row is not None and row["ended_at"] is not None:
            return row
        time.sleep(0.2)
    raise AssertionError(f"interaction {iid} not closed")


def _free(platform: Platform, *logins: str) -> None:
    for login in logins:
        platform.wait(lambda login=login: agent(platform, login)["activity"] == "idle", 10, f"{login} to be free")
        status(platform, login, "not_ready", "break")


async def test_blind_transfer_to_a_second_queue_keeps_the_interaction_and_the_customer(
        platform: Platform, node: Platform, pool: asyncpg.Pool, tmp_path: Path) -> None:
    customer = await _customer(pool)
    ann, bob = _phones(tmp_path, 16)
    status(platform, "ann", "available")
    status(platform, "bob", "available")
    since = time.time()
    caller, heard = _call(platform, tmp_path, 12)
    first = _agents_call(node, "ann", "connected")
    iid = first["interaction"]
    time.sleep(1.5)
    transferred = _send(node, f"/api/calls/{iid}/transfer", {"kind": "queue", "target": "billing"})
    second = _agents_call(node, "bob", "connected")
    assert (second["interaction"], second["customer_id"], second["queue"]) == (iid, customer, "billing")
    c, a, b = result(caller), result(ann), result(bob)
    assert c["answered"] and [x["answered"] for x in a["calls"]] == [True] == [x["answered"] for x in b["calls"]]
    _hears(heard, c["record_started"], transferred + 2.5, transferred + 4.5, (BOB,), (ANN,))
    assert b["calls"][0]["identity"].startswith(f"<sip:{CALLER}@")  # bob's phone shows who calls

    events = await events_of(pool, CALLER, platform, since=since, until="COMPLETECALLER")
    assert [n for n in names(events) if n != "COMMAND"] == [
        "ENTERQUEUE", "OFFER", "CONNECT", "BLINDTRANSFER", "ENTERQUEUE", "OFFER", "CONNECT", "HANGUP",
        "COMPLETECALLER"], names(events)
    queues = [e["queue"] for e in events if e["event"] == "ENTERQUEUE"]
    assert queues == ["support", "billing"]
    assert [e["agent"] for e in events if e["event"] == "CONNECT"] == ["ann", "bob"]
    record = await _record(pool, iid)
    ann_id = await pool.fetchval("SELECT id FROM agents WHERE login = 'ann'")
    assert (record["login"], record["queue"], record["customer_id"], record["transfer_count"]) == (
        "bob", "billing", customer, 1)
    [t] = json.loads(record["transfers"])
    assert (t["mode"], t["kind"], t["target"], t["from_agent"]) == ("blind", "queue", "billing", ann_id)
    _free(platform, "ann", "bob")


async def test_attended_transfer_completed(platform: Platform, node: Platform, pool: asyncpg.Pool,
                                           tmp_path: Path) -> None:
    ann, bob = _phones(tmp_path, 18)
    status(platform, "ann", "available")
    status(platform, "bob", "not_ready", "break")  # a consultation reaches a free agent, not a queue's
    since = time.time()
    caller, heard = _call(platform, tmp_path, 14)
    iid = _agents_call(node, "ann", "connected")["interaction"]
    time.sleep(1.5)
    st, out = node.send("POST", "/api/agents/ann/call/consult", {"kind": "agent", "target": "bob"})
    assert (st, out["reason"], out["field"]) == (409, "busy", "target"), out  # type: ignore[index]
    status(platform, "bob", "available")
    consulted = _send(node, "/api/agents/ann/call/consult", {"kind": "agent", "target": "bob"})
    platform.wait(lambda: agent(platform, "bob")["activity"] == "on_call", 5, "bob to answer")
    time.sleep(2.5)
    completed = _send(node, "/api/agents/ann/call/complete")
    bob_id = await pool.fetchval("SELECT id FROM agents WHERE login = 'bob'")
    node.wait(lambda: node.get(f"/api/calls/{iid}")[1]["agent_id"] == bob_id, 2, "bob to be the call's agent")  # type: ignore[index]
    c, a, b = result(caller), result(ann), result(bob)
    # While they consult, the caller hears the hold music and neither agent; bob hears ann.
    talk, rate = window(heard, c["record_started"], consulted - 1.2, consulted - 0.1)
    hold, rate = window(heard, c["record_started"], consulted + 1.2, completed - 0.2)
    assert rms(hold) > 300, f"the caller heard no hold music: rms {rms(hold):.0f}"
    for hz in (ANN, BOB):
        assert tone_power(hold, rate, hz) * 20 < tone_power(talk, rate, ANN), f"the caller on hold heard {hz} Hz"
    bob_call = b["calls"][0]
    _hears(bob_call["record"], bob_call["record_started"], completed - 1.5, completed - 0.2, (ANN,), (CALLER_TONE,))
    # Completed: the caller and bob hear each other; ann has gone.
    _hears(heard, c["record_started"], completed + 0.7, completed + 2.5, (BOB,), (ANN,))
    _hears(bob_call["record"], bob_call["record_started"], completed + 0.7, completed + 2.5, (CALLER_TONE,), (ANN,))
    assert a["calls"][0]["ended_at"] < completed + 1.0

    events = await events_of(pool, CALLER, platform, since=since, until="COMPLETECALLER")
    assert [n for n in names(events) if n != "COMMAND"] == [
        "ENTERQUEUE", "OFFER", "CONNECT", "CONSULT", "ATTENDEDTRANSFER", "HANGUP", "COMPLETECALLER"], names(events)
    record = await _record(pool, iid)
    assert (record["login"], record["transfer_count"], record["hold_count"]) == ("bob", 1, 1)
    assert completed - consulted - 0.5 < record["hold_seconds"] < completed - consulted + 0.5
    assert json.loads(record["transfers"])[0]["mode"] == "attended"
    _free(platform, "ann", "bob")


async def test_a_cancelled_consultation_then_a_three_way_conference(platform: Platform, node: Platform,
                                                                    pool: asyncpg.Pool, tmp_path: Path) -> None:
    ann, bob = _phones(tmp_path, 26)
    status(platform, "ann", "available")
    status(platform, "bob", "available")
    since = time.time()
    caller, heard = _call(platform, tmp_path, 22)
    iid = _agents_call(node, "ann", "connected")["interaction"]
    time.sleep(1.0)
    base = f"/api/calls/{iid}"
    _send(node, f"{base}/consult", {"kind": "agent", "target": "bob"})
    platform.wait(lambda: agent(platform, "bob")["activity"] == "on_call", 5, "bob to answer")
    time.sleep(1.0)
    cancelled = _send(node, f"{base}/cancel")
    time.sleep(2.5)
    _send(node, f"{base}/consult", {"kind": "agent", "target": "bob"})
    platform.wait(lambda: agent(platform, "bob")["activity"] == "on_call", 8, "bob to answer again")
    time.sleep(1.0)
    conferenced = _send(node, f"{base}/conference")
    node.wait(lambda: node.get(base)[1]["state"] == "conferenced", 2, "the session to be a conference")  # type: ignore[index]
    time.sleep(3.0)
    left = _send(node, f"{base}/leave", {"leg": "agent"})
    c, a, b = result(caller), result(ann), result(bob)
    assert len(b["calls"]) == 2 and all(x["answered"] for x in b["calls"])

    # Cancelled: the caller hears ann again, not bob.
    _hears(heard, c["record_started"], cancelled + 0.7, cancelled + 2.2, (ANN,), (BOB,))
    # The conference: each of the three hears the other two.
    win = (conferenced + 0.7, conferenced + 2.7)
    _hears(heard, c["record_started"], *win, (ANN, BOB), (CALLER_TONE,))
    ann_call, bob_call = a["calls"][0], b["calls"][1]
    _hears(ann_call["record"], ann_call["record_started"], *win, (CALLER_TONE, BOB), (ANN,))
    _hears(bob_call["record"], bob_call["record_started"], *win, (CALLER_TONE, ANN), (BOB,))
    # ann left: the caller and bob talk on.
    _hears(heard, c["record_started"], left + 0.7, left + 2.5, (BOB,), (ANN,))

    events = await events_of(pool, CALLER, platform, since=since, until="COMPLETECALLER")
    assert [n for n in names(events) if n != "COMMAND"] == [
        "ENTERQUEUE", "OFFER", "CONNECT", "CONSULT", "CONSULTEND", "CONSULT", "CONFERENCE", "ATTENDEDTRANSFER",
        "HANGUP", "COMPLETECALLER"], names(events)
    record = await _record(pool, iid)
    assert 2.5 < record["conference_seconds"] < 4.0 and record["transfer_count"] == 1 and record["hold_count"] == 2
    _free(platform, "ann", "bob")
