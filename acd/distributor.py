"""The distributor: which agent gets which waiting call. One decision is one Lua call: walk the
queue's idle index in strategy order, skip agents lacking a required skill, reserve the first that
qualifies (ring-all: every one, up to a limit), take the call out of the queue and publish the offer.
All of it is atomic, so two nodes can never reserve one agent or offer one call twice.

The cost of a decision depends on how far down the index the first qualified agent is, not on how
many agents there are (bench/acd_routing measures it).

Decisions are triggered by a call entering a queue, by an agent becoming free (the longest-waiting
caller the agent can serve across all of the agent's queues), and by a sweep every second, which
also applies routing steps that widened and catches triggers lost with a node.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from dataclasses import dataclass
from typing import cast

import redis.asyncio as aioredis

from acd.agent_state import AgentState
from acd.agent_store import LUA_AGENT_STATE
from acd.directory import Directory
from acd.idle_index import LUA_INDEX
from acd.models import QueueSettings
from acd.routing import Step, eligible, requirements
from acd.waiting import Head, order_key
from bus.keys import ACD_CALL_KEY, IDLE_KEY, WAITING_KEY, lua

# ARGV: queue, call id, now, ring timeout, walk limit, ring-all limit, random seed, node, event id prefix,
# then skill, level … Each reservation is an AGENTSTATE event on the stream, written here.
# Returns {-1} if the call is no longer waiting, {0} if no agent qualified, else {n, agent ids …}.
# The reservation below mirrors acd.agent_state._reserve (a test compares the two).
_DECIDE = LUA_INDEX + LUA_AGENT_STATE + lua("""
local queue, call = ARGV[1], ARGV[2]
local now, ring = tonumber(ARGV[3]), tonumber(ARGV[4])
local limit, ring_all_limit = tonumber(ARGV[5]), tonumber(ARGV[6])
local waiting = @WAITING_KEY(queue)
local call_key = redis.call('ZSCORE', waiting, call)
if not call_key then return {-1} end
local skills, levels = {}, {}
for i = 10, #ARGV, 2 do
  skills[#skills + 1] = ARGV[i]
  levels[#levels + 1] = tonumber(ARGV[i + 1])
end
local idle = @IDLE_KEY(queue)
local strategy = redis.call('HGET', @STRATEGY_KEY, queue) or 'longest_idle'
local want = 1
if strategy == 'ring_all' then want = ring_all_limit end

-- Walk the index as a circle from a start rank: 0 for ordered strategies, a random rank for random
-- (scripts see no randomness of their own: the seed comes from the caller), and for round-robin the
-- first member after the last one offered. Pages grow (4, 16, 64 …) so that the usual decision, whose
-- first candidate qualifies, reads only a few entries however many agents are idle.
local n = redis.call('ZCARD', idle)
local start = 0
if n > 0 and strategy == 'random' then
  start = tonumber(ARGV[7]) % n
elseif n > 0 and strategy == 'round_robin' then
  local cursor = redis.call('GET', @RR_KEY(queue)) or '-1'
  start = redis.call('ZCOUNT', idle, '-inf', cursor) % n
end
local total = math.min(n, limit)

local chosen, touched = {}, {}
local walked, size = 0, 4
while walked < total and #chosen < want do
  local count = math.min(size, total - walked)
  local from = (start + walked) % n
  local page = redis.call('ZRANGE', idle, from, math.min(from + count, n) - 1)
  if from + count > n then
    for _, a in ipairs(redis.call('ZRANGE', idle, 0, from + count - n - 1)) do page[#page + 1] = a end
  end
  walked = walked + count
  size = size * 4
  for _, aid in ipairs(page) do
    local ok = true
    if #skills > 0 then
      local have = redis.call('HMGET', @SKILLS_KEY(aid), unpack(skills))
      for i = 1, #skills do
        if (tonumber(have[i]) or 0) < levels[i] then ok = false break end
      end
    end
    if ok then
      local akey = @AGENT_KEY(aid)
      local st = redis.call('HMGET', akey, 'status', 'activity', 'version')
      if st[1] == 'available' and st[2] == 'idle' then
        if strategy == 'round_robin' then
          redis.call('SET', @RR_KEY(queue), redis.call('ZSCORE', idle, aid))
        end
        redis.call('HSET', akey, 'activity', 'reserved', 'call_id', call, 'deadline', tostring(now + ring),
                   'since', tostring(now), 'version', tostring((tonumber(st[3]) or 0) + 1))
        redis.call('ZADD', @DEADLINES, now + ring, aid)
        agent_state(aid, 'reserve', ARGV[8], now, ARGV[9] .. aid)
        chosen[#chosen + 1] = aid
      end
      touched[#touched + 1] = aid
      if #chosen >= want then break end
    end
  end
end
-- Out of every idle set now (or repaired, had the index been stale); after the walk, so that ranks
-- did not move under it.
for _, aid in ipairs(touched) do index(aid) end
if #chosen == 0 then return {0} end
redis.call('ZREM', waiting, call)
redis.call('PUBLISH', @OFFERS_CHANNEL, cjson.encode({call = call, queue = queue, agents = chosen,
                                                    key = tonumber(call_key), at = now}))
local out = {#chosen}
for _, aid in ipairs(chosen) do out[#out + 1] = tonumber(aid) end
return out
""")

NOT_WAITING = -1
# The agent's reservation outlives the queue's ring timeout by this much: the flow that rings the
# agent acts first; the reconciler acts only if that flow's node died.
RESERVE_GRACE = 5.0


@dataclass(frozen=True)
class Offer:
    call_id: str
    queue: str
    agents: tuple[int, ...]
    key: float  # the call's place in the queue (to requeue it there after a missed offer)
    at: float

    @property
    def head(self) -> Head:
        return Head(self.queue, self.call_id, self.key)

    @classmethod
    def decode(cls, raw: bytes | str) -> Offer:
        d = json.loads(raw)
        return cls(str(d["call"]), str(d["queue"]), tuple(int(a) for a in d["agents"]), float(d["key"]),
                   float(d["at"]))


@dataclass(frozen=True)
class CallInfo:
    queue: str
    enqueued_at: float
    priority: int
    skills: dict[str, int]  # attached by the IVR (language, intent)
    node: str
    interaction: str = ""  # the interaction record the call's events belong to
    callback_uri: str = ""  # set when the caller asked to be called back (virtual hold)
    attempts: int = 0  # callback attempts made

    @property
    def key(self) -> float:
        return order_key(self.priority, self.enqueued_at)


def steps_of(settings: QueueSettings) -> list[Step]:
    return [Step(s.after, dict(s.require)) for s in settings.routing]


class Distributor:
    def __init__(self, redis: aioredis.Redis, directory: Directory, walk_limit: int = 200,
                 ring_all_limit: int = 20, heads: int = 50, node: str = ""):
        self.redis = redis
        self.node = node  # named in the AGENTSTATE events of its reservations
        self.directory = directory
        self.walk_limit = walk_limit
        self.ring_all_limit = ring_all_limit
        self.heads = heads  # how deep into each queue a free agent or the sweep looks
        self._decide = redis.register_script(_DECIDE)
        self.decisions = 0

    # -------------------------------------------------------------- call info
    async def put_call(self, call_id: str, info: CallInfo) -> None:
        await self.redis.hset(ACD_CALL_KEY.format(call_id=call_id), mapping={
            "queue": info.queue, "enqueued_at": repr(info.enqueued_at), "priority": str(info.priority),
            "skills": json.dumps(info.skills), "node": info.node, "interaction": info.interaction,
            "callback_uri": info.callback_uri, "attempts": str(info.attempts)})

    async def call_info(self, call_id: str) -> CallInfo | None:
        raw = cast(dict[bytes, bytes], await self.redis.hgetall(ACD_CALL_KEY.format(call_id=call_id)))
        if not raw:
            return None
        d = {k.decode(): v.decode() for k, v in raw.items()}
        return CallInfo(d["queue"], float(d["enqueued_at"]), int(d["priority"]), json.loads(d["skills"]), d["node"],
                        d.get("interaction", ""), d.get("callback_uri", ""), int(d.get("attempts", 0)))

    async def drop_call(self, call_id: str) -> None:
        await self.redis.delete(ACD_CALL_KEY.format(call_id=call_id))

    # -------------------------------------------------------------- decisions
    async def decide(self, queue: str, call_id: str, require: dict[str, int], ring_timeout: float,
                     now: float | None = None) -> list[int] | None:
        """Reserve the best agent(s) for a waiting call: the agent ids, [] if none qualified, None if
        the call is no longer waiting (taken by another node, or gone)."""
        args: list[str] = [queue, call_id, repr(time.time() if now is None else now), repr(ring_timeout),
                           str(self.walk_limit), str(self.ring_all_limit), str(random.getrandbits(31)), self.node,
                           uuid.uuid4().hex + "-"]
        for skill, level in sorted(require.items()):
            args += [skill, str(level)]
        out = cast(list[int], await self._decide(args=args))
        self.decisions += 1
        if out[0] == NOT_WAITING:
            return None
        return [int(a) for a in out[1:]]

    async def decide_for(self, queue: str, call_id: str, settings: QueueSettings | None = None,
                         info: CallInfo | None = None, now: float | None = None) -> list[int] | None:
        """A decision with the call's requirements as of now (routing step for its wait + IVR skills)."""
        now = time.time() if now is None else now
        settings = settings or await self.directory.settings(queue)
        info = info or await self.call_info(call_id)
        if settings is None or info is None:
            return None
        req = requirements(steps_of(settings), now - info.enqueued_at, info.skills)
        return await self.decide(queue, call_id, req, settings.ring_timeout + RESERVE_GRACE, now)

    async def agent_free(self, agent: AgentState, now: float | None = None) -> bool:
        """An agent became free: offer them the best caller they can serve across their queues
        (highest priority, then longest wait). True if a call was placed with an agent."""
        now = time.time() if now is None else now
        queues = list(await self.directory.memberships(agent.agent_id))
        if not queues:
            return False
        pipe = self.redis.pipeline(transaction=False)
        for q in queues:
            pipe.zrange(WAITING_KEY.format(queue=q), 0, self.heads - 1, withscores=True)
        heads = sorted((Head(q, m.decode(), float(score)) for q, got in zip(queues, await pipe.execute(), strict=True)
                        for m, score in got), key=lambda h: h.key)
        if not heads:
            return False
        skills = await self.directory.skills(agent.agent_id)
        for h in heads:
            settings = await self.directory.settings(h.queue)
            info = await self.call_info(h.call_id)
            if settings is None or info is None:
                continue
            req = requirements(steps_of(settings), now - info.enqueued_at, info.skills)
            if not eligible(skills, req):
                continue
            got = await self.decide(h.queue, h.call_id, req, settings.ring_timeout + RESERVE_GRACE, now)
            if got:
                return True
        return False

    async def sweep(self, now: float | None = None) -> int:
        """Try the head calls of every queue that has both callers and free agents; returns offers made."""
        now = time.time() if now is None else now
        made = 0
        for queue in await self.directory.queues():
            pipe = self.redis.pipeline(transaction=False)
            pipe.zcard(IDLE_KEY.format(queue=queue))
            pipe.zrange(WAITING_KEY.format(queue=queue), 0, self.heads - 1)
            idle, calls = await pipe.execute()
            if not idle or not calls:
                continue
            settings = await self.directory.settings(queue)
            for raw in calls:
                got = await self.decide_for(queue, raw.decode(), settings, now=now)
                if got:
                    made += 1
                    idle -= len(got)
                    if idle <= 0:
                        break
        return made
