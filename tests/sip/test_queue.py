"""Queues end to end through SIP: pjsua2 and SIPp callers dial queue routes, pjsua2 agent phones ring,
answer or don't; the tests check who got which call and in what order, the audio bridge, the exits,
and the events in PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from callcenter.embedded import free_port
from tests.conftest import ROOT, Platform, Stores, api_node, reset_acd, sipp, sipp_start, start_platform
from tests.sip.audio import read_wav, rms, steadiness, tone_power, window
from tests.sip.contact_center import agent, events_of, names, queue, status
from tests.sip.phones import phone, result

PHONE_BASE = 17300 + (hash(ROOT) % 40) * 12  # agent phones at +0, +2 … +8, RTP at +1000
CUSTOMER_PORT = PHONE_BASE + 10


@pytest.fixture(scope="module")
def platform(stores: Stores, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    tmp = tmp_path_factory.mktemp("queue")
    plan = tmp / "dialplan.toml"
    plan.write_text("""
[[route]]
number = "500"
name = "support"
action = "queue"
prompt = "connecting"
queue = "support"

[[route]]
number = "510"
name = "sales"
action = "queue"
prompt = "connecting"
queue = "sales"

[[route]]
number = "520"
name = "keyq"
action = "queue"
prompt = "connecting"
queue = "keyq"

[[route]]
number = "530"
name = "empty"
action = "queue"
prompt = "connecting"
queue = "empty"

[[route]]
number = "550"
name = "callback"
action = "queue"
prompt = "connecting"
queue = "cbq"

[[route]]
number = "560"
name = "announce"
action = "queue"
prompt = "connecting"
queue = "annq"

[[route]]
number = "570"
name = "tiny"
action = "queue"
prompt = "connecting"
queue = "tiny"

[[route]]
number = "580"
name = "leave"
action = "queue"
prompt = "connecting"
queue = "leaveq"

[[route]]
number = "540"
name = "phones"
action = "queue"
prompt = "connecting"
queue = "phones"
""")
    reset_acd(stores)
    # Four calls per worker process: one caller and one agent leg per call, so two workers.
    # Callbacks reach customers through a "trunk": here, straight to the test customer's phone.
    p = start_platform(stores, tmp, front_door="kamailio", workers=2, dialplan=plan, redis_db=10,
                       extra=f'[acd]\ncallback_uri = "sip:{{number}}@127.0.0.1:{CUSTOMER_PORT}"')
    queue(p, "support", no_agents="wait")
    queue(p, "sales", no_agents="wait", max_wait=3, overflow={"kind": "voicemail"})
    queue(p, "empty", no_agents="exit")  # before keyq, which overflows into it
    queue(p, "keyq", no_agents="wait", exit_key="*", overflow={"kind": "queue", "target": "empty"})
    queue(p, "phones", strategy="linear")
    queue(p, "annq", no_agents="wait", announce_every=1.5)
    queue(p, "tiny", no_agents="wait", max_callers=1)
    queue(p, "leaveq", no_agents="exit")
    queue(p, "cbq", no_agents="wait", callback_key="1", callback_retries=2, callback_interval=2,
           callback_ring_timeout=4)
    for n, login in enumerate(("ann", "bob", "cid")):
        st, out = p.send("POST", "/api/agents", {"login": login, "name": login.title(),
                                                 "sip_uri": f"sip:{login}@127.0.0.1:{PHONE_BASE + 2 * n}"})
        assert st == 201, out
    st, out = p.send("PUT", "/api/queues/support/members", {"members": [{"agent": "ann"}, {"agent": "bob"},
                                                                        {"agent": "cid"}]})
    assert st == 200, out
    for q in ("sales", "keyq"):
        assert p.send("PUT", f"/api/queues/{q}/members", {"members": [{"agent": "cid"}]})[0] == 200
    assert p.send("PUT", "/api/queues/leaveq/members", {"members": [{"agent": "ann"}]})[0] == 200
    for login, ext in (("eve", "302"), ("dan", "301")):  # phones registered at the front door
        assert p.send("POST", "/api/agents", {"login": login, "name": login.title(), "extension": ext})[0] == 201
    assert p.send("PUT", "/api/queues/phones/members", {"members": [{"agent": "eve"}, {"agent": "dan"}]})[0] == 200
    assert p.send("POST", "/api/agents", {"login": "fay", "name": "Fay",
                                          "sip_uri": f"sip:fay@127.0.0.1:{PHONE_BASE + 8}"})[0] == 201
    assert p.send("PUT", "/api/queues/cbq/members", {"members": [{"agent": "fay"}]})[0] == 200
    yield p
    assert p.stop() == 0


def agent_phone(n: int, *args: str) -> subprocess.Popen[str]:
    return phone("--port", str(PHONE_BASE + 2 * n), "--agent", *args)


async def test_missed_offer_goes_to_the_next_agent_and_the_bridge_carries_audio(
        platform: Platform, pool: asyncpg.Pool, tmp_path: Path) -> None:
    ann = agent_phone(0, "--ring-only", "--seconds", "14")
    bob = agent_phone(1, "--tone", "1000", "--talk", "4", "--record", str(tmp_path / "bob"), "--seconds", "14")
    status(platform, "ann", "available")  # idle longest: offered first
    time.sleep(0.05)
    status(platform, "bob", "available")
    heard = str(tmp_path / "caller.wav")
    caller = phone("--port", str(free_port()), "--call", f"sip:500@127.0.0.1:{platform.sip_port}",
                   "--tone", "440", "--record", heard, "--seconds", "14")
    c, a, b = result(caller), result(ann), result(bob)
    assert c["answered"], c
    assert [x["answered"] for x in a["calls"]] == [False], a  # rang, never answered
    assert [x["answered"] for x in b["calls"]] == [True], b
    # Audio both ways through the caller's worker: each side hears the other's tone.
    samples, rate = read_wav(heard, skip=0.5)
    assert tone_power(samples, rate, 1000) > 20 * tone_power(samples, rate, 440)
    samples, rate = read_wav(b["calls"][0]["record"], skip=0.5)
    assert tone_power(samples, rate, 440) > 20 * tone_power(samples, rate, 1000)

    events = await events_of(pool, "test-phone", platform)
    assert names(events) == ["ENTERQUEUE", "OFFER", "RINGNOANSWER", "OFFER", "CONNECT", "COMPLETEAGENT", "HANGUP"]
    rna = next(e for e in events if e["event"] == "RINGNOANSWER")
    connect = next(e for e in events if e["event"] == "CONNECT")
    done = next(e for e in events if e["event"] == "COMPLETEAGENT")
    assert rna["agent"] == "ann" and 3.5 < rna["ring"] < 6
    assert connect["agent"] == "bob" and connect["wait"] > rna["ring"]
    assert done["agent"] == "bob" and 3 < done["talk"] < 6
    row = await pool.fetchrow("SELECT i.agent_answered_at, i.queued_at, a.login FROM interactions i "
                              "JOIN agents a ON a.id = i.agent_id WHERE i.caller_number = 'test-phone' "
                              "ORDER BY i.arrived_at DESC LIMIT 1")
    assert row["login"] == "bob" and row["agent_answered_at"] > row["queued_at"]
    # ann missed the offer: paused "no_answer" by the system, logged in her own events too
    assert (agent(platform, "ann")["status"], agent(platform, "ann")["reason"]) == ("not_ready", "no_answer")
    pause = await pool.fetchval("SELECT e.data FROM agent_events e JOIN agents a ON a.id = e.agent_id "
                                "WHERE a.login = 'ann' AND e.event = 'PAUSE' ORDER BY e.id DESC LIMIT 1")
    assert json.loads(pause)["reason"] == "no_answer"
    # bob: wrap-up (1 s), then free again
    platform.wait(lambda: agent(platform, "bob")["activity"] == "idle", 10, "bob's wrap-up to end")
    status(platform, "bob", "not_ready", "break")


async def test_callers_are_served_in_order_and_vip_first(platform: Platform, pool: asyncpg.Pool,
                                                         tmp_path: Path) -> None:
    async with pool.acquire() as conn:
        await conn.execute("DELETE FROM customers WHERE email = 'queue-test@example.com'")
        vip = await conn.fetchval("INSERT INTO customers (kind, first_name, last_name, display_name, email, "
                                  "value_tier) VALUES ('individual', 'Vera', 'Important', 'Vera Important', "
                                  "'queue-test@example.com', 'vip') RETURNING id")
        await conn.execute("INSERT INTO customer_phones (customer_id, e164) VALUES ($1, '+15550107777')", vip)
    for login in ("ann", "bob", "cid"):
        status(platform, login, "not_ready", "break")
    cid = agent_phone(2, "--tone", "1000", "--talk", "1.5", "--seconds", "30")
    callers = {}
    for number in ("+15550101111", "+15550102222", "+15550107777"):  # standard, standard, VIP last
        callers[number] = sipp_start("queue_call.xml", f"127.0.0.1:{platform.sip_port}", service="500",
                                     keys={"caller": number}, timeout=45, cwd=tmp_path)
        time.sleep(0.7)
    time.sleep(1.0)
    # Any node can see what each call is doing (its session, mirrored in Redis by the owning node).
    st, out = platform.get("/api/calls")
    waiting = {c["caller_number"]: c for c in out["items"] if c["state"] == "queued"}  # type: ignore[index]
    assert st == 200 and set(waiting) == set(callers), out
    assert all(c["queue"] == "support" and c["agent_id"] is None for c in waiting.values())
    assert waiting["+15550107777"]["customer_id"] == vip
    st, one = platform.get(f"/api/calls/{waiting['+15550101111']['interaction']}")
    assert st == 200 and one["state"] == "queued"  # type: ignore[index]
    status(platform, "cid", "available")
    for number, proc in callers.items():
        assert proc.wait(45) == 0, (number, proc.stderr.read() if proc.stderr else "")
    got = result(cid)
    assert [x["answered"] for x in got["calls"]] == [True, True, True]
    order = [x["identity"].split("sip:")[1].split("@")[0] for x in got["calls"]]  # the caller ID the agent sees
    assert order == ["+15550107777", "+15550101111", "+15550102222"]  # VIP, then by waiting time
    for number in callers:
        ev = names(await events_of(pool, number, platform))
        assert ev == ["ENTERQUEUE", "OFFER", "CONNECT", "COMPLETEAGENT", "HANGUP"], (number, ev)
    vip_enter = next(e for e in await events_of(pool, "+15550107777", platform) if e["event"] == "ENTERQUEUE")
    assert vip_enter["priority"] == 10
    status(platform, "cid", "not_ready", "break")


async def test_caller_who_hangs_up_is_logged_as_abandon_with_position_and_wait(
        platform: Platform, pool: asyncpg.Pool, tmp_path: Path) -> None:
    res = sipp("abandon_call.xml", f"127.0.0.1:{platform.sip_port}", service="500",
               keys={"caller": "+15550103333"}, extra=["-d", "3000"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    events = await events_of(pool, "+15550103333", platform, until="ABANDON")
    assert names(events) == ["ENTERQUEUE", "HANGUP", "ABANDON"]  # the hang-up is how the queue learns of it
    abandon = next(e for e in events if e["event"] == "ABANDON")
    assert abandon["position"] == 1 and 2.5 < abandon["wait"] < 5


async def test_timeout_overflows_to_voicemail(platform: Platform, pool: asyncpg.Pool, tmp_path: Path) -> None:
    heard = str(tmp_path / "heard.wav")
    caller = phone("--port", str(free_port()), "--call", f"sip:510@127.0.0.1:{platform.sip_port}", "--tone", "440",
                   "--record", heard, "--seconds", "12")
    c = result(caller)
    assert c["answered"]
    events = await events_of(pool, "test-phone", platform, until="VOICEMAIL")
    # the caller hung up to end the message: VOICEMAIL is written once the recording is closed
    assert names(events) == ["ENTERQUEUE", "EXITWITHTIMEOUT", "OVERFLOW", "HANGUP", "VOICEMAIL"]
    exit_ = next(e for e in events if e["event"] == "EXITWITHTIMEOUT")
    assert exit_["cause"] == "timeout" and 2.9 < exit_["wait"] < 4.5
    vm = next(e for e in events if e["event"] == "VOICEMAIL")
    samples, rate = read_wav(vm["path"], skip=0.3)  # the caller's message: their 440 Hz tone
    assert len(samples) > rate and tone_power(samples, rate, 440) > 20 * tone_power(samples, rate, 1000)


async def test_exit_key_overflows_to_a_queue_without_agents_which_says_goodbye(
        platform: Platform, pool: asyncpg.Pool, tmp_path: Path) -> None:
    res = sipp("info_dtmf_call.xml", f"127.0.0.1:{platform.sip_port}", service="520",
               keys={"caller": "+15550104444", "d1": "*", "d2": "1", "d3": "2", "d4": "3"}, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    events = await events_of(pool, "+15550104444", platform)
    assert names(events) == ["ENTERQUEUE", "EXITWITHKEY", "OVERFLOW", "EXITEMPTY", "OVERFLOW", "HANGUP"]
    key = next(e for e in events if e["event"] == "EXITWITHKEY")
    assert key["key"] == "*" and key["queue"] == "keyq"
    empty = next(e for e in events if e["event"] == "EXITEMPTY")
    assert empty["queue"] == "empty" and empty["cause"] == "no_agents"
    hangup = next(e for e in events if e["event"] == "HANGUP")
    assert hangup["side"] == "platform"


async def test_agent_phone_registered_at_the_front_door_is_rung_there(platform: Platform, pool: asyncpg.Pool,
                                                                       tmp_path: Path) -> None:
    st, creds = platform.send("POST", "/api/agents/dan/sip-password", {})
    assert st == 200 and creds["extension"] == "301", creds  # type: ignore[index]
    dan = phone("--port", str(PHONE_BASE + 6), "--agent", "--register", f"sip:301@127.0.0.1:{platform.sip_port}",
                f"--password={creds['password']}", "--tone", "1000", "--talk", "3", "--seconds", "12")  # type: ignore[index]
    status(platform, "eve", "available")  # first in the linear order, but her phone never registered
    status(platform, "dan", "available")
    heard = str(tmp_path / "caller.wav")
    caller = phone("--port", str(free_port()), "--call", f"sip:540@127.0.0.1:{platform.sip_port}",
                   "--tone", "440", "--record", heard, "--seconds", "10")
    c, d = result(caller), result(dan)
    assert c["answered"] and [x["answered"] for x in d["calls"]] == [True], d
    samples, rate = read_wav(heard, skip=0.5)
    assert tone_power(samples, rate, 1000) > 20 * tone_power(samples, rate, 440)
    events = await events_of(pool, "test-phone", platform)
    assert names(events) == ["ENTERQUEUE", "OFFER", "RINGNOANSWER", "OFFER", "CONNECT", "COMPLETEAGENT", "HANGUP"]
    rna = next(e for e in events if e["event"] == "RINGNOANSWER")
    assert rna["agent"] == "eve" and rna["code"] == 404  # "Agent phone not registered"
    assert next(e for e in events if e["event"] == "CONNECT")["agent"] == "dan"
    status(platform, "dan", "not_ready", "break")


def _customer(platform: Platform, port: int, tmp_path: Path, *extra: str) -> subprocess.Popen[str]:
    """A caller who presses 1 (callback) after 3 s, hangs up when told, and takes the call back."""
    return phone("--port", str(port), "--call", f"sip:550@127.0.0.1:{platform.sip_port}", "--dtmf", "1",
                 "--agent", "--tone", "440", "--record", str(tmp_path / "customer"), *extra)


async def test_callback_keeps_the_place_and_calls_the_customer_back(platform: Platform, pool: asyncpg.Pool,
                                                                     tmp_path: Path) -> None:
    start = time.time()
    fay = agent_phone(4, "--tone", "1000", "--talk", "3", "--record", str(tmp_path / "fay"), "--seconds", "30")
    customer = _customer(platform, CUSTOMER_PORT, tmp_path, "--seconds", "30")
    events = await events_of(pool, "test-phone", platform, until="CALLBACK_REQUESTED", timeout=20, since=start)
    assert names(events) == ["ENTERQUEUE", "CALLBACK_REQUESTED", "HANGUP"]  # the caller has hung up
    status(platform, "fay", "available")  # an agent is free: the customer is called back
    c, f = result(customer), result(fay)
    assert [x["answered"] for x in c["calls"]] == [True], c  # the callback
    assert [x["answered"] for x in f["calls"]] == [True], f
    assert f["calls"][0]["identity"].startswith("<sip:test-phone@")  # fay's phone shows whom she calls
    samples, rate = read_wav(c["calls"][0]["record"], skip=0.5)
    assert tone_power(samples, rate, 1000) > 20 * tone_power(samples, rate, 440)
    samples, rate = read_wav(f["calls"][0]["record"], skip=1.0)
    assert tone_power(samples, rate, 440) > 20 * tone_power(samples, rate, 1000)
    events = await events_of(pool, "test-phone", platform, until="COMPLETEAGENT", since=start)
    assert names(events) == ["ENTERQUEUE", "CALLBACK_REQUESTED", "HANGUP", "CALLBACK_ATTEMPT", "CONNECT",
                             "COMPLETEAGENT"]
    connect = next(e for e in events if e["event"] == "CONNECT")
    assert connect["agent"] == "fay" and connect["callback"] is True and connect["attempt"] == 1
    platform.wait(lambda: agent(platform, "fay")["activity"] == "idle", 10, "fay's wrap-up to end")
    status(platform, "fay", "not_ready", "break")


async def test_callback_retries_then_gives_up(platform: Platform, pool: asyncpg.Pool, tmp_path: Path) -> None:
    start = time.time()
    fay = agent_phone(4, "--tone", "1000", "--seconds", "30")
    customer = _customer(platform, CUSTOMER_PORT, tmp_path, "--ring-only", "--seconds", "28")
    await events_of(pool, "test-phone", platform, until="CALLBACK_REQUESTED", timeout=20, since=start)
    status(platform, "fay", "available")
    events = await events_of(pool, "test-phone", platform, until="CALLBACK_FAILED", timeout=30, since=start)
    c, f = result(customer), result(fay)
    assert [x["answered"] for x in c["calls"]] == [False, False]  # rang twice, never picked up
    assert [x["answered"] for x in f["calls"]] == [True, True]  # fay took both attempts
    assert names(events) == ["ENTERQUEUE", "CALLBACK_REQUESTED", "HANGUP", "CALLBACK_ATTEMPT", "CALLBACK_NOANSWER",
                             "CALLBACK_ATTEMPT", "CALLBACK_FAILED"]
    noanswer = next(e for e in events if e["event"] == "CALLBACK_NOANSWER")
    assert noanswer["attempt"] == 1 and noanswer["retry_in"] == 2
    # no wrap-up after a callback nobody answered: fay is free again at once
    assert agent(platform, "fay")["activity"] == "idle"
    status(platform, "fay", "not_ready", "break")


async def test_waiting_callers_hear_their_position(platform: Platform, pool: asyncpg.Pool, tmp_path: Path) -> None:
    first = sipp_start("abandon_call.xml", f"127.0.0.1:{platform.sip_port}", service="560",
                       keys={"caller": "+15550105555"}, extra=["-d", "9000"], timeout=30, cwd=tmp_path)
    time.sleep(0.5)
    res = sipp("abandon_call.xml", f"127.0.0.1:{platform.sip_port}", service="560",
               keys={"caller": "+15550106666"}, extra=["-d", "6000"], cwd=tmp_path)
    assert res.returncode == 0 and first.wait(30) == 0, res.stderr[-2000:]
    second = await events_of(pool, "+15550106666", platform, until="ABANDON")
    said = [e for e in second if e["event"] == "ANNOUNCE"]
    assert said and said[0]["position"] == 2  # one caller ahead
    assert said[0]["ewt_minutes"] is None  # no call completed in this queue yet: no estimate is given
    first_said = [e for e in await events_of(pool, "+15550105555", platform, until="ABANDON")
                  if e["event"] == "ANNOUNCE"]
    assert first_said and {e["position"] for e in first_said} == {1}
    prompts = [p for p in (platform.var_dir / "prompts" / "said").glob("*.wav")]
    assert prompts and all(p.stat().st_size > 8000 for p in prompts)  # spoken, then kept for the next caller


async def test_a_full_queue_turns_the_next_caller_away(platform: Platform, pool: asyncpg.Pool, tmp_path: Path) -> None:
    waiting = sipp_start("abandon_call.xml", f"127.0.0.1:{platform.sip_port}", service="570",
                         keys={"caller": "+15550108888"}, extra=["-d", "5000"], timeout=30, cwd=tmp_path)
    time.sleep(1.0)
    res = sipp("queue_call.xml", f"127.0.0.1:{platform.sip_port}", service="570", keys={"caller": "+15550109999"},
               cwd=tmp_path)  # waits for the platform's BYE after the goodbye prompt
    assert res.returncode == 0 and waiting.wait(30) == 0, res.stderr[-2000:]
    turned = await events_of(pool, "+15550109999", platform)
    assert names(turned) == ["FULL", "OVERFLOW", "HANGUP"]
    assert next(e for e in turned if e["event"] == "FULL")["max_callers"] == 1
    first = await events_of(pool, "+15550108888", platform, until="ABANDON")
    assert names(first) == ["ENTERQUEUE", "HANGUP", "ABANDON"]


async def test_callers_leave_a_queue_whose_last_agent_logs_out(platform: Platform, pool: asyncpg.Pool,
                                                              tmp_path: Path) -> None:
    status(platform, "ann", "not_ready", "break")  # logged in, not taking calls: callers wait
    caller = sipp_start("queue_call.xml", f"127.0.0.1:{platform.sip_port}", service="580",
                        keys={"caller": "+15550100077"}, timeout=40, cwd=tmp_path)
    time.sleep(2.5)
    status(platform, "ann", "logged_out")
    assert caller.wait(40) == 0, caller.stderr.read() if caller.stderr else ""  # the platform said goodbye
    events = await events_of(pool, "+15550100077", platform)
    assert names(events) == ["ENTERQUEUE", "EXITEMPTY", "OVERFLOW", "HANGUP"]
    empty = next(e for e in events if e["event"] == "EXITEMPTY")
    assert empty["cause"] == "no_agents" and 2 < empty["wait"] < 9


async def test_the_record_of_real_calls_is_rebuilt_from_the_stream_alone(platform: Platform, pool: asyncpg.Pool,
                                                                        tmp_path: Path) -> None:
    """The interaction log is derived from the stream, not written beside it: the records of this
    test's calls, deleted, come back the same from ``callcenter records rebuild``."""
    since = time.time()
    for login in ("ann", "bob"):
        status(platform, login, "not_ready", "break")
    cid = agent_phone(2, "--tone", "1000", "--talk", "1", "--seconds", "20")
    status(platform, "cid", "available")
    served = sipp_start("queue_call.xml", f"127.0.0.1:{platform.sip_port}", service="500",
                        keys={"caller": "+15550108888"}, timeout=30, cwd=tmp_path)
    assert served.wait(30) == 0, served.stderr.read() if served.stderr else ""
    assert [x["answered"] for x in result(cid)["calls"]] == [True]
    platform.wait(lambda: agent(platform, "cid")["activity"] == "idle", 10, "cid's wrap-up to end")
    status(platform, "cid", "not_ready", "break")
    left = sipp("abandon_call.xml", f"127.0.0.1:{platform.sip_port}", service="500",
                keys={"caller": "+15550109999"}, extra=["-d", "2000"], cwd=tmp_path)
    assert left.returncode == 0, left.stderr[-2000:]
    assert names(await events_of(pool, "+15550108888", platform)) == [
        "ENTERQUEUE", "OFFER", "CONNECT", "COMPLETEAGENT", "HANGUP"]
    assert "ABANDON" in names(await events_of(pool, "+15550109999", platform, until="ABANDON"))

    ids = [r["id"] for r in await pool.fetch(
        "SELECT id FROM interactions WHERE caller_number = ANY($1) AND arrived_at > to_timestamp($2)",
        ["+15550108888", "+15550109999"], since)]
    events_sql = ("SELECT interaction_id, at, event, queue_id, agent_id, data, event_id FROM interaction_events "
                  "WHERE interaction_id = ANY($1) ORDER BY id")
    agents_sql = ("SELECT e.agent_id, e.at, e.event, e.queue_id, e.data, e.event_id FROM agent_events e "
                  "JOIN agents a ON a.id = e.agent_id WHERE a.login = 'cid' AND e.at > to_timestamp($1) ORDER BY e.id")
    rows = await pool.fetch("SELECT * FROM interactions WHERE id = ANY($1) ORDER BY id", ids)
    events, agent_log = await pool.fetch(events_sql, ids), await pool.fetch(agents_sql, since)
    assert len(ids) == 2 and len(events) >= 10 and [r["event"] for r in agent_log][-1] == "PAUSE"
    await pool.execute("DELETE FROM agent_events WHERE event_id = ANY($1)", [r["event_id"] for r in agent_log])
    await pool.execute("DELETE FROM interactions WHERE id = ANY($1)", ids)  # their events go with them

    out = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "callcenter.cli", "--config", str(platform.config), "records",
                         "rebuild"], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "DATABASE_URL": platform.database_url, "REDIS_URL": platform.redis_url})
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"written: {len(events) + len(agent_log)} " in out.stdout, out.stdout
    assert await pool.fetch("SELECT * FROM interactions WHERE id = ANY($1) ORDER BY id", ids) == rows
    assert await pool.fetch(events_sql, ids) == events
    assert await pool.fetch(agents_sql, since) == agent_log


async def test_hold_and_resume_through_the_api(platform: Platform, pool: asyncpg.Pool, tmp_path: Path) -> None:
    """Hold: the caller hears the queue's hold music and the agent silence; resume: they talk again.
    The commands go to a second control-plane process that does not run the call, naming it by its
    interaction id; the record counts the hold."""
    for login in ("ann", "bob"):
        status(platform, login, "not_ready", "break")
    heard = str(tmp_path / "caller.wav")
    with api_node(platform, tmp_path / "node2") as other:
        cid = agent_phone(2, "--tone", "1000", "--talk", "9", "--record", str(tmp_path / "cid"), "--seconds", "16")
        status(platform, "cid", "available")
        caller = phone("--port", str(free_port()), "--call", f"sip:500@127.0.0.1:{platform.sip_port}",
                       "--tone", "450", "--record", heard, "--seconds", "16")
        iid, held_at, resumed_at = _hold_and_resume(other)
    c, a = result(caller), result(cid)
    assert c["answered"] and [x["answered"] for x in a["calls"]] == [True]

    # Resumed: each hears the other's tone.
    talk_c, rate = window(heard, c["record_started"], resumed_at + 0.7, resumed_at + 2.5)
    assert tone_power(talk_c, rate, 1000) > 20 * tone_power(talk_c, rate, 450)
    agent_rec, agent_started = a["calls"][0]["record"], a["calls"][0]["record_started"]
    talk_a, rate = window(agent_rec, agent_started, resumed_at + 0.7, resumed_at + 2.5)
    assert tone_power(talk_a, rate, 450) > 20 * tone_power(talk_a, rate, 1000)
    # ... and the agent hears the caller as they speak now, not what the caller's leg kept while on
    # hold, played out with the clicks of a jitter buffer discarding its way back.
    assert steadiness(talk_a, rate, 450) > 0.25, "the caller's tone broke up after the resume"
    # On hold the caller hears the hold music, not the agent; the agent hears nothing at all.
    hold_c, rate = window(heard, c["record_started"], held_at + 0.7, resumed_at - 0.2)
    assert rms(hold_c) > 300, f"the caller heard no hold music: rms {rms(hold_c):.0f}"
    assert tone_power(hold_c, rate, 1000) * 20 < tone_power(talk_c, rate, 1000), "the caller heard the agent"
    hold_a, rate = window(agent_rec, agent_started, held_at + 0.7, resumed_at - 0.2)
    assert rms(hold_a) < 100, f"the agent heard something while the caller was on hold: rms {rms(hold_a):.0f}"

    row = None
    for _ in range(50):
        row = await pool.fetchrow("SELECT hold_count, hold_seconds, hold_longest, ended_at FROM interactions "
                                  "WHERE id = $1", uuid.UUID(iid))
        if row and row["ended_at"]:
            break
        time.sleep(0.2)
    assert row is not None and row["hold_count"] == 1 and 2.5 < row["hold_seconds"] < 4.0, row
    commands = [(r["event"], json.loads(r["data"]).get("command")) for r in await pool.fetch(
        "SELECT event, data FROM interaction_events WHERE interaction_id = $1 AND event = 'COMMAND' ORDER BY id",
        uuid.UUID(iid))]
    assert commands == [("COMMAND", "hold"), ("COMMAND", "resume")]
    platform.wait(lambda: agent(platform, "cid")["activity"] == "idle", 10, "cid's wrap-up to end")
    status(platform, "cid", "not_ready", "break")


def _hold_and_resume(node: Platform) -> tuple[str, float, float]:
    """Through ``node``: find the connected call, hold it 3 s, resume it. Returns (interaction, when
    held, when resumed)."""
    iid = ""
    for _ in range(100):
        live = [c for c in node.get("/api/calls")[1]["items"]  # type: ignore[index]
                if c["caller_number"] == "test-phone" and c["state"] == "connected"]
        if live:
            iid = live[0]["interaction"]
            break
        time.sleep(0.1)
    assert iid, node.get("/api/calls")
    time.sleep(1.5)
    held_at = time.time()
    st, out = node.send("POST", f"/api/calls/{iid}/hold", {})
    assert (st, out) == (200, {"ok": True, "command": "hold"})
    node.wait(lambda: node.get(f"/api/calls/{iid}")[1]["state"] == "held", 2, "the session to be held")  # type: ignore[index]
    st, out = node.send("POST", f"/api/calls/{iid}/hold", {})
    assert st == 409 and out["reason"] == "state" and out["state"] == "held", out  # type: ignore[index]
    time.sleep(3.0)
    resumed_at = time.time()
    st, out = node.send("POST", f"/api/calls/{iid}/resume", {})
    assert (st, out) == (200, {"ok": True, "command": "resume"})
    return iid, held_at, resumed_at


async def test_a_rejected_offer_goes_to_the_next_agent_at_once(platform: Platform, pool: asyncpg.Pool,
                                                               tmp_path: Path) -> None:
    for login in ("ann", "bob", "cid"):
        status(platform, login, "not_ready", "break")
    ann = agent_phone(0, "--ring-only", "--seconds", "12")
    bob = agent_phone(1, "--tone", "1000", "--talk", "2", "--seconds", "12")
    status(platform, "ann", "available")  # idle longest: offered first
    time.sleep(0.05)
    status(platform, "bob", "available")
    since = time.time()
    caller = sipp_start("queue_call.xml", f"127.0.0.1:{platform.sip_port}", service="500",
                        keys={"caller": "+15550106666"}, timeout=30, cwd=tmp_path)
    iid = ""
    for _ in range(100):
        offered = [c for c in platform.get("/api/calls")[1]["items"]  # type: ignore[index]
                   if c["caller_number"] == "+15550106666" and c["state"] == "offering"]
        if offered:
            iid = offered[0]["interaction"]
            break
        time.sleep(0.05)
    assert iid, platform.get("/api/calls")
    time.sleep(0.5)
    aid = await pool.fetchval("SELECT id FROM agents WHERE login = 'ann'")
    st, out = platform.send("POST", f"/api/calls/{iid}/reject", {"agent_id": aid})
    assert (st, out) == (200, {"ok": True, "command": "reject"})
    assert caller.wait(30) == 0, caller.stderr.read() if caller.stderr else ""
    result(ann), result(bob)
    events = await events_of(pool, "+15550106666", platform, since=since)
    # COMMAND is written once the flow has acted on it: after the RINGNOANSWER it caused.
    assert [n for n in names(events) if n != "COMMAND"] == [
        "ENTERQUEUE", "OFFER", "RINGNOANSWER", "OFFER", "CONNECT", "COMPLETEAGENT", "HANGUP"], names(events)
    assert names(events).count("COMMAND") == 1
    rna = next(e for e in events if e["event"] == "RINGNOANSWER")
    assert rna["agent"] == "ann" and rna["cause"] == "rejected" and rna["ring"] < 2.5  # not the 4 s ring timeout
    assert next(e for e in events if e["event"] == "CONNECT")["agent"] == "bob"
    assert (agent(platform, "ann")["status"], agent(platform, "ann")["reason"]) == ("not_ready", "no_answer")
    platform.wait(lambda: agent(platform, "bob")["activity"] == "idle", 10, "bob's wrap-up to end")
    status(platform, "bob", "not_ready", "break")
