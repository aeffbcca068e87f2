"""A caller connected to an agent: the bridge, the call-control commands the two can be given while
they talk (bus/commands.py: hold, resume, hang up the agent's leg), and the end — who ended it, the
agent's wrap-up, and the queue's handle time for the EWT average (docs/metrics.md)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Protocol

import redis.asyncio as aioredis

from acd.agent_state import InvalidTransition, Params
from acd.agent_store import AgentStore, Conflict
from acd.ewt import update_aht
from acd.models import QueueSettings
from bus import commands as cmd
from bus import events as ev
from bus.keys import AHT_KEY
from media.client import CallEnded, CallHandle, MediaError, first_ended


class Record(Protocol):
    """The interaction a call belongs to: its events go to the notifier (callcenter/ keeps the
    record, derived from them), and its commands wait in its inbox (None: it takes none)."""

    interaction: str
    inbox: cmd.Inbox | None

    def emit(self, event: ev.Event) -> None: ...


class HoldPrompts(Protocol):
    def path(self, name: str) -> str: ...


async def converse(agents: AgentStore, redis: aioredis.Redis, record: Record, queue: str, settings: QueueSettings,
                   customer: CallHandle, agent_leg: CallHandle, agent_id: int, wait: float, agent_call_id: str,
                   prompts: HoldPrompts | None = None) -> None:
    """Bridge the customer with the connected agent until one hangs up, acting on the commands that
    come meanwhile. ``agent_call_id``: the call the agent's state names (the expected call for its
    transitions). ``prompts``: where the queue's hold music is (no hold without it)."""
    started = time.time()
    with contextlib.suppress(CallEnded, MediaError):
        await customer.bridge(agent_leg)
    await _talk(record.inbox, customer, agent_leg, prompts.path(settings.hold_prompt) if prompts else "")
    talk = time.time() - started
    agent_first = agent_leg.ended.is_set() and not customer.ended.is_set()
    complete = ev.CompleteAgent if agent_first else ev.CompleteCaller
    record.emit(complete(interaction=record.interaction, queue=queue, agent_id=agent_id, wait=round(wait, 3),
                         talk=round(talk, 3)))
    await agent_leg.hangup()
    await customer.hangup()
    with contextlib.suppress(InvalidTransition, Conflict):
        await agents.transition(agent_id, "end_call", Params(wrap_up=settings.wrap_up), expect_call=agent_call_id)
    await redis.hset(AHT_KEY, queue, repr(update_aht(await aht(redis, queue), talk + settings.wrap_up)))


async def _talk(inbox: cmd.Inbox | None, customer: CallHandle, agent: CallHandle, hold_music: str) -> None:
    """Until either leg ends; every command taken from the inbox meanwhile gets its answer."""
    ended = asyncio.create_task(first_ended(customer, agent))
    held = False
    try:
        while inbox is not None:
            nxt = asyncio.create_task(inbox.next())
            await asyncio.wait({ended, nxt}, return_when=asyncio.FIRST_COMPLETED)
            if not nxt.done():
                nxt.cancel()
                break
            command, answer = nxt.result()
            if ended.done():
                if not answer.done():
                    answer.set_result(cmd.refused("gone", "the call has ended"))
                break
            try:
                result, held = await _control(command, held, customer, agent, hold_music)
            except (CallEnded, MediaError) as exc:
                result = cmd.refused("gone", f"the call ended while acting on {command.NAME}: {exc}")
            if not answer.done():
                answer.set_result(result)
        await ended
    finally:
        ended.cancel()


async def _control(command: cmd.Command, held: bool, customer: CallHandle, agent: CallHandle,
                   hold_music: str) -> tuple[cmd.Result, bool]:
    """Apply one command to the two legs; returns its answer and whether the caller is now held."""
    state = "held" if held else "connected"
    if isinstance(command, cmd.Hold):
        if held:
            return cmd.refused("state", "the caller is already on hold", state), held
        if not hold_music:
            return cmd.refused("state", "this call has no hold music", state), held
        await customer.unbridge(agent)  # the agent hears silence
        await customer.start_play(hold_music, loop=True)
        return cmd.DONE, True
    if isinstance(command, cmd.Resume):
        if not held:
            return cmd.refused("state", "the caller is not on hold", state), held
        await customer.stop_play()
        await customer.bridge(agent)
        return cmd.DONE, False
    if isinstance(command, cmd.Hangup) and command.leg == "agent":
        await agent.hangup()
        return cmd.DONE, held
    return cmd.refused("state", f"{command.NAME} is not possible while the call is {state}", state), held


async def aht(redis: aioredis.Redis, queue: str) -> float | None:
    """The queue's average handle time (docs/metrics.md), None before its first completed call."""
    raw = await redis.hget(AHT_KEY, queue)
    return float(raw) if raw is not None else None
