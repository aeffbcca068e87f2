"""Agent states shared in Redis by every control-plane process.

Each transition is decided by the table in acd/agent_state.py and written with a compare-and-set Lua
script on the state's version: of two processes racing to reserve one agent, exactly one wins; the
other sees the new state and is refused. Deadlines sit in a sorted set for the reconciler. The same
script appends the change to the event stream (AGENTSTATE, bus/events.py), so the stream has every
change, in order, whichever node or script made it.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import fields
from typing import Any, cast

import redis.asyncio as aioredis

from acd.agent_state import Activity, AgentState, InvalidTransition, Params, Status, apply
from acd.idle_index import LUA_INDEX
from bus import events as ev
from bus.keys import AGENT_KEY, DEADLINES, lua
from bus.stream import FIELD, MAXLEN

# Lua: agent_state(aid, transition, node, at, id) appends the agent's state, as it is now, to the
# event stream as an AGENTSTATE event (its JSON is what bus.events.decode reads; a test holds the two
# together).
LUA_AGENT_STATE = lua(f"""
local function agent_state(aid, transition, node, at, id)
  local st = redis.call('HMGET', @AGENT_KEY(aid), 'status', 'activity', 'reason', 'call_id', 'version')
  redis.call('XADD', @EVENTS, 'MAXLEN', '~', {MAXLEN}, '*', '{FIELD}', cjson.encode({{
    v = {ev.SCHEMA}, name = '{ev.AgentStateChanged.NAME}', at = tonumber(at), node = node, id = id,
    agent_id = tonumber(aid), transition = transition, status = st[1] or 'logged_out', activity = st[2] or 'idle',
    reason = st[3] or '', call = st[4] or '', version = tonumber(st[5]) or 0}}))
end
""")

# KEYS: agent hash, deadlines zset. ARGV: expected version, agent id, deadline, transition, node, now,
# event id, then field, value, ... The idle index follows in the same script: routing never sees a
# state the index disagrees with. The reconciler's finding that a call is still alive (still_on_call)
# moves only the deadline: not an event (100 agents on call made 100 events every 30 s, to every
# supervisor's console and webhook, saying nothing).
_CAS = LUA_INDEX + LUA_AGENT_STATE + """
local v = redis.call('HGET', KEYS[1], 'version') or '0'
if v ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 8))
if tonumber(ARGV[3]) > 0 then
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
else
  redis.call('ZREM', KEYS[2], ARGV[2])
end
index(ARGV[2])
if ARGV[4] ~= 'still_on_call' then
  agent_state(ARGV[2], ARGV[4], ARGV[5], ARGV[6], ARGV[7])
end
return 1
"""

_FIELDS = [f.name for f in fields(AgentState) if f.name != "agent_id"]


class Conflict(Exception):
    """The state kept changing under us; the caller may retry later."""


def _decode(agent_id: int, raw: dict[Any, Any]) -> AgentState:
    if not raw:
        return AgentState(agent_id)
    d = {k.decode(): v.decode() for k, v in raw.items()}
    return AgentState(
        agent_id=agent_id,
        status=Status(d.get("status", Status.LOGGED_OUT)),
        reason=d.get("reason", ""),
        activity=Activity(d.get("activity", Activity.IDLE)),
        call_id=d.get("call_id", ""),
        deadline=float(d.get("deadline", 0)),
        wrap_extended=float(d.get("wrap_extended", 0)),
        since=float(d.get("since", 0)),
        idle_since=float(d.get("idle_since", 0)),
        calls=int(d.get("calls", 0)),
        talk_time=float(d.get("talk_time", 0)),
        version=int(d.get("version", 0)),
    )


def _encode(s: AgentState) -> list[str]:
    out: list[str] = []
    for name in _FIELDS:
        out += [name, str(getattr(s, name))]
    return out


OnTransition = Callable[[str, AgentState, AgentState], None]  # (event, before, after)


class AgentStore:
    def __init__(self, redis: aioredis.Redis, node: str = ""):
        self.redis = redis
        self.node = node  # named in the AGENTSTATE events of the transitions made here
        self._cas = redis.register_script(_CAS)
        # Called after every transition made here: the node looks for a caller when an agent becomes
        # free (the periodic sweep covers transitions made elsewhere) and logs system pauses.
        self.on_transition: list[OnTransition] = []

    async def get(self, agent_id: int) -> AgentState:
        return _decode(agent_id, await self.redis.hgetall(AGENT_KEY.format(agent_id=agent_id)))

    async def _write(self, before: AgentState, after: AgentState, transition: str, now: float) -> bool:
        ok = await self._cas(keys=[AGENT_KEY.format(agent_id=after.agent_id), DEADLINES],
                             args=[str(before.version), str(after.agent_id), str(after.deadline), transition, self.node,
                                   repr(now), uuid.uuid4().hex, *_encode(after)])
        return bool(ok)

    async def transition(self, agent_id: int, event: str, params: Params | None = None,
                         now: float | None = None, expect_call: str | None = None,
                         retries: int = 8) -> AgentState:
        """Apply ``event`` atomically. ``expect_call``: only if the agent is still on that call (a
        late timer or a second node must not act on the agent's next call)."""
        for attempt in range(retries):
            if attempt:
                await asyncio.sleep(random.uniform(0, 0.002 * attempt))  # jitter: let the winner finish
            before = await self.get(agent_id)
            if expect_call is not None and before.call_id != expect_call:
                raise InvalidTransition(event, before, f"agent is no longer on call {expect_call!r}")
            at = time.time() if now is None else now
            after = apply(before, event, at, params)
            if await self._write(before, after, event, at):
                for hook in self.on_transition:
                    hook(event, before, after)
                return after
        raise Conflict(f"agent {agent_id}: state changed {retries} times during {event}")

    async def reserve(self, agent_id: int, call_id: str, ring_timeout: float,
                      now: float | None = None) -> AgentState | None:
        """Reserve the agent for ``call_id`` if routable; None if it is not (or another node won)."""
        before = await self.get(agent_id)
        if not before.routable:
            return None
        at = time.time() if now is None else now
        after = apply(before, "reserve", at, Params(ring_timeout=ring_timeout, call_id=call_id))
        return after if await self._write(before, after, "reserve", at) else None

    async def due(self, now: float | None = None, limit: int = 500) -> list[int]:
        """Agents whose activity deadline has passed (for the reconciler)."""
        ids = await self.redis.zrangebyscore(DEADLINES, "-inf", time.time() if now is None else now,
                                             start=0, num=limit)
        return [int(cast(bytes, i)) for i in ids]
