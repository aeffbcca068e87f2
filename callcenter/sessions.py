"""The call sessions of this node's calls (bus/call_session.py), driven by the events the node's
flows emit, and their mirror in Redis, which any node reads to answer "what is call X doing".

The tracker is a notifier sink placed after the stream writer: for each event that changes a
session it applies the transition and emits CALLSTATE, which therefore follows its cause on the
stream. The mirror is written in the stream writer's own pipeline (no round trip of its own): the
latest snapshot of each changed session, kept until Redis has taken it.

    cc:call:<interaction>   string  the session as JSON; expires SESSION_TTL after its last change
                                    (SESSION_TTL_ENDED once ended)
    cc:calls                zset    live interactions by start time (an ended one leaves it)
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from bus import call_session as cs
from bus import commands as cmd
from bus import events as ev
from bus.keys import LIVE_CALLS, SESSION_KEY
from bus.notifier import Notifier

log = logging.getLogger("callcenter.sessions")

SESSION_TTL = 24 * 3600  # seconds a live session's mirror outlives its last change
SESSION_TTL_ENDED = 300  # an ended call stays readable this long (a late question about it)
ENDED_KEPT = 60.0  # seconds an ended session is still found by its media call on its node


class SessionTracker:
    def __init__(self, notifier: Notifier):
        self.notifier = notifier
        self.live: dict[str, cs.CallSession] = {}
        self._inboxes: dict[str, cmd.Inbox] = {}  # each live call's commands for its flow
        self._by_call: dict[str, str] = {}  # media call id of the caller's leg -> interaction
        # Ended sessions, still found by media call for a while: an agent leg's last events and a late
        # caller lookup come after the caller's HANGUP and belong to the same interaction.
        self._ended: OrderedDict[str, tuple[float, cs.CallSession]] = OrderedDict()
        self._dirty: dict[str, cs.CallSession] = {}  # mirror writes not taken by Redis yet
        self._listed: set[str] = set()  # live sessions Redis has in LIVE_CALLS already

    def on_event(self, e: ev.Event) -> None:
        if not isinstance(e, ev.CallEvent) or isinstance(e, ev.CallStateChanged):
            return
        if isinstance(e, ev.CallArrived):
            self._changed(cs.opened(e), None)
            return
        s = self.live.get(e.interaction)
        if s is None:
            if isinstance(e, ev.Hangup) and not e.call:  # another node's call, closed here (orphans.py)
                self._dirty[e.interaction] = cs.CallSession(e.interaction, cs.CallState.ENDED, since=e.at,
                                                            node=e.node)
            return
        if isinstance(e, ev.CustomerIdentified):
            self._changed(cs.identified(s, e), None)
            return
        if isinstance(e, ev.CommandApplied) and e.command == "attach":
            self._changed(cs.attached(s, e.args.get("data", {})), ("attach", e))
            return
        if isinstance(e, ev.Recording):
            self._changed(cs.recording(s, e), (f"record_{e.action}", e))
            return
        if isinstance(e, ev.CommandApplied) and e.command in ("mute", "unmute"):
            self._changed(cs.muted(s, e.command == "mute"), (e.command, e))
            return
        transition = cs.transition_for(e)
        if transition is None:
            return
        try:
            self._changed(cs.apply(s, transition, e), (transition, e))
        except cs.InvalidTransition as exc:
            log.warning("%s (event %s)", exc, e.NAME)  # events are facts: the session is not changed

    def inbox(self, interaction: str) -> cmd.Inbox | None:
        """The commands waiting for the flow of a live call of this node."""
        return self._inboxes.get(interaction)

    def for_call(self, media_call: str) -> cs.CallSession | None:
        """The live session of the call whose caller's leg is ``media_call``."""
        iid = self._by_call.get(media_call)
        if iid is not None:
            return self.live.get(iid)
        ended = self._ended.get(media_call)
        return ended[1] if ended is not None else None

    def _changed(self, s: cs.CallSession, cause: tuple[str, ev.CallEvent] | None) -> None:
        if s.state is cs.CallState.ENDED:
            self.live.pop(s.interaction, None)
            if (inbox := self._inboxes.pop(s.interaction, None)) is not None:
                inbox.refuse_all(cmd.refused("gone", "the call has ended", s.state))
            if self._by_call.pop(s.media_call, None) is not None:
                now = time.monotonic()
                self._ended[s.media_call] = (now, s)
                while self._ended and next(iter(self._ended.values()))[0] < now - ENDED_KEPT:
                    self._ended.popitem(last=False)
        else:
            self.live[s.interaction] = s
            self._inboxes.setdefault(s.interaction, cmd.Inbox())
            if s.media_call:
                self._by_call[s.media_call] = s.interaction
        self._dirty[s.interaction] = s
        if cause is not None:
            transition, e = cause
            self.notifier.emit(ev.CallStateChanged(
                interaction=s.interaction, at=e.at, transition=transition, state=s.state, queue=s.queue,
                agent_id=s.agent_id, party=s.party, muted=s.muted, recording=s.recording, holds=s.holds,
                held_total=s.held_total, held_longest=s.held_longest, conference_seconds=s.conference_seconds,
                transfers=list(s.transfers), data=s.data))

    # ------------------------------------------------------------------ the mirror (bus.stream.Piggyback)
    def stage(self, pipe: Pipeline) -> object:
        staged = dict(self._dirty)
        for iid, s in staged.items():
            key = SESSION_KEY.format(interaction=iid)
            if s.state is cs.CallState.ENDED:
                pipe.set(key, json.dumps(s.snapshot()), ex=SESSION_TTL_ENDED)
                pipe.zrem(LIVE_CALLS, iid)
            else:
                pipe.set(key, json.dumps(s.snapshot()), ex=SESSION_TTL)
                if iid not in self._listed:  # once per call, not per change
                    pipe.zadd(LIVE_CALLS, {iid: s.started_at})
        return staged

    def sent(self, token: object) -> None:
        for iid, s in cast(dict[str, cs.CallSession], token).items():
            if s.state is cs.CallState.ENDED:
                self._listed.discard(iid)
            else:
                self._listed.add(iid)
            if self._dirty.get(iid) is s:  # not changed again meanwhile
                del self._dirty[iid]


async def read(redis: aioredis.Redis, interaction: str) -> dict[str, Any] | None:
    """A call's session as its owning node last mirrored it, from any node."""
    raw = await redis.get(SESSION_KEY.format(interaction=interaction))
    return json.loads(raw) if raw else None


async def live(redis: aioredis.Redis, limit: int = 1000) -> list[dict[str, Any]]:
    """The live calls' sessions, oldest first."""
    ids = [i.decode() for i in cast(list[bytes], await redis.zrange(LIVE_CALLS, 0, limit - 1))]
    if not ids:
        return []
    raws = await redis.mget([SESSION_KEY.format(interaction=i) for i in ids])
    if gone := [i for i, r in zip(ids, raws, strict=True) if r is None]:
        await redis.zrem(LIVE_CALLS, *gone)  # mirrors that expired without an end (their node went)
    return [json.loads(r) for r in raws if r]
