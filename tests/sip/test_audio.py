"""pjsua2 test phones: a caller hears the prompt's audio; a second phone that the platform calls is
bridged with the first and audio passes both ways (each side hears the other's tone)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from callcenter.embedded import free_port
from tests.conftest import ROOT, Platform, Stores, start_platform
from tests.sip.audio import read_wav, rms, tone_power
from tests.sip.phones import phone, result

CALLEE_PORT = 17090 + (hash(ROOT) % 50) * 4


@pytest.fixture(scope="module")
def platform(stores: Stores, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    tmp = tmp_path_factory.mktemp("audio")
    plan = tmp / "dialplan.toml"
    plan.write_text(f"""
[[route]]
number = "200"
name = "bridge-to-phone"
action = "bridge"
prompt = "connecting"
target = "sip:test-phone@127.0.0.1:{CALLEE_PORT}"
ring_timeout = 10.0
fallback_prompt = "unavailable"

[[route]]
number = "300"
name = "loop"
action = "loop"
prompt = "hold_loop"
""")
    p = start_platform(stores, tmp, front_door="none", dialplan=plan)
    yield p
    assert p.stop() == 0


def test_caller_hears_the_prompt(platform: Platform, tmp_path: Path) -> None:
    rec = str(tmp_path / "heard.wav")
    a = phone("--port", str(free_port()), "--call", f"sip:300@127.0.0.1:{platform.sip_port}", "--record", rec,
              "--seconds", "4")
    r = result(a)
    assert r["answered"], r
    samples, _ = read_wav(rec, skip=0.5)
    assert len(samples) > 8000 * 2, "less than 2 s recorded"
    level = rms(samples)
    assert level > 300, f"the prompt was not heard (RMS {level:.0f})"


def test_bridge_passes_audio_both_ways(platform: Platform, tmp_path: Path) -> None:
    heard_by_caller = str(tmp_path / "caller.wav")
    heard_by_callee = str(tmp_path / "callee.wav")
    b = phone("--port", str(CALLEE_PORT), "--answer", "--tone", "1000", "--record", heard_by_callee,
              "--seconds", "15")
    a = phone("--port", str(free_port()), "--call", f"sip:200@127.0.0.1:{platform.sip_port}", "--tone", "440",
              "--record", heard_by_caller, "--seconds", "7")
    ra, rb = result(a), result(b)
    assert ra["answered"] and rb["answered"], (ra, rb)
    # The caller hung up; the platform then hung up the callee.
    assert rb["disconnected"], rb

    s, rate = read_wav(heard_by_caller, last=2.0)
    p440, p1000 = tone_power(s, rate, 440), tone_power(s, rate, 1000)
    assert p1000 > 20 * p440, f"caller does not hear the callee's 1000 Hz tone ({p1000:.0f} vs {p440:.0f})"
    s, rate = read_wav(heard_by_callee, skip=1.0)
    p440, p1000 = tone_power(s, rate, 440), tone_power(s, rate, 1000)
    assert p440 > 20 * p1000, f"callee does not hear the caller's 440 Hz tone ({p440:.0f} vs {p1000:.0f})"


async def test_bridge_is_in_the_record(platform: Platform, pool) -> None:  # type: ignore[no-untyped-def]
    row = await pool.fetchrow("SELECT * FROM interactions WHERE route = 'bridge-to-phone' ORDER BY arrived_at "
                              "DESC LIMIT 1")
    assert row is not None and row["ended_at"] is not None
    names = [r["event"] for r in await pool.fetch(
        "SELECT event FROM interaction_events WHERE interaction_id = $1 ORDER BY at, id", row["id"])]
    for expected in ("DID", "ANSWER", "DIAL", "DIAL_ANSWER", "BRIDGE", "HANGUP", "DIAL_HANGUP"):
        assert expected in names, (expected, names)
    assert names.index("DIAL") < names.index("DIAL_ANSWER") < names.index("BRIDGE")
    assert row["disconnect_side"] == "caller"
