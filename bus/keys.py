"""Every Redis key the platform uses, in one registry, with its type and what it holds.

Python code formats a key (``AGENT_KEY.format(agent_id=7)``); Lua scripts name keys through
``lua()``, which expands ``@NAME(expr)`` into the Lua expression that builds that key (``@NAME``
alone for a key without a part), so a script can never spell a key differently from Python.

The scripts derive keys from agent and queue names rather than receiving them in KEYS: that is fine
on one Redis server (what the platform runs) and would need hash tags on a Cluster.
"""

from __future__ import annotations

import re
import string


class Key(str):
    """A key template (a ``str``, so ``format`` and plain use work) with its Redis type and meaning."""

    kind: str
    doc: str

    def __new__(cls, template: str, kind: str, doc: str) -> Key:
        self = super().__new__(cls, template)
        self.kind, self.doc = kind, doc
        return self

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(p for _, p, _, _ in string.Formatter().parse(self) if p)

    def lua(self, expr: str = "") -> str:
        """The Lua expression for this key, its one part given by the Lua expression ``expr``."""
        parts = self.parts
        if not parts:
            return f"'{self}'"
        if len(parts) > 1 or not expr:
            raise ValueError(f"{self}: Lua keys take exactly one part")
        head, tail = self.split("{" + parts[0] + "}")
        return f"'{head}' .. {expr}" + (f" .. '{tail}'" if tail else "")


# ---------------------------------------------------------------- media protocol (docs/media-protocol.md)
MEDIA_CMD_KEY = Key("cc:media:cmd:{worker_id}", "list", "commands to one worker (RPUSH by the control plane, BLPOP)")
MEDIA_EVENTS = Key("cc:media:events", "stream", "events from every worker (XADD by workers)")
MEDIA_WORKERS = Key("cc:media:workers", "hash", "worker id -> JSON WorkerInfo")
MEDIA_ALIVE_KEY = Key("cc:media:alive:{worker_id}", "string", "a worker's heartbeat, with a TTL")
MEDIA_SUPERVISED = Key("cc:media:supervised", "string", "set by every supervisor; gone only if Redis lost its data")

# ---------------------------------------------------------------- control-plane nodes
NODE_ALIVE_KEY = Key("cc:node:alive:{node}", "string", "a node's heartbeat, with a TTL")
NODE_LAST_SEEN = Key("cc:node:last_seen", "hash", "node -> Unix time of its last heartbeat")
NODE_COMMANDS_KEY = Key("cc:node:commands:{node}", "list", "call-control commands for the calls a node runs")
COMMAND_REPLY_KEY = Key("cc:node:reply:{id}", "list", "the answer to one call-control command (expires)")
ORPHAN_CLAIM_KEY = Key("cc:node:orphan:{interaction}", "string", "the node that closes a dead node's interaction")

# ---------------------------------------------------------------- the event stream (docs/events.md)
EVENTS = Key("cc:events", "stream", "every call, queue and agent event (field e: the JSON event)")
EVENTS_LEASE_KEY = Key("cc:events:lease:{group}", "string", "the consumer that reads for a group now, with a TTL")

SOCKETIO_CHANNEL = Key("cc:socketio", "channel", "pub/sub: python-socketio's emits between nodes")
SOCKET_NODES = Key("cc:socketio:nodes", "zset", "nodes reading the event stream for socket.io -> when last seen")

# ---------------------------------------------------------------- call sessions (callcenter/sessions.py)
SESSION_KEY = Key("cc:call:{interaction}", "string", "a call's session as JSON, mirrored by its owning node")
LIVE_CALLS = Key("cc:calls", "zset", "live interactions -> start time")

# ---------------------------------------------------------------- ACD: agents (acd/agent_store.py)
AGENT_KEY = Key("cc:acd:agent:{agent_id}", "hash", "the agent's state (acd.agent_state.AgentState)")
DEADLINES = Key("cc:acd:deadlines", "zset", "agent id -> when its current state times out")

# ---------------------------------------------------------------- ACD: the idle index (acd/idle_index.py)
IDLE_KEY = Key("cc:acd:idle:{queue}", "zset", "agent id -> strategy score (lowest is offered first)")
MEMBER_OF_KEY = Key("cc:acd:memberof:{agent_id}", "hash", "queue -> member order (penalty, then position)")
LOGGED_IN_KEY = Key("cc:acd:in:{queue}", "set", "members logged in (any status but logged_out): the no-agents rule")
STAFFED_KEY = Key("cc:acd:staffed:{queue}", "set", "members available (idle or busy): the EWT's staffed agents")
MEMBERS_KEY = Key("cc:acd:members:{queue}", "hash", "agent id -> member order (the same, the other way round)")
STRATEGY_KEY = Key("cc:acd:strategy", "hash", "queue -> strategy name")
RR_KEY = Key("cc:acd:rr:{queue}", "string", "round-robin: the score of the last member offered")

# ---------------------------------------------------------------- ACD: the routing directory (acd/directory.py)
QUEUE_SETTINGS_KEY = Key("cc:acd:queue:{queue}", "string", "queue settings (JSON of acd.models.QueueSettings)")
SKILLS_KEY = Key("cc:acd:skills:{agent_id}", "hash", "skill -> proficiency 1..5")
DEVICE_KEY = Key("cc:acd:device:{agent_id}", "string", "where to ring the agent: a SIP URI or ext:<extension>")
DIRECTORY_LOADED = Key("cc:acd:directory:loaded", "string", "set by a full sync: its absence means Redis lost it")

# ---------------------------------------------------------------- ACD: waiting calls
WAITING_KEY = Key("cc:acd:waiting:{queue}", "zset", "call id -> order key (priority, then arrival)")
ACD_CALL_KEY = Key("cc:acd:call:{call_id}", "hash", "a queued call: queue, node, enqueued_at, priority, skills")
OFFERS_CHANNEL = Key("cc:acd:offers", "channel", "pub/sub: each decision's offer (call, queue, agents)")
AHT_KEY = Key("cc:acd:aht", "hash", "queue -> average handle time in seconds, for EWT")
CALLBACKS_DUE = Key("cc:acd:callbacks_due", "zset", "call id -> when its place comes back into the queue")
CALLBACK_CLAIM_KEY = Key("cc:acd:callback_claim:{call_id}", "string", "the node running one callback attempt")


def registry() -> dict[str, Key]:
    """Every key of this module by its Python name."""
    return {n: k for n, k in globals().items() if isinstance(k, Key)}


_REF = re.compile(r"@([A-Z_]+)(?:\(([^()]*)\))?")


def lua(source: str) -> str:
    """Expand ``@NAME(expr)`` / ``@NAME`` references to registry keys in a Lua script."""
    keys = registry()

    def expand(m: re.Match[str]) -> str:
        if m.group(1) not in keys:
            raise KeyError(f"Lua script names an unknown key @{m.group(1)}")
        return keys[m.group(1)].lua(m.group(2) or "")

    return _REF.sub(expand, source)
