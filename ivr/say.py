"""Values read out as a sequence of fragment prompts (``say_*`` in sip_config/prompts.toml), the way
telephone systems have always done it: numbers, amounts of money, digit strings, dates and times,
in English (the prompts' language). Pure functions: value -> fragment names.

    number(1234)        -> one thousand two hundred thirty four   (say_1 say_thousand say_2 ...)
    money(12.5, "USD")  -> twelve dollars and fifty cents
    digits("0042")      -> zero zero four two
    date(2026-12-25)    -> December twenty-fifth twenty twenty six
    time(14:05)         -> two oh five p m
"""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
          "november", "december")
# currency -> (one major unit, several, one minor unit, several); None: no minor unit
CURRENCIES: dict[str, tuple[str, str, str | None, str | None]] = {
    "USD": ("dollar", "dollars", "cent", "cents"),
    "EUR": ("euro", "euros", "cent", "cents"),
    "GBP": ("pound", "pounds", "penny", "pence"),
    "KRW": ("won", "won", None, None),
}
MAX = 999_999_999_999


class SayError(ValueError):
    """A value that cannot be read out as the kind asked for."""


def fragments() -> set[str]:
    """Every fragment prompt the functions here can name (the prompts file must have them all)."""
    names = {f"say_{n}" for n in range(20)} | {f"say_{n}" for n in range(20, 100, 10)}
    names |= {f"say_{w}" for w in ("hundred", "thousand", "million", "billion", "minus", "point", "and", "oh",
                                    "oclock", "am", "pm", *MONTHS)}
    names |= {f"say_day_{d}" for d in range(1, 32)}
    for units in CURRENCIES.values():
        names |= {f"say_{u}" for u in units if u}
    return names


def _decimal(value: object) -> Decimal:
    try:
        d = Decimal(str(value).strip())
    except InvalidOperation:
        raise SayError(f"{value!r} is not a number") from None
    if not d.is_finite() or abs(d) > MAX:
        raise SayError(f"{value!r} is out of range")
    return d


def _whole(n: int) -> list[str]:
    if n < 20:
        return [f"say_{n}"]
    if n < 100:
        tens, ones = divmod(n, 10)
        return [f"say_{tens * 10}"] + ([f"say_{ones}"] if ones else [])
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return [f"say_{hundreds}", "say_hundred"] + (_whole(rest) if rest else [])
    out: list[str] = []
    for size, word in ((10**9, "billion"), (10**6, "million"), (10**3, "thousand")):
        if n >= size:
            top, n = divmod(n, size)
            out += _whole(top) + [f"say_{word}"]
    return out + (_whole(n) if n else [])


def number(value: object) -> list[str]:
    d = _decimal(value)
    out = ["say_minus"] if d < 0 else []
    d = abs(d)
    whole = int(d)
    out += _whole(whole)
    frac = format(d - whole, "f").partition(".")[2].rstrip("0")
    if frac:
        out += ["say_point"] + [f"say_{c}" for c in frac]
    return out


def money(value: object, currency: str = "USD") -> list[str]:
    d = _decimal(value)
    if currency.upper() not in CURRENCIES:  # no words for it: the amount alone, never another unit
        return number(d.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))
    one, many, minor_one, minor_many = CURRENCIES[currency.upper()]
    out = ["say_minus"] if d < 0 else []
    d = abs(d).quantize(Decimal("0.01") if minor_one else Decimal("1"), rounding=ROUND_HALF_UP)
    major, minor = int(d), int((d - int(d)) * 100)
    if major or not minor:
        out += _whole(major) + [f"say_{one if major == 1 else many}"]
    if minor and minor_one and minor_many:
        out += (["say_and"] if major else []) + _whole(minor) + [f"say_{minor_one if minor == 1 else minor_many}"]
    return out


def digits(value: object) -> list[str]:
    text = str(value).strip()
    if not text or len(text) > 32 or any(c not in "0123456789" for c in text):
        raise SayError(f"{value!r} is not a digit string")
    return [f"say_{c}" for c in text]


def _date(value: object) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value).strip()[:10])
    except ValueError:
        raise SayError(f"{value!r} is not a date (YYYY-MM-DD)") from None


def _year(y: int) -> list[str]:
    if 2000 <= y < 2010 or y % 100 == 0 and y % 1000 == 0:
        return _whole(y)
    high, low = divmod(y, 100)
    return _whole(high) + (["say_oh"] + _whole(low) if low < 10 and low else _whole(low) if low else ["say_hundred"])


def date(value: object, with_year: bool = True) -> list[str]:
    d = _date(value)
    return [f"say_{MONTHS[d.month - 1]}", f"say_day_{d.day}"] + (_year(d.year) if with_year else [])


def time(value: object) -> list[str]:
    if isinstance(value, dt.datetime):
        t = value.time()
    elif isinstance(value, dt.time):
        t = value
    else:
        try:
            t = dt.time.fromisoformat(str(value).strip())
        except ValueError:
            raise SayError(f"{value!r} is not a time (HH:MM)") from None
    hour = t.hour % 12 or 12
    out = _whole(hour)
    if t.minute == 0:
        out.append("say_oclock")
    elif t.minute < 10:
        out += ["say_oh", f"say_{t.minute}"]
    else:
        out += _whole(t.minute)
    return out + ["say_am" if t.hour < 12 else "say_pm"]
