"""The call session's table: the states a call's events take it through, and what is refused."""

from __future__ import annotations

import pytest

from bus import call_session as cs
from bus import events as ev

IID = "00000000-0000-0000-0000-0000000000c5"


def run(events: list[ev.CallEvent]) -> cs.CallSession:
    first = events[0]
    assert isinstance(first, ev.CallArrived)
    s = cs.opened(first)
    for e in events[1:]:
        if (t := cs.transition_for(e)) is not None:
            s = cs.apply(s, t, e)
    return s


def test_a_queued_call_offered_twice_then_connected() -> None:
    arrived = ev.CallArrived(interaction=IID, at=10.0, caller_number="+15550001", media_call="w1-1", worker="w1",
                             node="n1", route="support")
    s = run([arrived, ev.CallAnswered(interaction=IID, at=10.5)])
    assert (s.state, s.since, s.node, s.media_call) == (cs.CallState.IVR, 10.5, "n1", "w1-1")
    s = run([arrived, ev.CallAnswered(interaction=IID, at=10.5),
             ev.EnterQueue(interaction=IID, at=11.0, queue="support", position=1),
             ev.Offer(interaction=IID, at=12.0, queue="support", agents=[7]),
             ev.RingNoAnswer(interaction=IID, at=27.0, queue="support", agent_id=7, ring=15.0)])
    assert (s.state, s.queue, s.agent_id, s.queued_at, s.since) == (cs.CallState.QUEUED, "support", None, 11.0, 27.0)
    s = cs.apply(s, "offer", ev.Offer(interaction=IID, at=28.0, queue="support", agents=[8]))
    s = cs.apply(s, "connect", ev.Connect(interaction=IID, at=30.0, queue="support", agent_id=8))
    assert (s.state, s.agent_id, s.connected_at) == (cs.CallState.CONNECTED, 8, 30.0)
    s = cs.apply(s, "hangup", ev.Hangup(interaction=IID, at=90.0, cause="normal_clearing"))
    assert (s.state, s.since, s.version) == (cs.CallState.ENDED, 90.0, 7)


def test_ring_all_names_no_single_agent_and_an_exit_returns_to_the_ivr() -> None:
    s = run([ev.CallArrived(interaction=IID, at=1.0), ev.CallAnswered(interaction=IID, at=1.0),
             ev.EnterQueue(interaction=IID, at=2.0, queue="sales", position=1),
             ev.Offer(interaction=IID, at=3.0, queue="sales", agents=[1, 2, 3])])
    assert (s.state, s.agent_id) == (cs.CallState.OFFERING, None)
    s = cs.apply(s, "leave", ev.ExitWithTimeout(interaction=IID, at=60.0, queue="sales", cause="timeout"))
    assert (s.state, s.queue) == (cs.CallState.IVR, "sales")


def test_a_leg_s_events_and_events_after_the_end_change_nothing() -> None:
    assert cs.transition_for(ev.Hangup(interaction=IID, call="w1-2", cause="normal_clearing")) is None
    assert cs.transition_for(ev.Dtmf(interaction=IID, digit="5")) is None
    ended = run([ev.CallArrived(interaction=IID), ev.Hangup(interaction=IID, cause="normal_clearing")])
    assert ended.state is cs.CallState.ENDED
    with pytest.raises(cs.InvalidTransition):
        cs.apply(ended, "connect", ev.Connect(interaction=IID, queue="q", agent_id=1))
    with pytest.raises(cs.InvalidTransition):  # a call that was never queued cannot be offered
        cs.apply(run([ev.CallArrived(interaction=IID)]), "offer", ev.Offer(interaction=IID, queue="q", agents=[1]))


def test_every_state_is_entered_by_some_transition_and_only_ended_is_final() -> None:
    entered = {to for _, to in cs.TABLE.values()} | {cs.CallState.ARRIVING}
    assert entered == set(cs.CallState)
    for state in cs.CallState:
        leaving = [t for t, (src, _) in cs.TABLE.items() if state in src]
        assert (leaving == []) == (state is cs.CallState.ENDED), state
