"""Estimated wait time (EWT) for queue announcements. The formula is documented in docs/metrics.md
(section "Estimated wait time"); keep the two in step."""

from __future__ import annotations

import math


def update_aht(previous: float | None, handle_seconds: float, alpha: float = 0.2) -> float:
    """Average handle time (talk + wrap-up) as an exponentially weighted mean of completed calls:
    AHT' = AHT + alpha x (H - AHT); the first completed call sets it."""
    if handle_seconds < 0:
        raise ValueError("handle time cannot be negative")
    if previous is None:
        return handle_seconds
    return previous + alpha * (handle_seconds - previous)


def ewt(position: int, aht: float | None, staffed: int, idle_eligible: int = 0) -> float | None:
    """Seconds the caller at 1-based ``position`` can expect to wait.

    EWT = 0                              if an eligible agent is idle and position <= idle agents
    EWT = ceil((p - I) / N) x AHT        otherwise, with N staffed agents (I idle ones serve first)
    None when it cannot be estimated (no staffed agent, or no completed call yet)."""
    if position < 1:
        raise ValueError("position is 1-based")
    if position <= idle_eligible:
        return 0.0
    if staffed <= 0 or aht is None:
        return None
    rounds = math.ceil((position - idle_eligible) / staffed)
    return rounds * aht


def announce_minutes(seconds: float | None) -> int | None:
    """What the caller hears: whole minutes, rounded up; 0 means "less than a minute"; None: say nothing."""
    if seconds is None:
        return None
    return 0 if seconds < 60 else math.ceil(seconds / 60)
