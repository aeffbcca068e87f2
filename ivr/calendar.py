"""Business hours and holidays (sip_config/calendars.yaml), each calendar in its own time zone.

    calendars:
      support:
        timezone: America/New_York
        hours: {mon-fri: "08:00-18:00", sat: "09:00-13:00"}
        holidays: [2026-12-25, 2027-01-01]

A day's hours may be several ranges ("08:00-12:00, 13:00-17:00"); "24h" is the whole day; a day
not named is closed. A holiday closes the whole day.
"""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_RANGE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}") from None


def _days(spec: str) -> list[int]:
    """'mon-fri' or 'sat' or 'mon,wed' -> weekday numbers (Monday 0)."""
    out: list[int] = []
    for part in spec.replace(" ", "").split(","):
        if "-" in part:
            a, b = part.split("-", 1)
            if a not in DAYS or b not in DAYS or DAYS.index(a) > DAYS.index(b):
                raise ValueError(f"bad day range {part!r} (like mon-fri)")
            out.extend(range(DAYS.index(a), DAYS.index(b) + 1))
        elif part in DAYS:
            out.append(DAYS.index(part))
        else:
            raise ValueError(f"unknown day {part!r} (one of {', '.join(DAYS)})")
    return out


def _ranges(spec: str) -> list[tuple[int, int]]:
    """'08:00-12:00, 13:00-17:00' -> minutes of the day, end excluded."""
    if spec.strip() == "24h":
        return [(0, 24 * 60)]
    out = []
    for part in spec.replace(" ", "").split(","):
        m = _RANGE.match(part)
        if not m:
            raise ValueError(f"bad hours {part!r} (like 08:00-18:00)")
        start, end = int(m[1]) * 60 + int(m[2]), int(m[3]) * 60 + int(m[4])
        if end <= start or end > 24 * 60:
            raise ValueError(f"hours {part!r} end before they start")
        out.append((start, end))
    return out


class Calendar(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    timezone: str = "UTC"
    hours: dict[str, str] = Field(default_factory=dict)
    holidays: list[dt.date] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        zone(v)
        return v

    @field_validator("hours")
    @classmethod
    def _hours(cls, v: dict[str, str]) -> dict[str, str]:
        seen: set[int] = set()
        for days, hours in v.items():
            for d in _days(days):
                if d in seen:
                    raise ValueError(f"{DAYS[d]} has hours twice")
                seen.add(d)
            _ranges(hours)
        return v

    def week(self) -> dict[int, list[tuple[int, int]]]:
        out: dict[int, list[tuple[int, int]]] = {}
        for days, hours in self.hours.items():
            for d in _days(days):
                out[d] = _ranges(hours)
        return out

    def local(self, now: dt.datetime) -> dt.datetime:
        return now.astimezone(zone(self.timezone))

    def is_holiday(self, now: dt.datetime) -> bool:
        return self.local(now).date() in self.holidays

    def is_open(self, now: dt.datetime) -> bool:
        t = self.local(now)
        if t.date() in self.holidays:
            return False
        minute = t.hour * 60 + t.minute
        return any(a <= minute < b for a, b in self.week().get(t.weekday(), []))


class Calendars(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    calendars: dict[str, Calendar] = Field(default_factory=dict)
