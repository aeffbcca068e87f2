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


def _connected(at: float = 10.0) -> cs.CallSession:
    return run([ev.CallArrived(interaction=IID, at=1.0), ev.CallAnswered(interaction=IID, at=1.0),
                ev.EnterQueue(interaction=IID, at=2.0, queue="support", position=1),
                ev.Offer(interaction=IID, at=3.0, queue="support", agents=[7]),
                ev.Connect(interaction=IID, at=at, queue="support", agent_id=7)])


def _step(s: cs.CallSession, e: ev.CallEvent) -> cs.CallSession:
    t = cs.transition_for(e)
    assert t is not None, e.NAME
    return cs.apply(s, t, e)


def test_a_consultation_counts_as_a_hold_and_a_conference_s_time_is_kept() -> None:
    s = _step(_connected(), ev.CommandApplied(interaction=IID, at=20.0, command="hold"))
    # held at 20, the consultation from 25 keeps the same hold going; the conference at 30 ends it
    s = _step(s, ev.Consult(interaction=IID, at=25.0, queue="support", agent_id=7, kind="agent", target="9",
                            to_agent_id=9))
    assert (s.state, s.holds, s.consult) == (cs.CallState.CONSULTING, 1, {"kind": "agent", "target": "9",
                                                                         "to_agent_id": 9})
    s = _step(s, ev.Conference(interaction=IID, at=30.0, queue="support", agent_id=7, to_agent_id=9))
    assert (s.state, s.holds, s.held_total, s.held_since) == (cs.CallState.CONFERENCED, 1, 10.0, 0.0)
    s = _step(s, ev.AttendedTransfer(interaction=IID, at=42.5, queue="support", agent_id=7, kind="agent",
                                     target="9", to_agent_id=9, talk=32.5, conference=12.5))
    assert (s.state, s.agent_id, s.conference_seconds, s.consult, s.connected_at) == (
        cs.CallState.CONNECTED, 9, 12.5, None, 42.5)
    assert s.transfers == ({"mode": "attended", "kind": "agent", "target": "9", "from_agent": 7, "to_agent": 9,
                            "at": 42.5},)


def test_a_cancelled_or_failed_consultation() -> None:
    s = _step(_connected(), ev.Consult(interaction=IID, at=20.0, queue="support", agent_id=7, kind="number",
                                       target="+15550100"))
    failed = _step(s, ev.ConsultEnd(interaction=IID, at=50.0, queue="support", result="failed", cause="no_answer"))
    assert (failed.state, failed.holds, failed.held_since) == (cs.CallState.HELD, 1, 20.0)  # still on hold
    cancelled = _step(s, ev.ConsultEnd(interaction=IID, at=26.0, queue="support", result="cancelled"))
    assert (cancelled.state, cancelled.held_total, cancelled.held_longest) == (cs.CallState.CONNECTED, 6.0, 6.0)


def test_blind_transfers_to_a_queue_an_agent_and_a_number() -> None:
    s = _step(_connected(), ev.BlindTransfer(interaction=IID, at=20.0, queue="support", agent_id=7, kind="queue",
                                             target="billing"))
    assert (s.state, s.agent_id) == (cs.CallState.TRANSFERRING, None)
    s = _step(s, ev.EnterQueue(interaction=IID, at=20.1, queue="billing", position=1))
    assert (s.state, s.queue, s.queued_at) == (cs.CallState.QUEUED, "billing", 20.1)
    s = _step(_connected(), ev.BlindTransfer(interaction=IID, at=20.0, queue="support", agent_id=7, kind="agent",
                                             target="9", to_agent_id=9))
    s = _step(s, ev.Offer(interaction=IID, at=20.0, queue="support", agents=[9]))
    s = _step(s, ev.Connect(interaction=IID, at=22.0, queue="support", agent_id=9))
    assert (s.state, s.agent_id, s.transfers[0]["to_agent"]) == (cs.CallState.CONNECTED, 9, 9)
    s = _step(_connected(), ev.BlindTransfer(interaction=IID, at=20.0, queue="support", agent_id=7, kind="number",
                                             target="+15550100"))
    s = _step(s, ev.PartyConnect(interaction=IID, at=25.0, queue="support", kind="number", target="+15550100"))
    assert (s.state, s.agent_id, s.party) == (cs.CallState.CONNECTED, None, "+15550100")
    with pytest.raises(cs.InvalidTransition):  # a queued call has no agent to transfer it
        cs.apply(run([ev.CallArrived(interaction=IID), ev.CallAnswered(interaction=IID),
                      ev.EnterQueue(interaction=IID, queue="q", position=1)]), "transfer_blind",
                 ev.BlindTransfer(interaction=IID, queue="q", kind="queue", target="r"))
