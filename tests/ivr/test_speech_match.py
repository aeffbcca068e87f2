"""The rejection rules for what Vosk heard (ivr/speech_match.py, ../shared/design/speech-vosk.md)."""

from __future__ import annotations

from ivr.speech_match import DECOYS, grammar, match

MENU = ["네", "아니요", "라디오 켜"]


def test_the_grammar_is_the_menu_s_words_and_the_decoys() -> None:
    assert grammar(MENU) == ["네", "아니요", "라디오", "켜", *DECOYS]


def test_a_menu_phrase_said_once_or_repeated_is_accepted() -> None:
    assert match([("네", 0.99)], MENU).phrase == "네"
    assert match([("네", 1.0), ("네", 0.97)], MENU).phrase == "네"
    assert match([("라디오", 1.0), ("켜", 0.99)], MENU).phrase == "라디오 켜"


def test_mixed_phrases_decoys_low_confidence_and_silence_are_no_match() -> None:
    assert match([("네", 1.0), ("아니요", 1.0)], MENU).phrase is None
    assert match([("네", 1.0), ("가", 1.0)], MENU).phrase is None
    unsure = match([("네", 0.94)], MENU)
    assert unsure.phrase is None and unsure.confidence == 0.94 and unsure.text == "네"
    assert match([("라디오", 1.0)], MENU).phrase is None  # half a phrase
    assert match([], MENU) == match([], MENU) and match([], MENU).text == ""
