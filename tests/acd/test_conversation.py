"""The conversation engine (acd/conversation.py) with a fake media worker and the real Redis: the
call-control commands while caller and agent talk — hold, mute, blind transfers to each kind of
target, DTMF — what each does to the legs (who is bridged with whom, who hears the hold music), the
events, the agents' states, and each refusal. The consultation's are in test_consultation.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest_asyncio

from acd.agent_state import Params
from acd.conversation import Handoff
from bus import commands as cmd
from bus import events as ev
from tests.acd.conversation_call import HOLD, IID, Call, talking
from tests.conftest import Stores


@pytest_asyncio.fixture
async def call(stores: Stores) -> AsyncIterator[Call]:
    async with talking(stores) as c:
        yield c


async def test_hold_and_resume(call: Call) -> None:
    assert call.media.bridged(call.customer, call.agent_leg)
    assert (await call.send(cmd.Resume(interaction=IID))).error == "state"
    assert (await call.send(cmd.Hold(interaction=IID))).ok
    assert not call.media.bridged(call.customer, call.agent_leg)
    assert call.media.playing[call.customer.call_id] == HOLD
    assert (await call.send(cmd.Resume(interaction=IID))).ok
    assert call.media.bridged(call.customer, call.agent_leg) and call.customer.call_id not in call.media.playing


async def test_mute_stops_the_agent_s_audio_until_unmuted(call: Call) -> None:
    assert (await call.send(cmd.Mute(interaction=IID))).ok
    assert call.media.muted == {"o-agent1"}
    refused = await call.send(cmd.Mute(interaction=IID))
    assert (refused.ok, refused.error) == (False, "state")
    assert (await call.send(cmd.Unmute(interaction=IID))).ok
    assert call.media.muted == set()


async def test_blind_transfer_to_a_queue_hands_the_caller_over(call: Call) -> None:
    refused = await call.send(cmd.Transfer(interaction=IID, kind="queue", target="nowhere"))
    assert (refused.error, refused.field) == ("invalid", "target")
    assert (await call.send(cmd.Transfer(interaction=IID, kind="queue", target="billing"))).ok
    assert await asyncio.wait_for(call.task, 2) == Handoff("billing")
    assert call.agent_leg.ended.is_set() and not call.customer.ended.is_set()
    assert call.media.playing[call.customer.call_id] == HOLD  # until the next queue takes over
    transfer = next(e for e in call.record.events if isinstance(e, ev.BlindTransfer))
    assert (transfer.kind, transfer.target, transfer.agent_id, transfer.to_agent_id) == ("queue", "billing", 1, None)
    assert await call.activity(1) == ("available", "wrap_up")


async def test_blind_transfer_to_an_agent_connects_them_and_refuses_one_who_is_busy(call: Call) -> None:
    for target, error in (("3", "unreachable"), ("1", "invalid"), ("x", "invalid")):
        assert (await call.send(cmd.Transfer(interaction=IID, kind="agent", target=target))).error == error
    await call.agents.transition(2, "not_ready", Params(reason="break"))
    assert (await call.send(cmd.Transfer(interaction=IID, kind="agent", target="2"))).error == "busy"
    assert call.media.bridged(call.customer, call.agent_leg)  # a refusal changes nothing
    await call.agents.transition(2, "available")
    assert (await call.send(cmd.Transfer(interaction=IID, kind="agent", target="2"))).ok
    await asyncio.sleep(0.1)
    new_leg = call.leg_to("sip:agent2@phones")
    assert call.media.bridged(call.customer, new_leg) and call.agent_leg.ended.is_set()
    assert call.record.names()[-3:] == ["BLINDTRANSFER", "OFFER", "CONNECT"]
    assert await call.activity(2) == ("available", "on_call")
    call.media.remote_hangup(call.customer)
    assert await asyncio.wait_for(call.task, 2) is None
    done = call.record.events[-1]
    assert isinstance(done, ev.CompleteCaller) and done.agent_id == 2
    assert await call.activity(2) == ("available", "wrap_up")


async def test_a_transfer_target_who_does_not_answer_sends_the_caller_back_to_their_queue(call: Call) -> None:
    call.media.phones["sip:agent2@phones"] = "silent"
    assert (await call.send(cmd.Transfer(interaction=IID, kind="agent", target="2"))).ok
    assert await asyncio.wait_for(call.task, 5) == Handoff("support")
    assert call.record.names()[-2:] == ["OFFER", "RINGNOANSWER"]
    assert await call.activity(2) == ("not_ready", "idle")  # missed like any offer


async def test_blind_transfer_to_an_outside_number(call: Call) -> None:
    assert (await call.send(cmd.Transfer(interaction=IID, kind="number", target="+15550199"))).ok
    await asyncio.sleep(0.1)
    party = call.leg_to("sip:+15550199@trunk")
    assert call.media.bridged(call.customer, party)
    connect = call.record.events[-1]
    assert isinstance(connect, ev.PartyConnect) and connect.party_call == party.call_id
    # No agent on the call now: agent commands are refused, keys go to the outside party.
    assert (await call.send(cmd.SendDtmf(interaction=IID, digits="12#"))).ok
    assert call.media.keys_sent == {party.call_id: "12#"}
    call.media.remote_hangup(party)
    assert await asyncio.wait_for(call.task, 2) is None
    assert call.customer.ended.is_set()
