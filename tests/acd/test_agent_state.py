"""The agent state table: named transitions, refusals, and a way out of every system activity."""

from __future__ import annotations

import pytest

from acd.agent_state import (
    NO_ANSWER,
    ON_DEADLINE,
    TABLE,
    Activity,
    AgentState,
    InvalidTransition,
    Params,
    Status,
    apply,
)


def logged_in(now: float = 0.0) -> AgentState:
    return apply(AgentState(7), "login", now)


def test_login_reserve_connect_wrap_up_and_back() -> None:
    s = logged_in()
    assert s.routable and s.version == 1
    s = apply(s, "reserve", 10, Params(ring_timeout=15, call_id="c1"))
    assert (s.activity, s.call_id, s.deadline) == (Activity.RESERVED, "c1", 25)
    assert not s.routable
    s = apply(s, "connect", 12)
    assert s.activity is Activity.ON_CALL and s.deadline > 12
    s = apply(s, "end_call", 100, Params(wrap_up=20))
    assert (s.activity, s.deadline) == (Activity.WRAP_UP, 120)
    s = apply(s, "extend_wrap_up", 105, Params(extend_by=30, wrap_extend_max=60))
    assert s.deadline == 150
    s = apply(s, "end_wrap_up", 110)
    assert s.routable and s.call_id == "" and s.deadline == 0 and s.version == 6


def test_unanswered_offer_pauses_the_agent_with_no_answer() -> None:
    s = apply(logged_in(), "reserve", 0, Params(call_id="c1"))
    s = apply(s, "ring_no_answer", 15)
    assert (s.status, s.reason, s.activity) == (Status.NOT_READY, NO_ANSWER, Activity.IDLE)
    with pytest.raises(InvalidTransition, match="not available"):
        apply(s, "reserve", 16, Params(call_id="c2"))


def test_wrap_up_extension_is_limited() -> None:
    s = apply(apply(apply(logged_in(), "reserve", 0, Params(call_id="c")), "connect", 1), "end_call", 2,
              Params(wrap_up=10))
    s = apply(s, "extend_wrap_up", 3, Params(extend_by=30, wrap_extend_max=40))
    with pytest.raises(InvalidTransition, match="at most"):
        apply(s, "extend_wrap_up", 4, Params(extend_by=30, wrap_extend_max=40))


def test_no_wrap_up_goes_straight_to_idle() -> None:
    s = apply(apply(apply(logged_in(), "reserve", 0, Params(call_id="c")), "connect", 1), "end_call", 2,
              Params(wrap_up=0))
    assert s.routable


@pytest.mark.parametrize(("event", "why"), [
    ("connect", "not allowed while idle"),
    ("end_call", "not allowed while idle"),
    ("login", "already logged in"),
])
def test_refusals_name_the_reason(event: str, why: str) -> None:
    with pytest.raises(InvalidTransition, match=why):
        apply(logged_in(), event, 1)


def test_not_ready_needs_a_reason_and_logged_out_agents_cannot_be_reserved() -> None:
    with pytest.raises(InvalidTransition, match="reason code"):
        apply(logged_in(), "not_ready", 1)
    with pytest.raises(InvalidTransition, match="logged out"):
        apply(AgentState(1), "reserve", 1, Params(call_id="c"))


def test_every_system_activity_has_a_deadline_and_a_way_out() -> None:
    for activity, event in ON_DEADLINE.items():
        assert (event, activity) in TABLE, (activity, event)
    s = apply(logged_in(), "reserve", 0, Params(call_id="c"))
    assert s.deadline > 0
    s = apply(s, "connect", 1)
    assert s.deadline > 0
    s = apply(s, "end_call", 2, Params(wrap_up=5))
    assert s.deadline > 0
    # An agent who logs out during wrap-up is still released by the timer.
    s = apply(s, "logout", 3)
    s = apply(s, ON_DEADLINE[s.activity], 8)
    assert (s.status, s.activity, s.deadline) == (Status.LOGGED_OUT, Activity.IDLE, 0.0)
