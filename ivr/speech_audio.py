"""What of a caller's audio the recognizer hears, and how loud (16-bit mono PCM at 8 kHz).

- ``Gate``: nothing before the caller starts speaking but the last PRE_ROLL of it. Vosk costs CPU
  for every second it is fed, silence included, and a caller is silent through most of a prompt:
  at 50 streams the silence was most of the speech service's bill (bench/ivr). ``skipped`` is what
  was left out, so that word times still count from the start of the stream.
- ``Level``: a quiet caller brought up to a level the model hears (speech-vosk.md: -20 dBFS loses a
  quarter of the answers).
"""

from __future__ import annotations

import array

BYTES_PER_SECOND = 16000
START = 500  # a peak that is speech, not line noise (about -36 dBFS)
PRE_ROLL = 4800  # bytes (300 ms) kept before the onset: a word starts quieter than its peak
TARGET_PEAK = 0.3 * 32767  # about -10 dBFS
MAX_GAIN = 8.0


def peak(pcm: bytes) -> int:
    samples = array.array("h", pcm)
    return max(max(samples), -min(samples)) if samples else 0


class Gate:
    """Audio in as it comes, out from PRE_ROLL before the first START peak on, levelled."""

    def __init__(self) -> None:
        self.level = Level()
        self.skipped = 0  # bytes left out before the onset
        self._ring = b""
        self._open = False

    def apply(self, pcm: bytes) -> bytes:
        if not self._open:
            if peak(pcm) < START:
                ring = self._ring + pcm
                cut = max(0, len(ring) - PRE_ROLL)
                self.skipped += cut
                self._ring = ring[cut:]
                return b""
            self._open = True
            self.level.onset = len(self._ring)
            pcm, self._ring = self._ring + pcm, b""
        return self.level.apply(pcm)

    @property
    def held(self) -> bytes:
        """Audio kept back when the stream ends: the level's (a quiet caller's last words)."""
        return self.level.held

    def seconds_skipped(self) -> float:
        return self.skipped / BYTES_PER_SECOND


class Level:
    """Gain for a quiet caller: set once from the first SETTLE of speech (held back meanwhile), so
    the onset of a word is not blown up by a gain chosen on its first quiet samples; lowered later if
    it would clip. A caller already at TARGET_PEAK or louder is passed through untouched."""

    SETTLE = 3200  # bytes: 200 ms after speech starts

    def __init__(self) -> None:
        self.gain: float | None = None
        self.held = b""
        self.onset = 0  # where in ``held`` speech begins (after the gate's pre-roll)

    def apply(self, pcm: bytes) -> bytes:
        if self.gain is not None:
            return self._scale(pcm)
        self.held += pcm
        if len(self.held) - self.onset < self.SETTLE:
            return b""
        self.gain = min(MAX_GAIN, max(1.0, TARGET_PEAK / max(1, peak(self.held))))
        held, self.held = self.held, b""
        return self._scale(held)

    def _scale(self, pcm: bytes) -> bytes:
        assert self.gain is not None
        if self.gain <= 1.05 or not pcm:
            return pcm
        top = peak(pcm)
        if top * self.gain > 32767:
            self.gain = 32767 / top
        return array.array("h", (int(x * self.gain) for x in array.array("h", pcm))).tobytes()
