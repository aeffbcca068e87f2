"""The idle index: per queue, a sorted set of the members who can take a call now, in the order the
queue's strategy offers them, and the sets of its members logged in and available (the staffing the
no-agents rule and the EWT read, in O(1) rather than by reading every member's state). It is kept by
Lua code that runs inside every script that changes an agent's state or membership, so the index
can never disagree with the state it indexes. Its keys (IDLE_KEY, LOGGED_IN_KEY, STAFFED_KEY,
MEMBER_OF_KEY, MEMBERS_KEY, STRATEGY_KEY) are in bus/keys.py.

Scores, the same order as acd.strategies.rank (a test holds the two together):

    longest_idle, ring_all, random   idle_since
    fewest_calls                     calls x 1e10 + idle_since
    least_talk_time                  floor(talk_time) x 1e10 + idle_since
    linear, round_robin              member order
"""

from __future__ import annotations

from bus.keys import lua

# Lua: index(aid) puts the agent in, or takes it out of, the idle, logged-in and staffed sets of
# every queue it belongs to.
LUA_INDEX = lua("""
local function score_for(strategy, order, st)
  local idle_since = tonumber(st[3]) or 0
  if strategy == 'fewest_calls' then
    return (tonumber(st[4]) or 0) * 1e10 + idle_since
  elseif strategy == 'least_talk_time' then
    return math.floor(tonumber(st[5]) or 0) * 1e10 + idle_since
  elseif strategy == 'linear' or strategy == 'round_robin' then
    return order
  end
  return idle_since
end

local function index(aid)
  local st = redis.call('HMGET', @AGENT_KEY(aid), 'status', 'activity', 'idle_since', 'calls',
                        'talk_time')
  local routable = st[1] == 'available' and st[2] == 'idle'
  local logged_in = st[1] and st[1] ~= 'logged_out'
  local queues = redis.call('HGETALL', @MEMBER_OF_KEY(aid))
  for i = 1, #queues, 2 do
    local key = @IDLE_KEY(queues[i])
    if routable then
      local strategy = redis.call('HGET', @STRATEGY_KEY, queues[i]) or 'longest_idle'
      redis.call('ZADD', key, score_for(strategy, tonumber(queues[i + 1]), st), aid)
    else
      redis.call('ZREM', key, aid)
    end
    redis.call(logged_in and 'SADD' or 'SREM', @LOGGED_IN_KEY(queues[i]), aid)
    redis.call(st[1] == 'available' and 'SADD' or 'SREM', @STAFFED_KEY(queues[i]), aid)
  end
end
""")

# ARGV: agent id. Re-index one agent (after its memberships or a queue's strategy changed).
REINDEX = LUA_INDEX + """
index(ARGV[1])
return 1
"""

# ARGV: agent id, then queue, order, queue, order ... Replace the agent's memberships (both ways:
# agent -> queues and queue -> members) and re-index: the agent leaves the idle sets of queues it no
# longer belongs to.
SET_MEMBERSHIPS = LUA_INDEX + lua("""
local aid = ARGV[1]
local key = @MEMBER_OF_KEY(aid)
for _, q in ipairs(redis.call('HKEYS', key)) do
  redis.call('ZREM', @IDLE_KEY(q), aid)
  redis.call('SREM', @LOGGED_IN_KEY(q), aid)
  redis.call('SREM', @STAFFED_KEY(q), aid)
  redis.call('HDEL', @MEMBERS_KEY(q), aid)
end
redis.call('DEL', key)
for i = 2, #ARGV, 2 do
  redis.call('HSET', key, ARGV[i], ARGV[i + 1])
  redis.call('HSET', @MEMBERS_KEY(ARGV[i]), aid, ARGV[i + 1])
end
index(aid)
return 1
""")
