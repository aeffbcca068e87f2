"""ivr/speech_audio: the gate leaves out the silence before the first word, keeping its pre-roll and
counting what it skipped; the level brings a quiet caller up, once, from the start of the word."""

from __future__ import annotations

import array
import math

from ivr.speech_audio import MAX_GAIN, PRE_ROLL, START, TARGET_PEAK, Gate, Level, peak


def tone(ms: int, amplitude: int) -> bytes:
    n = 8 * ms
    return array.array("h", (int(amplitude * math.sin(2 * math.pi * 400 * i / 8000)) for i in range(n))).tobytes()


def silence(ms: int) -> bytes:
    return b"\x00\x00" * 8 * ms


def test_silence_is_left_out_but_the_pre_roll_and_counted() -> None:
    gate = Gate()
    out = b"".join(gate.apply(silence(100)) for _ in range(20))  # 2 s of a caller listening to the prompt
    assert out == b"" and gate.skipped == 2 * 16000 - PRE_ROLL
    loud = tone(400, 16000)  # a word at about -6 dBFS: no gain, passed on once the level has settled
    out = gate.apply(loud)
    assert out == silence(300) + loud  # 300 ms before the word, then the word
    assert gate.seconds_skipped() == (32000 - PRE_ROLL) / 16000 == 1.7
    assert gate.apply(silence(100)) == silence(100)  # after the onset every byte goes on


def test_line_noise_below_the_start_peak_does_not_open_the_gate() -> None:
    gate = Gate()
    assert gate.apply(tone(100, START - 1)) == b""
    assert gate.skipped == 0  # 100 ms is less than the pre-roll: all kept
    assert gate.apply(tone(500, START - 1)) == b"" and gate.skipped == 6 * 1600 - PRE_ROLL


def test_a_quiet_caller_is_raised_by_one_gain_chosen_on_the_first_200_ms() -> None:
    level = Level()
    quiet = tone(100, 2000)  # about -24 dBFS
    assert level.apply(quiet) == b""  # held back until 200 ms of speech
    out = level.apply(quiet)
    gain = TARGET_PEAK / peak(quiet + quiet)
    assert level.gain == gain and 1 < gain < MAX_GAIN
    assert abs(peak(out) - TARGET_PEAK) < 2
    assert abs(peak(level.apply(quiet)) - TARGET_PEAK) < 2  # the same gain afterwards


def test_a_gain_that_would_clip_is_lowered() -> None:
    level = Level()
    level.apply(tone(200, 1000))
    assert level.gain == MAX_GAIN  # very quiet: the most gain
    out = level.apply(tone(100, 8000))  # then loud: 8 x 8000 would clip
    assert level.gain == 32767 / 8000 and peak(out) <= 32767
