"""A call of queue support in conversation (acd/conversation.py) for the engine's tests: a fake media
worker (fake_media.py), the real Redis, agent 1 talking to the caller."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import redis.asyncio as aioredis

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


@contextlib.asynccontextmanager
async def talking(stores: Stores) -> AsyncIterator[Call]:
    """Agent 1 talking to the caller of queue support; agents 2 and 3 free; queue billing exists."""
    async with fresh_redis(stores, DB) as redis:
        async with _talking(redis, stores) as c:
            yield c


@contextlib.asynccontextmanager
async def _talking(redis: aioredis.Redis, stores: Stores) -> AsyncIterator[Call]:
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
