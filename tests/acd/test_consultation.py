"""Consultation (acd/consultation.py) in a conversation with a fake media worker and the real Redis:
attended transfers completed and cancelled, a three-way conference and leaving it, the target or
either leg hanging up — who is bridged with whom, the events and the agents' states."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest_asyncio

from bus import commands as cmd
from bus import events as ev
from tests.acd.conversation_call import HOLD, IID, Call, talking
from tests.conftest import Stores


@pytest_asyncio.fixture
async def call(stores: Stores) -> AsyncIterator[Call]:
    async with talking(stores) as c:
        yield c


async def test_attended_transfer_completed(call: Call) -> None:
    assert (await call.send(cmd.CompleteTransfer(interaction=IID))).error == "state"
    assert (await call.send(cmd.Consult(interaction=IID, kind="queue", target="billing"))).error == "invalid"
    assert (await call.send(cmd.Consult(interaction=IID, kind="agent", target="2"))).ok
    assert call.media.playing[call.customer.call_id] == HOLD
    await asyncio.sleep(0.1)
    target = call.leg_to("sip:agent2@phones")
    assert call.media.bridged(call.agent_leg, target) and not call.media.bridged(call.customer, call.agent_leg)
    assert (await call.send(cmd.Hold(interaction=IID))).error == "state"
    assert (await call.send(cmd.CompleteTransfer(interaction=IID))).ok
    assert call.media.bridged(call.customer, target) and call.agent_leg.ended.is_set()
    assert call.customer.call_id not in call.media.playing
    t = next(e for e in call.record.events if isinstance(e, ev.AttendedTransfer))
    assert (t.agent_id, t.to_agent_id, t.kind, t.conference) == (1, 2, "agent", 0.0)
    assert await call.activity(1) == ("available", "wrap_up")
    assert await call.activity(2) == ("available", "on_call")
    assert (await call.send(cmd.Hold(interaction=IID))).ok  # agent 2 holds the caller like any agent


async def test_attended_transfer_cancelled_while_ringing_and_after_an_answer(call: Call) -> None:
    call.media.phones["sip:agent2@phones"] = "silent"
    assert (await call.send(cmd.Consult(interaction=IID, kind="agent", target="2"))).ok
    assert await call.activity(2) == ("available", "reserved")
    assert (await call.send(cmd.Conference(interaction=IID))).error == "state"  # not answered yet
    assert (await call.send(cmd.CancelConsult(interaction=IID))).ok
    assert call.media.bridged(call.customer, call.agent_leg)
    assert await call.activity(2) == ("available", "idle")
    assert (await call.send(cmd.Consult(interaction=IID, kind="extension", target="301"))).ok
    await asyncio.sleep(0.1)
    target = call.leg_to("sip:301@trunk")
    assert (await call.send(cmd.CancelConsult(interaction=IID))).ok
    assert target.ended.is_set() and call.media.bridged(call.customer, call.agent_leg)
    assert [e.result for e in call.record.events if isinstance(e, ev.ConsultEnd)] == ["cancelled", "cancelled"]


async def test_three_way_conference_and_leaving_it(call: Call) -> None:
    assert (await call.send(cmd.Consult(interaction=IID, kind="extension", target="301"))).ok
    await asyncio.sleep(0.1)
    target = call.leg_to("sip:301@trunk")
    assert (await call.send(cmd.Conference(interaction=IID))).ok
    legs = (call.customer, call.agent_leg, target)
    assert all(call.media.bridged(a, b) for a in legs for b in legs if a is not b)  # each hears the other two
    assert call.customer.call_id not in call.media.playing
    assert (await call.send(cmd.SendDtmf(interaction=IID, digits="9"))).ok  # to the target
    assert (await call.send(cmd.SendDtmf(interaction=IID, digits="x", leg="caller"))).error == "invalid"
    assert call.media.keys_sent == {target.call_id: "9"}
    assert (await call.send(cmd.LeaveConference(interaction=IID, leg="target"))).ok
    assert target.ended.is_set() and call.media.bridged(call.customer, call.agent_leg)
    assert call.record.names()[-1] == "CONFERENCEEND"
    # Again, and now the agent leaves: the caller stays with the target.
    assert (await call.send(cmd.Consult(interaction=IID, kind="extension", target="302"))).ok
    await asyncio.sleep(0.1)
    second = call.leg_to("sip:302@trunk")
    assert (await call.send(cmd.Conference(interaction=IID))).ok
    await asyncio.sleep(0.05)
    assert (await call.send(cmd.LeaveConference(interaction=IID, leg="agent"))).ok
    assert call.agent_leg.ended.is_set() and call.media.bridged(call.customer, second)
    t = call.record.events[-1]
    assert isinstance(t, ev.AttendedTransfer) and t.to_agent_id is None and t.conference > 0


async def test_the_target_hanging_up_leaves_the_caller_on_hold_and_the_agent_hanging_up_completes(
        call: Call) -> None:
    assert (await call.send(cmd.Consult(interaction=IID, kind="agent", target="2"))).ok
    await asyncio.sleep(0.1)
    call.media.remote_hangup(call.leg_to("sip:agent2@phones"))
    await asyncio.sleep(0.05)
    end = call.record.events[-1]
    assert isinstance(end, ev.ConsultEnd) and end.result == "ended"
    assert call.media.playing[call.customer.call_id] == HOLD
    assert await call.activity(2) == ("available", "wrap_up")
    assert (await call.send(cmd.Consult(interaction=IID, kind="extension", target="301"))).ok  # from hold
    await asyncio.sleep(0.1)
    target = call.leg_to("sip:301@trunk")
    call.media.remote_hangup(call.agent_leg)  # the agent hangs up during the consultation
    await asyncio.sleep(0.1)
    assert call.media.bridged(call.customer, target) and not call.task.done()
    assert call.record.names()[-1] == "ATTENDEDTRANSFER"


async def test_the_caller_hanging_up_during_a_consultation_ends_everything(call: Call) -> None:
    call.media.phones["sip:agent2@phones"] = "silent"
    assert (await call.send(cmd.Consult(interaction=IID, kind="agent", target="2"))).ok
    call.media.remote_hangup(call.customer)
    assert await asyncio.wait_for(call.task, 2) is None
    assert call.agent_leg.ended.is_set()
    assert not [h for h in call.media.calls.values() if not h.ended.is_set()]
    assert await call.activity(2) == ("available", "idle")
    assert await call.activity(1) == ("available", "wrap_up")
    assert call.record.names()[-1] == "COMPLETECALLER"
