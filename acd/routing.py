"""Routing steps: skill requirements that widen while a caller waits (as data, like Amazon Connect
routing criteria or Twilio workflows).

    steps = [Step(0, {"billing": 4}), Step(30, {"billing": 2}), Step(60, {})]

During the first 30 s only agents with billing >= 4 qualify, then billing >= 2, then anyone in the
queue. What the IVR attached to the call (language, intent) is added to every step.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Step:
    after: float  # seconds of waiting from which this step applies
    require: dict[str, int] = field(default_factory=dict)  # skill -> minimum proficiency 1..5


class RoutingError(ValueError):
    pass


def validate(steps: list[Step]) -> list[Step]:
    if not steps:
        raise RoutingError("a queue needs at least one routing step")
    if steps[0].after != 0:
        raise RoutingError("the first routing step must apply from 0 s")
    for a, b in zip(steps, steps[1:], strict=False):
        if b.after <= a.after:
            raise RoutingError(f"routing steps must be in increasing time: {a.after} then {b.after}")
    for s in steps:
        for skill, level in s.require.items():
            if not 1 <= level <= 5:
                raise RoutingError(f"step at {s.after:g} s: {skill} proficiency must be 1..5, got {level}")
    return steps


def requirements(steps: list[Step], waited: float, attached: dict[str, int] | None = None) -> dict[str, int]:
    """The skills (with minimum proficiency) a caller who waited ``waited`` seconds needs."""
    current = steps[0]
    for s in steps:
        if s.after <= waited:
            current = s
    req = dict(current.require)
    for skill, level in (attached or {}).items():
        req[skill] = max(level, req.get(skill, 0))
    return req


def eligible(agent_skills: dict[str, int], req: dict[str, int]) -> bool:
    return all(agent_skills.get(skill, 0) >= level for skill, level in req.items())


def next_change(steps: list[Step], waited: float) -> float | None:
    """Seconds until the requirements widen next (when to look for agents again), or None."""
    later = [s.after for s in steps if s.after > waited]
    return min(later) - waited if later else None
