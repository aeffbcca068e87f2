"""Prompts: generated from the texts in sip_config/prompts.toml at install time.

With Debian espeak-ng and sox: speech, 8 kHz mono 16-bit, normalized to -3 dBFS. Without them: a
short tone sequence per prompt (written by this module with the wave module) and a warning, so the
platform still runs on a machine that has only Python.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
import shutil
import struct
import subprocess
import tomllib
import wave
from dataclasses import dataclass
from pathlib import Path

from callcenter.config import ConfigError

log = logging.getLogger("callcenter.prompts")
RATE = 8000


@dataclass(frozen=True)
class PromptSet:
    texts: dict[str, str]
    voice: str
    speed: int
    out_dir: Path

    def path(self, name: str) -> str:
        if name not in self.texts:
            raise KeyError(f"unknown prompt {name!r}")
        return str(self.out_dir / f"{name}.wav")

    def spoken(self, text: str) -> str:
        """A prompt for a text known only at run time (a queue position, a wait): made on first use
        (~0.1 s; call it in a thread) and kept under said/ for the next caller."""
        use_speech = speech_tools()
        digest = hashlib.sha1(f"{use_speech}|{self.voice}|{self.speed}|{text}".encode()).hexdigest()[:20]
        target = self.out_dir / "said" / f"{digest}.wav"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f"{digest}.{os.getpid()}.wav")
            if use_speech:
                _speak(text, self.voice, self.speed, tmp)
            else:
                _tones(text, tmp)
            tmp.replace(target)
        return str(target)


    def joined(self, names: list[str]) -> str:
        """One prompt made of several (a value read out, ivr/say.py): their audio one after the other,
        made on first use (~1 ms; call it in a thread) and kept under said/."""
        paths = [self.path(n) for n in names]
        stamp = "|".join(f"{p}:{os.stat(p).st_mtime_ns}" for p in paths)  # a remade part makes a new whole
        digest = hashlib.sha1(stamp.encode()).hexdigest()[:20]
        target = self.out_dir / "said" / f"j{digest}.wav"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f"j{digest}.{os.getpid()}.wav")
            with wave.open(str(tmp), "wb") as out:
                out.setnchannels(1)
                out.setsampwidth(2)
                out.setframerate(RATE)
                for p in paths:
                    with wave.open(p, "rb") as part:
                        out.writeframes(part.readframes(part.getnframes()))
            tmp.replace(target)
        return str(target)


def load_prompts(path: Path, out_dir: Path) -> PromptSet:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such prompts file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    texts = data.get("prompts")
    if not isinstance(texts, dict) or not all(isinstance(v, str) and v.strip() for v in texts.values()):
        raise ConfigError(f"{path}: [prompts] must map names to non-empty texts")
    voice = data.get("voice", {})
    return PromptSet(texts, str(voice.get("espeak_voice", "en-us")), int(voice.get("speed", 160)), out_dir)


@functools.cache
def speech_tools() -> bool:
    return bool(shutil.which("espeak-ng") and shutil.which("sox"))


def build(prompts: PromptSet, force: bool = False) -> list[str]:
    """Write every prompt whose text (or generator) changed; returns the names written."""
    prompts.out_dir.mkdir(parents=True, exist_ok=True)
    use_speech = speech_tools()
    if not use_speech:
        log.warning("espeak-ng/sox not installed: prompts are tone sequences (install: apt-get install "
                    "espeak-ng sox, then `callcenter prompts --force`)")
    written = []
    for name, text in prompts.texts.items():
        target = Path(prompts.path(name))
        stamp = target.with_suffix(".sha1")
        digest = hashlib.sha1(f"{use_speech}|{prompts.voice}|{prompts.speed}|{text}".encode()).hexdigest()
        if not force and target.exists() and stamp.exists() and stamp.read_text() == digest:
            continue
        if use_speech:
            _speak(text, prompts.voice, prompts.speed, target, pad=SAY_PAD if name.startswith("say_") else PAD)
        else:
            _tones(text, target)
        stamp.write_text(digest)
        written.append(name)
    return written


PAD = ("pad", "0.1", "0.2")  # sox effects after the level: silence before and after a prompt
# A fragment of a value read out (say_*) is joined to others: its own silence is cut off both ends.
SAY_PAD = ("silence", "1", "0.01", "1%", "reverse", "silence", "1", "0.01", "1%", "reverse", "pad", "0", "0.04")


def _speak(text: str, voice: str, speed: int, target: Path, pad: tuple[str, ...] = PAD) -> None:
    tmp = target.with_suffix(".tmp.wav")
    raw = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", text],
                         check=True, capture_output=True).stdout
    subprocess.run(["sox", "-D", "-t", "wav", "-", "-r", str(RATE), "-c", "1", "-b", "16", "-e", "signed-integer",
                    str(tmp), "norm", "-3", *pad], input=raw, check=True, capture_output=True)
    tmp.replace(target)


def _tones(text: str, target: Path) -> None:
    """A recognizable, non-silent stand-in: one 120 ms tone per word, pitch from the word."""
    frames = bytearray()
    for word in text.split():
        freq = 400 + (sum(map(ord, word)) % 8) * 75
        for i in range(int(RATE * 0.12)):
            frames += struct.pack("<h", int(12000 * math.sin(2 * math.pi * freq * i / RATE)))
        frames += b"\x00\x00" * int(RATE * 0.04)
    with wave.open(str(target), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(bytes(frames))
