"""Evaluating a condition node's tests (ivr/flow_model.Condition) against the call's context, the
calendars, the clock and the queues' state. A test that cannot be answered (the queue state is not
reachable) is false, so the flow takes its ``else``."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from ivr import flow_model as fm
from ivr.calendar import DAYS, Calendars, zone
from ivr.context import CallContext
from ivr.services import Queues

log = logging.getLogger("ivr.conditions")


class Judge:
    def __init__(self, ctx: CallContext, calendars: Calendars, queues: Queues, timezone: str, now: dt.datetime):
        self.ctx = ctx
        self.calendars = calendars
        self.queues = queues
        self.timezone = timezone
        self.now = now

    async def holds(self, c: fm.Condition) -> bool:
        if c.var is not None:
            return _compare(self.ctx.get(c.var), c)
        if c.all is not None:
            return all([await self.holds(x) for x in c.all])
        if c.any is not None:
            for x in c.any:
                if await self.holds(x):
                    return True
            return False
        if c.not_ is not None:
            return not await self.holds(c.not_)
        if c.open is not None:
            return self.calendars.calendars[c.open].is_open(self.now)
        if c.holiday is not None:
            return self.calendars.calendars[c.holiday].is_holiday(self.now)
        if c.time is not None:
            t = self.now.astimezone(zone(c.time.timezone or self.timezone))
            return DAYS[t.weekday()] in c.time.days and c.time.from_ <= t.time().replace(tzinfo=None) < c.time.to
        try:
            if c.agents_available is not None:
                return await self.queues.agents_available(c.agents_available) > 0
            if c.wait_under is not None:
                wait = await self.queues.expected_wait(c.wait_under.queue)
                return wait is not None and wait < c.wait_under.seconds
        except Exception as exc:  # noqa: BLE001 - a state that cannot be read is a test that fails
            log.warning("queue state unavailable: %s", exc)
            return False
        raise AssertionError(f"condition without a test: {c}")


def _number(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _compare(value: Any, c: fm.Condition) -> bool:
    if c.exists is not None:
        return (value not in (None, "")) == c.exists
    if c.equals is not None:
        return value == c.equals or str(value) == str(c.equals)
    if c.in_ is not None:
        return value in c.in_ or str(value) in [str(x) for x in c.in_]
    n = _number(value)
    if n is None:
        return False
    for op, limit in (("gt", c.gt), ("ge", c.ge), ("lt", c.lt), ("le", c.le)):
        if limit is not None:
            return {"gt": n > limit, "ge": n >= limit, "lt": n < limit, "le": n <= limit}[op]
    return False
