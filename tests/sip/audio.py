"""Audio checks for recordings made by test phones (pure Python: RMS and Goertzel tone power)."""

from __future__ import annotations

import math
import struct
import wave


def read_wav(path: str, skip: float = 0.0, last: float | None = None) -> tuple[list[int], int]:
    with wave.open(path, "rb") as w:
        rate, width, n = w.getframerate(), w.getsampwidth(), w.getnframes()
        assert width == 2 and w.getnchannels() == 1, "test phones record 16-bit mono"
        samples = list(struct.unpack(f"<{n}h", w.readframes(n)))
    start = int(skip * rate)
    if last is not None:
        start = max(start, len(samples) - int(last * rate))
    return samples[start:], rate


def window(rec: str, started: float, start: float, end: float) -> tuple[list[int], int]:
    """The recording ``rec`` (begun at wall-clock ``started``) between two wall-clock times."""
    samples, rate = read_wav(rec)
    a, b = int((start - started) * rate), int((end - started) * rate)
    assert 0 <= a < b <= len(samples), (a, b, len(samples))
    return samples[a:b], rate


def rms(samples: list[int]) -> float:
    return math.sqrt(sum(s * s for s in samples) / len(samples)) if samples else 0.0


def tone_power(samples: list[int], rate: int, hz: float) -> float:
    """Goertzel power of one frequency, normalized by length."""
    coeff = 2 * math.cos(2 * math.pi * hz / rate)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coeff * s1 - s2, s1
    return (s1 * s1 + s2 * s2 - coeff * s1 * s2) / max(1, len(samples)) ** 2


def steadiness(samples: list[int], rate: int, hz: float, piece: float = 0.25) -> float:
    """The power of ``hz`` in the weakest ``piece`` of the samples over that in the strongest: near 1
    for a clean tone, near 0 where it breaks up (frames dropped or repeated shift its phase)."""
    n = int(piece * rate)
    powers = [tone_power(samples[i:i + n], rate, hz) for i in range(0, len(samples) - n + 1, n)]
    return min(powers) / max(powers) if powers and max(powers) > 0 else 0.0
