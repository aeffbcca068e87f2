"""EWT against the worked example of docs/metrics.md (hand-computed)."""

from __future__ import annotations

import pytest

from acd.ewt import announce_minutes, ewt, update_aht


def test_aht_worked_example() -> None:
    aht = None
    for handle in (300, 200, 400):
        aht = update_aht(aht, handle)
    assert aht == pytest.approx(304.0)


@pytest.mark.parametrize(("position", "idle", "seconds", "minutes"), [
    (1, 0, 304, 6),
    (4, 0, 608, 11),
    (7, 0, 912, 16),
    (1, 1, 0, 0),
    (4, 1, 304, 6),
])
def test_ewt_worked_example(position: int, idle: int, seconds: float, minutes: int) -> None:
    got = ewt(position, 304.0, staffed=3, idle_eligible=idle)
    assert got == pytest.approx(seconds)
    assert announce_minutes(got) == minutes


def test_unknown_when_nobody_is_staffed_or_nothing_completed() -> None:
    assert ewt(2, 304.0, staffed=0) is None
    assert ewt(2, None, staffed=3) is None
    assert announce_minutes(None) is None
    assert announce_minutes(59.9) == 0 and announce_minutes(60) == 1 and announce_minutes(61) == 2


def test_bad_inputs() -> None:
    with pytest.raises(ValueError):
        ewt(0, 10, 1)
    with pytest.raises(ValueError):
        update_aht(10, -1)
