from __future__ import annotations

import pytest

from callcenter.phones import to_e164


@pytest.mark.parametrize(("raw", "region", "want"), [
    ("+1 (415) 555-2671", "US", "+14155552671"),
    ("415-555-2671", "US", "+14155552671"),
    ("004930123456", "US", "+4930123456"),
    ("07911 123456", "GB", "+447911123456"),
    ("anonymous", "US", None),
    ("", "US", None),
    ("12", "US", None),
])
def test_to_e164(raw: str, region: str, want: str | None) -> None:
    assert to_e164(raw, region) == want
