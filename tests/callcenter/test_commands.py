"""Call control across nodes against a real Redis: a command sent to a node that does not run the
call reaches the one that does, its flow acts on it, and every command gets an answer in time."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest_asyncio
import redis.asyncio as aioredis

from bus import commands as cmd
from bus import events as ev
from bus.keys import EVENTS, NODE_ALIVE_KEY
from callcenter import sessions
from callcenter.commands import CallControl
from callcenter.event_bus import EventBus
from callcenter.tasks import Loops
from media.client import MediaClient
from tests.conftest import Stores, fresh_redis

DB = 0


@pytest_asyncio.fixture(loop_scope="session")
async def r(stores: Stores) -> AsyncIterator[aioredis.Redis]:
    async with fresh_redis(stores, DB) as client:
        yield client


async def flow(bus: EventBus, iid: str, seen: list[str]) -> None:
    """Stands for the queue's conversation (acd/conversation.py): takes each command, answers."""
    inbox = bus.sessions.inbox(iid)
    assert inbox is not None
    while True:
        command, answer = await inbox.next()
        seen.append(command.NAME)
        answer.set_result(cmd.DONE)


async def test_commands_sent_to_any_node_reach_the_call_and_are_answered(r: aioredis.Redis, pool: asyncpg.Pool,
                                                                         stores: Stores, tmp_path: Path) -> None:
    owner = EventBus("node-own", r, pool, tmp_path / "a", pause=0.0)
    other = EventBus("node-other", r, pool, tmp_path / "b", pause=0.0)
    media = MediaClient(stores.redis_db(DB), on_call=lambda h: asyncio.sleep(0))
    here = CallControl(r, owner.sessions, media, owner.notifier, timeout=2.0)
    there = CallControl(r, other.sessions, media, other.notifier, timeout=2.0)
    loops = Loops()
    owner.start(loops)
    loops.start("inbox", here.run)
    await r.set(NODE_ALIVE_KEY.format(node="node-own"), "1", ex=30)
    iid = str(uuid.uuid4())
    for e in (ev.CallArrived(interaction=iid, media_call="m-1"), ev.CallAnswered(interaction=iid),
              ev.EnterQueue(interaction=iid, queue="support", position=1),
              ev.Connect(interaction=iid, queue="support", agent_id=3)):
        owner.notifier.emit(e)
    seen: list[str] = []
    worker = asyncio.create_task(flow(owner, iid, seen))
    try:
        await _mirrored(r, iid)  # the owner's mirror is what the other node reads
        assert await there.submit(cmd.Hold(interaction=iid), "crm") == cmd.DONE
        assert owner.sessions.live[iid].state == "held"  # the COMMAND event moved the session on
        refused = await there.submit(cmd.Hold(interaction=iid), "crm")
        assert (refused.ok, refused.error, refused.state) == (False, "state", "held")
        assert await here.submit(cmd.Resume(interaction=iid), "agent-ui") == cmd.DONE
        assert await there.submit(cmd.AttachData(interaction=iid, data={"order": "A-17"}), "crm") == cmd.DONE
        assert owner.sessions.live[iid].data == {"order": "A-17"}
        assert seen == ["hold", "resume"]  # attach is the node's own business, not the flow's
        gone = await there.submit(cmd.Hold(interaction=str(uuid.uuid4())), "crm")
        assert (gone.ok, gone.error) == (False, "gone")

        worker.cancel()  # the flow stops taking commands: the sender still gets an answer in time
        late = await there.submit(cmd.Resume(interaction=iid), "crm")
        assert late.error == "state"  # connected again: refused at once, without waiting
        late = await there.submit(cmd.Hold(interaction=iid), "crm")
        assert (late.ok, late.error) == (False, "timeout")

        await r.delete(NODE_ALIVE_KEY.format(node="node-own"))  # the owning node died
        dead = await there.submit(cmd.Hold(interaction=iid), "crm")
        assert (dead.ok, dead.error) == (False, "unreachable")
    finally:
        worker.cancel()
        await loops.stop()
        await owner.close()
        await media.redis.aclose()
    applied = [(e.command, e.by) for e in await _events(r) if isinstance(e, ev.CommandApplied)]
    assert applied == [("hold", "crm"), ("resume", "agent-ui"), ("attach", "crm")]


async def _mirrored(r: aioredis.Redis, iid: str) -> None:
    for _ in range(200):
        s = await sessions.read(r, iid)
        if s and s["state"] == "connected":
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the owner never mirrored the session")


async def _events(r: aioredis.Redis) -> list[ev.Event]:
    return [e for _id, f in await r.xrange(EVENTS) for e in ev.decode_all(f[b"e"])[0]]
