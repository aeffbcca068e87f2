"""The routing directory: the part of the ACD configuration that routing reads on every decision,
mirrored from PostgreSQL (the source of truth) into Redis so that a decision is one Lua call: queue
settings, strategies, skills, devices and memberships (their keys are in bus/keys.py), and a marker
set by a full sync whose absence means Redis lost the directory.

callcenter/acd_sync.py writes it after every configuration change and in full at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import redis.asyncio as aioredis

from acd.idle_index import REINDEX, SET_MEMBERSHIPS
from acd.models import QueueSettings
from bus.keys import (
    DEVICE_KEY,
    DIRECTORY_LOADED,
    IDLE_KEY,
    LOGGED_IN_KEY,
    MEMBER_OF_KEY,
    MEMBERS_KEY,
    QUEUE_SETTINGS_KEY,
    SKILLS_KEY,
    STAFFED_KEY,
    STRATEGY_KEY,
)


@dataclass(frozen=True)
class Staffing:
    logged_in: int  # members logged in (available or not ready)
    staffed: int  # … available: idle, reserved, on a call or in wrap-up (N of the EWT)
    idle: int  # … free for a call now (I of the EWT)


@dataclass(frozen=True)
class AgentEntry:
    agent_id: int
    memberships: dict[str, int]  # queue -> member order
    skills: dict[str, int]
    device: str  # SIP URI or "ext:<extension>"; "" if the agent has no device


class Directory:
    def __init__(self, redis: aioredis.Redis):
        self.redis = redis
        self._set_memberships = redis.register_script(SET_MEMBERSHIPS)
        self._reindex = redis.register_script(REINDEX)
        self._settings: dict[str, tuple[bytes, QueueSettings]] = {}

    # -------------------------------------------------------------- writes (from the sync)
    async def mark_loaded(self, at: float) -> None:
        await self.redis.set(DIRECTORY_LOADED, str(at))

    async def loaded(self) -> bool:
        """False when Redis came back without the directory (no persistence, or a new server)."""
        return bool(await self.redis.exists(DIRECTORY_LOADED))

    async def put_queue(self, name: str, settings: QueueSettings) -> None:
        old = cast(bytes | None, await self.redis.hget(STRATEGY_KEY, name))
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(QUEUE_SETTINGS_KEY.format(queue=name), settings.model_dump_json())
        pipe.hset(STRATEGY_KEY, name, settings.strategy.value)
        await pipe.execute()
        if old is not None and old.decode() != settings.strategy.value:
            for aid in await self.members(name):  # scores depend on the strategy
                await self._reindex(args=[str(aid)])

    async def drop_queue(self, name: str) -> None:
        for aid in await self.members(name):
            left = {q: o for q, o in (await self.memberships(aid)).items() if q != name}
            await self.put_memberships(aid, left)
        await self.redis.delete(QUEUE_SETTINGS_KEY.format(queue=name), IDLE_KEY.format(queue=name),
                                LOGGED_IN_KEY.format(queue=name), STAFFED_KEY.format(queue=name))
        await self.redis.hdel(STRATEGY_KEY, name)

    async def put_memberships(self, agent_id: int, memberships: dict[str, int]) -> None:
        args: list[str] = [str(agent_id)]
        for queue, order in memberships.items():
            args += [queue, str(order)]
        await self._set_memberships(args=args)

    async def put_agent(self, entry: AgentEntry) -> None:
        skills_key = SKILLS_KEY.format(agent_id=entry.agent_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(skills_key)
        if entry.skills:
            pipe.hset(skills_key, mapping={k: str(v) for k, v in entry.skills.items()})
        if entry.device:
            pipe.set(DEVICE_KEY.format(agent_id=entry.agent_id), entry.device)
        else:
            pipe.delete(DEVICE_KEY.format(agent_id=entry.agent_id))
        await pipe.execute()
        await self.put_memberships(entry.agent_id, entry.memberships)

    async def drop_agent(self, agent_id: int) -> None:
        await self.put_memberships(agent_id, {})
        await self.redis.delete(SKILLS_KEY.format(agent_id=agent_id), DEVICE_KEY.format(agent_id=agent_id))

    # -------------------------------------------------------------- reads (routing)
    async def settings(self, queue: str) -> QueueSettings | None:
        raw = cast(bytes | None, await self.redis.get(QUEUE_SETTINGS_KEY.format(queue=queue)))
        if raw is None:
            return None
        cached = self._settings.get(queue)
        if cached is not None and cached[0] == raw:
            return cached[1]
        settings = QueueSettings.model_validate_json(raw)
        self._settings[queue] = (raw, settings)
        return settings

    async def queues(self) -> list[str]:
        return sorted(k.decode() for k in cast(list[bytes], await self.redis.hkeys(STRATEGY_KEY)))

    async def members(self, queue: str) -> list[int]:
        return [int(a) for a in cast(list[bytes], await self.redis.hkeys(MEMBERS_KEY.format(queue=queue)))]

    async def memberships(self, agent_id: int) -> dict[str, int]:
        raw = cast(dict[bytes, bytes], await self.redis.hgetall(MEMBER_OF_KEY.format(agent_id=agent_id)))
        return {k.decode(): int(v) for k, v in raw.items()}

    async def skills(self, agent_id: int) -> dict[str, int]:
        raw = cast(dict[bytes, bytes], await self.redis.hgetall(SKILLS_KEY.format(agent_id=agent_id)))
        return {k.decode(): int(v) for k, v in raw.items()}

    async def device(self, agent_id: int) -> str:
        raw = cast(bytes | None, await self.redis.get(DEVICE_KEY.format(agent_id=agent_id)))
        return raw.decode() if raw else ""

    async def idle(self, queue: str) -> list[int]:
        """The queue's idle index in offer order (for tests and supervisors)."""
        return [int(a) for a in cast(list[bytes], await self.redis.zrange(IDLE_KEY.format(queue=queue), 0, -1))]

    async def staffing(self, queue: str) -> Staffing:
        """Who serves the queue now: for the no-agents rule and the EWT (docs/metrics.md). Three
        counts the index keeps (acd/idle_index.py): reading every member's state cost a pipeline of
        a command per member, the control plane's largest cost per call with 100 members (bench/cti)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.scard(LOGGED_IN_KEY.format(queue=queue))
        pipe.scard(STAFFED_KEY.format(queue=queue))
        pipe.zcard(IDLE_KEY.format(queue=queue))
        logged_in, staffed, idle = await pipe.execute()
        return Staffing(logged_in=int(logged_in), staffed=int(staffed), idle=int(idle))
