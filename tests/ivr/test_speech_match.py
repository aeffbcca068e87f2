"""The rejection rules for what Vosk heard (ivr/speech_match.py; measured by bench/speech_reject)."""

from __future__ import annotations

from ivr.speech_match import DECOYS, grammar, jamo, match, near, with_decoys

MENU = ["네", "아니요", "라디오 켜"]


def test_the_grammar_is_the_menu_s_words_then_the_decoys_that_sound_like_none_of_them() -> None:
    assert grammar(MENU) == ["네", "아니요", "라디오", "켜"]
    words = with_decoys(grammar(MENU), DECOYS)
    assert words[:4] == ["네", "아니요", "라디오", "켜"]
    assert set(words[4:]) == {d for d in DECOYS if not any(near(d, w) for w in words[:4])}
    assert "아" not in words and "있어요" not in words  # 아니요 holds 아; 있어요 ends as 아니요 does
    assert "사람" in words


def test_near_is_held_in_same_first_or_last_syllable_or_few_jamo_edits() -> None:
    assert near("아", "아니요") and near("이거", "이")
    assert near("여기", "여덟") and near("없어요", "아니요")
    assert near("농구", "동구")  # one jamo of five differs
    assert not near("사람", "네") and not near("커피", "예약")
    assert near("no", "go") and not near("yes", "you") and not near("cancel", "balance")  # letters


def test_jamo_splits_syllables_into_initial_vowel_and_final() -> None:
    assert jamo("네") == ["i2", "v5"]
    assert jamo("없") == ["i11", "v4", "f18"]
    assert jamo("ok") == ["o", "k"]


def test_a_menu_phrase_said_once_or_repeated_is_accepted() -> None:
    assert match([("네", 0.99)], MENU).phrase == "네"
    assert match([("네", 1.0), ("네", 0.97)], MENU).phrase == "네"
    assert match([("라디오", 1.0), ("켜", 0.6)], MENU).phrase == "라디오 켜"


def test_mixed_phrases_decoys_low_confidence_and_silence_are_no_match() -> None:
    assert match([("네", 1.0), ("아니요", 1.0)], MENU).phrase is None
    assert match([("네", 1.0), ("사람", 1.0)], MENU).phrase is None
    assert match([("사람", 1.0)], MENU).phrase is None
    unsure = match([("네", 0.45)], MENU)
    assert unsure.phrase is None and unsure.confidence == 0.45 and unsure.text == "네"
    assert match([("라디오", 1.0)], MENU).phrase is None  # half a phrase
    assert match([], MENU) == match([], MENU) and match([], MENU).text == ""
