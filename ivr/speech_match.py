"""Turning what Vosk heard into a menu's answer, with the rejection rules measured in
../shared/design/speech-vosk.md. A grammar does not make Vosk return only its phrases: it returns any
sequence of grammar words. So:

- the grammar is the menu's phrases plus single-syllable decoy words; a result with a decoy in it is
  off-menu speech, and no match;
- a result is accepted only if it splits cleanly into menu phrases that are all the same phrase
  ("네 네" is 네; "네 아니요" is no match);
- every word must have a confidence of at least MIN_CONFIDENCE.

With those rules false accepts of off-menu speech fell from about 47 % to 4 %, at the cost of about
one correct answer in 90.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

DECOYS = ("가", "다", "마", "사", "하", "음")
MIN_CONFIDENCE = 0.95


@dataclass(frozen=True)
class Heard:
    phrase: str | None  # the menu phrase, None when nothing matched
    text: str  # what was recognized ("" for silence)
    confidence: float  # the lowest word confidence (0 when nothing was said)


def grammar(phrases: Sequence[str]) -> list[str]:
    """The recognizer's grammar: every word of the phrases, and the decoys."""
    words: list[str] = []
    for p in phrases:
        for w in p.split():
            if w not in words:
                words.append(w)
    return words + [d for d in DECOYS if d not in words]


def match(words: Sequence[tuple[str, float]], phrases: Sequence[str],
          min_confidence: float = MIN_CONFIDENCE) -> Heard:
    """``words``: (word, confidence) as Vosk reports them (SetWords)."""
    text = " ".join(w for w, _ in words)
    if not words:
        return Heard(None, "", 0.0)
    lowest = min(c for _, c in words)
    tokens = [w for w, _ in words]
    if lowest < min_confidence or any(t in DECOYS and t not in _phrase_words(phrases) for t in tokens):
        return Heard(None, text, lowest)
    for phrase in sorted(phrases, key=lambda p: -len(p.split())):
        parts = phrase.split()
        n = len(parts)
        if len(tokens) % n == 0 and all(tokens[i:i + n] == parts for i in range(0, len(tokens), n)):
            return Heard(phrase, text, lowest)
    return Heard(None, text, lowest)


def _phrase_words(phrases: Sequence[str]) -> set[str]:
    return {w for p in phrases for w in p.split()}
