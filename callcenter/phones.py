"""Phone numbers in E.164, with Google's libphonenumber rules (PyPI ``phonenumbers``)."""

from __future__ import annotations

import phonenumbers


def to_e164(raw: str, default_region: str = "US") -> str | None:
    """Normalize a caller ID or a typed number; None when it is not a plausible phone number."""
    raw = raw.strip()
    if not raw or not any(ch.isdigit() for ch in raw):
        return None
    if raw.startswith("00"):
        raw = "+" + raw[2:]
    try:
        num = phonenumbers.parse(raw, None if raw.startswith("+") else default_region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(num):
        return None
    return phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)
