"""The conversation engine (acd/conversation.py) with a fake media worker and the real Redis: every
call-control command while caller and agent talk — hold, mute, blind transfers to each kind of
target, attended transfers completed and cancelled, a three-way conference and leaving it, DTMF —
what each does to the legs (who is bridged with whom, who hears the hold music), the events, the
agents' states, and each refusal."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest_asyncio
import redis.asyncio as aioredis

from acd.agent_state import Params
from acd.agent_store import AgentStore
from acd.conversation import Handoff, Party, converse
from acd.directory import AgentEntry, Directory
from acd.distributor import Distributor
from acd.models import QueueSettings
from acd.offers import OfferBus
from acd.services import QueueServices
from acd.waiting import Waiting
from bus import commands as cmd
from bus import events as ev
from media.client import CallHandle
from tests.acd.fake_media import FakeMedia
from tests.conftest import Stores, fresh_redis

DB = 9
IID = "00000000-0000-0000-0000-00000000c0de"
HOLD = "/prompts/hold_loop.wav"


class _Prompts:
    def path(self, name: str) -> str:
        return f"/prompts/{name}.wav"

    def spoken(self, text: str) -> str:
        return "/prompts/spoken.wav"


@dataclass
class _Record:
    interaction: str = IID
    inbox: cmd.Inbox | None = field(default_factory=cmd.Inbox)
    events: list[ev.Event] = field(default_factory=list)

    def emit(self, event: ev.Event) -> None:
        self.events.append(event)

    def names(self) -> list[str]:
        return [e.NAME for e in self.events]


@dataclass
class Call:
    media: FakeMedia
    agents: AgentStore
    record: _Record
    customer: CallHandle
    agent_leg: CallHandle
    task: asyncio.Task[Handoff | None]

    async def send(self, command: cmd.Command) -> cmd.Result:
        assert self.record.inbox is not None
        result = await self.record.inbox.submit(command, 3.0)
        await asyncio.sleep(0.02)  # the fake worker's events for what the command did
        return result

    async def activity(self, aid: int) -> tuple[str, str]:
        s = await self.agents.get(aid)
        return s.status, s.activity

    def leg_to(self, uri: str) -> CallHandle:
        return next(h for h in self.media.calls.values() if h.uri == uri)


@pytest_asyncio.fixture
async def redis(stores: Stores) -> AsyncIterator[aioredis.Redis]:
    async with fresh_redis(stores, DB) as r:
        yield r


@pytest_asyncio.fixture
async def call(redis: aioredis.Redis, stores: Stores) -> AsyncIterator[Call]:
    """Agent 1 talking to the caller of queue support; agents 2 and 3 free; queue billing exists."""
    directory = Directory(redis)
    settings = QueueSettings.model_validate({"ring_timeout": 1, "wrap_up": 5}, strict=False)
    for q in ("support", "billing"):
        await directory.put_queue(q, settings)
    agents = AgentStore(redis)
    for aid in (1, 2, 3):
        await directory.put_agent(AgentEntry(aid, {"support": 0}, {}, f"sip:agent{aid}@phones"))
        await agents.transition(aid, "login")
    media = FakeMedia()
    customer = media.inbound()
    await agents.reserve(1, customer.call_id, 10)
    await agents.transition(1, "connect")
    agent_leg = media.leg(customer, "o-agent1")

    async def device(aid: int) -> str | None:
        return f"sip:agent{aid}@phones" if aid != 3 else None

    offers = OfferBus(stores.redis_db(DB))
    svc = QueueServices(Distributor(redis, directory), agents, Waiting(redis), directory, offers, _Prompts(),
                        device, dial_uri=lambda kind, target: f"sip:{target}@trunk")
    record = _Record()
    task = asyncio.create_task(converse(svc, record, "support", settings, customer, Party(agent_leg, 1, 0.0),
                                        wait=3.0, expect_call=customer.call_id))
    await asyncio.sleep(0.02)
    c = Call(media, agents, record, customer, agent_leg, task)
    try:
        yield c
    finally:
        if not task.done():
            media.remote_hangup(customer)
            await asyncio.wait_for(task, 5)
        await offers.aclose()


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
