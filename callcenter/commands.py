"""Third-party call control (bus/commands.py): a command for any live call, accepted on any node.

``CallControl.submit`` answers every command within ``timeout``. A call this node runs is acted on
here; another node's call is sent to that node's inbox list in Redis, and the answer comes back on a
reply list of its own. On the owning node, hanging up the caller, attaching data and recording are
done at once (recording once the call is answered); the other commands go into the call's inbox
(sessions.py), for the flow that runs the call to act on when its state allows it
(bus/call_session.FLOW_COMMANDS), and are refused at once in any other state. Every applied command
is a COMMAND event.

    cc:node:commands:<node>   list    commands for the calls a node runs (RPUSH here, BLPOP there)
    cc:node:reply:<id>        list    the answer to one command (expires)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from dataclasses import fields
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from bus import call_session as cs
from bus import commands as cmd
from bus import events as ev
from bus.keys import COMMAND_REPLY_KEY, NODE_COMMANDS_KEY
from bus.notifier import Notifier
from bus.redis import REDIS_DOWN
from callcenter import nodes, sessions
from callcenter.sessions import SessionTracker
from media.client import CallEnded, MediaClient, MediaError

log = logging.getLogger("callcenter.commands")

TIMEOUT = 3.0  # seconds a command may take, sent to another node included
BLOCK = 0.5  # seconds a read of the inbox list blocks (redis-py pitfall: stop loops by a flag)
REPLY_TTL = 30


class CallControl:
    def __init__(self, redis: aioredis.Redis, tracker: SessionTracker, client: MediaClient | None,
                 notifier: Notifier, timeout: float = TIMEOUT, recordings: Path = Path("var/recordings")):
        """``client``: the node's media client (None on a node without media: it runs no calls).
        ``recordings``: where the media workers write recordings (the same machine)."""
        self.redis = redis
        self.recordings = recordings
        self.tracker = tracker
        self.client = client
        self.notifier = notifier
        self.node = notifier.node
        self.timeout = timeout
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, command: cmd.Command, by: str) -> cmd.Result:
        session = self.tracker.live.get(command.interaction)
        if session is not None:
            return await self.apply(session, command, by)
        mirror = await sessions.read(self.redis, command.interaction)
        if mirror is None or mirror["state"] == cs.CallState.ENDED:
            return cmd.refused("gone", f"call {command.interaction} is not live", mirror["state"] if mirror else "")
        owner = mirror["node"]
        if owner == self.node or not await nodes.alive(self.redis, owner):
            return cmd.refused("unreachable", f"the node that runs the call ({owner}) is not answering",
                               mirror["state"])
        return await self._remote(owner, command, by)

    async def _remote(self, owner: str, command: cmd.Command, by: str) -> cmd.Result:
        reply = COMMAND_REPLY_KEY.format(id=uuid.uuid4().hex)
        deadline = time.monotonic() + self.timeout
        await self.redis.rpush(NODE_COMMANDS_KEY.format(node=owner),
                               json.dumps({"command": command.encode(), "by": by, "reply": reply,
                                           "until": time.time() + self.timeout}))
        while (left := deadline - time.monotonic()) > 0:
            got = await self.redis.blpop([reply], timeout=min(BLOCK, max(left, 0.01)))
            if got is not None:
                return cmd.Result.decode(got[1])
        return cmd.refused("timeout", f"the node that runs the call ({owner}) did not answer in {self.timeout:g} s")

    async def apply(self, session: cs.CallSession, command: cmd.Command, by: str) -> cmd.Result:
        """Act on a command for a call this node runs."""
        applied = ev.CommandApplied(interaction=session.interaction, command=command.NAME, by=by,
                                    args=_args(command))
        if isinstance(command, cmd.AttachData):
            self.notifier.emit(applied)
            return cmd.DONE
        if isinstance(command, cmd.Hangup) and command.leg == "caller":
            handle = self.client.calls.get(session.media_call) if self.client is not None else None
            if handle is None:
                return cmd.refused("gone", "the call has ended", session.state)
            self.notifier.emit(applied)
            with contextlib.suppress(CallEnded, MediaError):
                await handle.hangup()
            return cmd.DONE
        if isinstance(command, cmd.StartRecording | cmd.StopRecording):
            result = await self._recording(session, isinstance(command, cmd.StartRecording))
            if result.ok:
                self.notifier.emit(applied)
            return result
        name = "hangup_agent" if isinstance(command, cmd.Hangup) else command.NAME
        if session.state not in cs.FLOW_COMMANDS.get(name, frozenset()):
            return cmd.refused("state", f"{command.NAME} is not possible while the call is {session.state}",
                               session.state)
        inbox = self.tracker.inbox(session.interaction)
        if inbox is None:
            return cmd.refused("gone", "the call has ended", session.state)
        result = await inbox.submit(command, self.timeout)
        if result.ok:
            self.notifier.emit(applied)
        return result

    async def _recording(self, session: cs.CallSession, start: bool) -> cmd.Result:
        """Start or stop recording the caller and whoever is bridged with them, to one WAV file."""
        if session.state not in cs.RECORDABLE:
            return cmd.refused("state", f"the call cannot be recorded while {session.state}", session.state)
        if start == bool(session.recording):
            return cmd.refused("state", "the call is being recorded already" if start else "the call is not being "
                               "recorded", session.state)
        handle = self.client.calls.get(session.media_call) if self.client is not None else None
        if handle is None:
            return cmd.refused("gone", "the call has ended", session.state)
        if start:
            path = self.recordings / f"{session.interaction}-{int(time.time())}.wav"
            await asyncio.to_thread(self.recordings.mkdir, parents=True, exist_ok=True)
            await handle.record(str(path))
        else:
            path = Path(session.recording)
            await handle.stop_record()
        self.notifier.emit(ev.Recording(interaction=session.interaction, action="start" if start else "stop",
                                        path=str(path)))
        return cmd.DONE

    # ------------------------------------------------------------------ this node's inbox list
    async def run(self, stop: asyncio.Event) -> None:
        """Take the commands other nodes send for this node's calls; each is answered on its own."""
        key = NODE_COMMANDS_KEY.format(node=self.node)
        while not stop.is_set():
            try:
                got = await self.redis.blpop([key], timeout=BLOCK)
            except REDIS_DOWN as exc:
                log.warning("command inbox: %s", exc)
                await asyncio.sleep(1.0)
                continue
            if got is None:
                continue
            task = asyncio.create_task(self._answer(got[1]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _answer(self, raw: bytes | str) -> None:
        try:
            msg = json.loads(raw)
            command = cmd.decode(msg["command"])
        except (ValueError, KeyError, cmd.CommandError) as exc:
            log.error("command inbox: dropped a message that is not a command: %s", exc)
            return
        if time.time() > float(msg.get("until", 0)):
            return  # its sender has stopped waiting: acting now would surprise everyone
        session = self.tracker.live.get(command.interaction)
        result = (await self.apply(session, command, str(msg.get("by", ""))) if session is not None
                  else cmd.refused("gone", f"call {command.interaction} is not live"))
        with contextlib.suppress(*REDIS_DOWN):
            pipe = self.redis.pipeline(transaction=False)
            pipe.rpush(msg["reply"], result.encode())
            pipe.expire(msg["reply"], REPLY_TTL)
            await pipe.execute()


def _args(command: cmd.Command) -> dict[str, Any]:
    return {f.name: getattr(command, f.name) for f in fields(command) if f.name != "interaction"}
